"""`retriever serve`: the search service (``retriever.service``) over HTTP with uvicorn.

fastapi and uvicorn are the pip extra ``serve``; they are imported when the command runs, and
their absence is one line naming the extra.
"""

from __future__ import annotations

import copy
from pathlib import Path

import click

from retriever.cli.main import AT_LEAST_1, KIND_NAMES, _Finite, main

EXTRA = "pip install 'retriever[serve]'"


@main.command()
@click.argument("index_dirs", metavar="INDEX...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--batch-window-ms", type=_Finite(0.0, 1000.0), default=2.0, show_default=True,
              help="Micro-batched indexes: how long a query that finds the batcher idle waits for "
                   "others to join its batch.")
@click.option("--max-batch", type=AT_LEAST_1, default=32, show_default=True,
              help="Most queries in one micro-batch (1: no batching).")
@click.option("--max-queries", type=AT_LEAST_1, default=1000, show_default=True,
              help="Most queries in one POST /search.")
@click.option("--threads", type=AT_LEAST_1, default=4, show_default=True,
              help="Worker threads for straight (BM25) searches, document reads and reloads.")
@click.option("--batch-kinds", default="dense,sparse,hybrid", show_default=True,
              help="Index kinds whose queries are micro-batched (comma-separated; empty: none).")
@click.option("--no-verify", is_flag=True, help="Skip the checksum of every file at load (faster start).")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log every request.")
def serve(index_dirs, host, port, batch_window_ms, max_batch, max_queries, threads, batch_kinds,
          no_verify, access_log):
    """Serve INDEX... over HTTP: /search, /doc, /indexes, /reload, /health and a page at /.

    Each index is named by its directory name (the first is the default); `POST /reload`
    reopens an index rebuilt on disk (`retriever index ... --overwrite`) without dropping requests.
    """
    try:
        import uvicorn
        from uvicorn.config import LOGGING_CONFIG

        from retriever.service import create_app
    except ImportError as e:
        raise click.ClickException(f"retriever serve needs fastapi and uvicorn ({e.name or e} is missing): "
                                   f"{EXTRA}") from None
    from indexing.manifest import read_manifest

    for path in index_dirs:  # a typo is one line now, not a failed startup later
        read_manifest(path, verify=False)
    kinds = [k.strip() for k in batch_kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KIND_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown index kind {', '.join(unknown)}; kinds: {', '.join(KIND_NAMES)}",
                                 param_hint="--batch-kinds")
    app = create_app(index_dirs, window_ms=batch_window_ms, max_batch=max_batch, max_queries=max_queries,
                     threads=threads, batch_kinds=kinds, verify=not no_verify)
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["retriever.service"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=log_config,
                                           access_log=access_log, lifespan="on"))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then passed the Ctrl-C on
        return
    except SystemExit as e:  # a failed startup (uvicorn exits 3), or a port it could not bind
        raise SystemExit(1 if e.code else 0) from None
    if not server.started:  # uvicorn has logged why: one line for the errors users cause
        raise SystemExit(1)
