"""The ASGI app: routes over the served indexes, request validation, errors as one JSON line.

``create_app(paths, ...)`` checks its settings at once and returns the app; the indexes load in
the app's lifespan. Endpoints (bodies are JSON in the Python API's shapes):

- ``GET /search?q=&k=10&index=&explain=false`` -> ``[{"docid", "score"}]`` best first
  (``explain=true``, hybrid indexes: each hit's ``parts``, as ``Retriever.search(explain=True)``);
- ``POST /search`` ``{"queries": {qid: text}, "k": 10, "index": null}`` -> ``{qid: {docid: score}}``;
- ``GET /doc/{docid}?index=`` -> ``{"docid", "title", "text"}``;
- ``GET /indexes`` -> manifest summaries; ``GET /health``; ``POST /reload?index=``;
- ``GET /`` -> the HTML search page.

Search responses carry ``X-Index-Generation``: the generation of the index that answered.

Errors are ``{"detail": "one line"}``: 422 for invalid input (k not an integer >= 1, a query
that is not a string, an empty batch, unknown parameters, explain on a non-hybrid index), 413
for a batch over ``max_queries``, 404 for an unknown index or doc id, 503 for a reload that
could not load the index on disk, and 500 for anything unexpected (its traceback is logged by
the server, never sent).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from eval.leaderboard_html import csp_hash
from indexing.errors import DataError
from indexing.manifest import IndexBusyError, IndexFormatError
from indexing.searcher import check_k
from retriever.service.page import PAGE
from retriever.service.schemas import (
    BatchSearch,
    DocQuery,
    IndexChoice,
    ReloadChoice,
    SearchQuery,
)
from retriever.service.served import (
    DEFAULT_BATCH_KINDS,
    Indexes,
    Loaded,
    ReloadError,
    UnknownIndex,
    check_names,
    one_line,
)

log = logging.getLogger("retriever.service")

# errors a user causes at load time (as the CLI reports them): one line, not a traceback
_LOAD_ERRORS = (DataError, IndexFormatError, IndexBusyError, OSError, ValueError, ImportError)
# the page's one script allowed by its hash, no other inline script or handler (the page sets text
# only, never markup; this keeps it so if that ever changes)
_PAGE_SCRIPT = PAGE[PAGE.index("<script>") + len("<script>"):PAGE.index("</script>")]
_PAGE_HEADERS = {"Content-Security-Policy": f"default-src 'self'; script-src {csp_hash(_PAGE_SCRIPT)}; "
                                            "style-src 'self' 'unsafe-inline'; img-src 'self' data:"}


def create_app(paths: Sequence[str | os.PathLike], *, window_ms: float = 2.0, max_batch: int = 32,
               max_queries: int = 1000, threads: int = 4, batch_kinds: Collection[str] = DEFAULT_BATCH_KINDS,
               verify: bool = True, max_body_bytes: int | None = None) -> FastAPI:
    """The service over the indexes at ``paths`` (served by directory name; the first is the default).

    ``window_ms``: how long a query of a micro-batched index waits for others (0 batches only
    what is already waiting); ``max_batch``: most queries in one batch; ``max_queries``: most
    queries in one ``POST /search``; ``threads``: the shared pool for straight searches, document
    reads and loads; ``batch_kinds``: the index kinds that are micro-batched; ``verify``: check
    every file's checksum at load; ``max_body_bytes``: the largest request body read (default
    16 KB a query of ``max_queries``, at least 1 MB; a larger one is a 413 before any of it is
    parsed: a 65 MB body otherwise held the event loop for seconds and took ~1 GB to parse). ValueError
    for a bad setting or two indexes of one name.
    """
    paths = [Path(p) for p in paths]
    check_names(paths)
    max_batch = check_k(max_batch, what="max_batch")
    max_queries = check_k(max_queries, what="max_queries")
    threads = check_k(threads, what="threads")
    max_body_bytes = check_k(max(1 << 20, max_queries * (16 << 10)) if max_body_bytes is None else max_body_bytes,
                             what="max_body_bytes")
    if not (isinstance(window_ms, (int, float)) and math.isfinite(window_ms) and 0 <= window_ms <= 1000):
        raise ValueError(f"window_ms must be a number of milliseconds in [0, 1000], got {window_ms!r}")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = ThreadPoolExecutor(threads, thread_name_prefix="retriever-search")
        try:
            try:
                indexes = await Indexes.open(paths, pool, batch_kinds=batch_kinds, window=window_ms / 1000,
                                             max_batch=max_batch, verify=verify)
            except _LOAD_ERRORS as e:
                app.state.startup_error = f"cannot serve the indexes: {one_line(e)}"
                raise
            app.state.indexes = indexes
            try:
                yield
            finally:
                await indexes.close()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="retriever", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.startup_error = None
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    app.add_middleware(_OneLineErrors, state=app.state)
    _add_error_handlers(app)
    _add_routes(app, max_queries)
    return app


def served_indexes(request: Request) -> Indexes:
    """The dependency that hands a route the indexes loaded in the lifespan."""
    return request.app.state.indexes


ServedIndexes = Annotated[Indexes, Depends(served_indexes)]


def _json(body, loaded: Loaded) -> JSONResponse:
    return JSONResponse(body, headers={"X-Index-Generation": str(loaded.generation)})


def _add_routes(app: FastAPI, max_queries: int) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers=_PAGE_HEADERS)

    @app.get("/health")
    async def health(indexes: ServedIndexes) -> dict:
        return {"status": "ok", "indexes": indexes.names}

    @app.get("/indexes")
    async def list_indexes(indexes: ServedIndexes) -> list[dict]:
        return [s.summary() for s in indexes]

    @app.get("/search")
    async def search(params: Annotated[SearchQuery, Query()], indexes: ServedIndexes) -> JSONResponse:
        served = indexes.get(params.index)
        loaded = served.current
        r = loaded.retriever
        if params.explain:
            if r.kind != "hybrid":
                raise ValueError(f"explain=true needs a hybrid index; {served.name} is a {r.kind} index")
            hits = await served.run(loaded, r.search, params.q, params.k, explain=True)
            return _json([{"docid": h.docid, "score": h.score, "parts": h.parts} for h in hits], loaded)
        ranked = await served.search(loaded, params.q, params.k)
        return _json([{"docid": d, "score": s} for d, s in ranked.items()], loaded)

    @app.post("/search")
    async def search_batch(body: BatchSearch, indexes: ServedIndexes) -> JSONResponse:
        if len(body.queries) > max_queries:
            raise HTTPException(413, f"{len(body.queries)} queries in one request; this server takes "
                                     f"at most {max_queries}")
        served = indexes.get(body.index)
        loaded = served.current
        return _json(await served.run(loaded, loaded.retriever.search_batch, body.queries, body.k), loaded)

    @app.get("/doc")
    async def doc_by_query(params: Annotated[DocQuery, Query()], indexes: ServedIndexes) -> JSONResponse:
        return await doc(params.docid, IndexChoice(index=params.index), indexes)

    @app.get("/doc/{docid:path}")
    async def doc(docid: str, params: Annotated[IndexChoice, Query()], indexes: ServedIndexes) -> JSONResponse:
        served = indexes.get(params.index)
        loaded = served.current
        try:
            stored = await served.read_doc(loaded, docid)
        except KeyError:
            raise HTTPException(404, f"no document {docid!r} in index {served.name}") from None
        if stored is None:
            raise HTTPException(404, f"index {served.name} stores no document text (built with --no-store-docs)")
        return _json({"docid": docid, "title": stored.get("title", ""), "text": stored.get("text", "")}, loaded)

    @app.post("/reload")
    async def reload(params: Annotated[ReloadChoice, Query()], indexes: ServedIndexes) -> dict:
        targets = [indexes.get(params.index)] if params.index is not None else list(indexes)
        for served in targets:
            await served.reload()
        return {"reloaded": [s.summary() for s in targets]}


def _add_error_handlers(app: FastAPI) -> None:
    def detail(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return detail(422, validation_message(e.errors()))

    @app.exception_handler(UnknownIndex)
    async def unknown_index(request: Request, e: UnknownIndex) -> JSONResponse:
        return detail(404, one_line(e))

    @app.exception_handler(ReloadError)
    async def reload_failed(request: Request, e: ReloadError) -> JSONResponse:
        log.warning("%s", e)
        return detail(503, one_line(e))

    @app.exception_handler(ValueError)
    async def refused(request: Request, e: ValueError) -> JSONResponse:
        return detail(422, one_line(e))  # the library's word for input it refuses


def validation_message(errors: Sequence[dict]) -> str:
    """Pydantic's errors as one line: ``k: must be >= 1, got 0; q: field required``."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            why = (err.get("ctx") or {}).get("error")
            parts.append("the body is not valid JSON" + (f" ({why})" if why else ""))
            continue
        loc = [str(x) for x in err.get("loc", ())]
        where = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else "request")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if not msg[1:2].isupper():  # keep "JSON", lower "Field required"
            msg = msg[:1].lower() + msg[1:]
        parts.append(msg if msg.startswith(f"{where} ") else f"{where}: {msg}")
    return " ".join("; ".join(parts).split())


class _BodyLimit:
    """Pure ASGI middleware: a request body over ``limit`` bytes is a 413, refused by its
    Content-Length before anything is read, or (chunked) as soon as what arrived passes it."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _message(self, size: int | None = None) -> str:
        told = "" if size is None else f" ({size} bytes)"
        return f"request body too large{told}; this server reads at most {self.limit} bytes"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": self._message(int(declared))}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # (the route's body read answers it: a 413)
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)


class _OneLineErrors:
    """Pure ASGI middleware. An unexpected error in a request becomes a JSON 500 with one line
    (the traceback goes to the server's log, never to the client); a startup that failed for a
    reason the user caused is reported by its one line (``state.startup_error``), not a traceback."""

    def __init__(self, app, state) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            async def send_one_line(message) -> None:
                if message["type"] == "lifespan.startup.failed" and self.state.startup_error:
                    message = {**message, "message": self.state.startup_error}
                await send(message)

            await self.app(scope, receive, send_one_line)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:  # the response is already on its way: nothing better to send
                raise
            body = {"detail": f"internal error ({type(e).__name__}); the server's log has the details"}
            await JSONResponse(body, status_code=500)(scope, receive, send)
