"""`retriever beir`: the leaderboard grid."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click
from click.core import ParameterSource

from retriever.cli.main import AT_LEAST_1, NONNEG, main

LEADERBOARD_METRICS = ("ndcg@10", "recall@100")


def _command_line(ctx: click.Context) -> str:
    """This ``retriever beir`` invocation as one shell line: the options given on the command line."""
    argv = ["retriever", ctx.info_name or "beir"]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or \
                ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        flag = max(param.opts, key=len)
        value = ctx.params[param.name]
        if param.is_flag:
            argv += [flag] if value else []
        else:
            argv += [flag, str(value)]
    return shlex.join(argv)


@main.command()
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory holding BEIR datasets (one subdirectory each); datasets not found there are "
                   "read as names (beir/scifact, ...; `retriever datasets list`).")
@click.option("--datasets", required=True,
              help="Comma-separated: subdirectories of --root, or dataset names such as beir/scifact.")
@click.option("--config", "config_file", required=True, type=click.Path(exists=True, path_type=Path),
              help="runs.yaml: {name: {index options, e.g. kind: bm25, fields: flat}}.")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True)
@click.option("-k", "--depth", type=AT_LEAST_1, default=1000, show_default=True)
@click.option("--reference", type=click.Path(exists=True, path_type=Path),
              help="Published numbers {config: {dataset: {metric: value}}} to compare with.")
@click.option("--tolerance", type=NONNEG, default=0.005, show_default=True)
@click.option("--no-plots", is_flag=True, help="No PNG plots (and none inlined in leaderboard.html).")
@click.option("--model-cards", is_flag=True,
              help="Record each cell's metrics in the README.md of the trained models its configuration names.")
@click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS|local",
              help="Build sharded configurations (shards: N) on this Ray cluster and search them on its actors.")
@click.option("--replicas", type=AT_LEAST_1, default=1, show_default=True, help="--ray: actors per shard group.")
@click.pass_context
def beir(ctx, root, datasets, config_file, out, split, depth, reference, tolerance, no_plots, model_cards,
         ray_address, replicas):
    """Run every configuration over every dataset; write the leaderboard into OUT.

    OUT gets leaderboard.md / .csv / .json, leaderboard.html (one self-contained page: sortable
    table, reference deltas, plots inlined, and the retriever index / eval commands that
    reproduce every cell), bars_<metric>.png and tradeoff.png, TREC runs (runs/), per-cell
    results (cells/) and the cached indexes (indexes/).
    """
    from eval.leaderboard import load_reference, plot_leaderboard, write_leaderboard
    from eval.leaderboard_html import write_leaderboard_html
    from retriever.beir_grid import load_config, reproduce_commands, run_grid

    configs = load_config(config_file)
    ref = load_reference(reference) if reference else None
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    if not names:
        raise click.BadParameter(f"no dataset named in {datasets!r}", param_hint="--datasets")
    from indexing.manifest import WriterLock

    out.mkdir(parents=True, exist_ok=True)
    lock = WriterLock(out.absolute(), what="leaderboard directory")  # a second grid into OUT fails at once
    try:
        start = time.perf_counter()
        cells = run_grid(root, names, configs, out, split=split, k=depth, model_cards=model_cards, ray=ray_address,
                         replicas=replicas)
        write_leaderboard(cells, out, metrics=LEADERBOARD_METRICS, reference=ref, tolerance=tolerance)
        images = []
        if not no_plots:
            try:
                images = plot_leaderboard(cells, out)
            except ImportError as e:
                click.echo(f"note: {e}", err=True)
        write_leaderboard_html(cells, out, metrics=LEADERBOARD_METRICS, reference=ref, tolerance=tolerance,
                               commands=reproduce_commands(root, names, configs, out, split, depth,
                                                           LEADERBOARD_METRICS),
                               command=_command_line(ctx), images=images)
    finally:
        lock.release()
    click.echo((out / "leaderboard.md").read_text(encoding="utf-8"))
    reused = sum(c["cached"] for c in cells)
    click.echo(f"{len(cells)} cells ({reused} reused) in {time.perf_counter() - start:.1f}s; "
               f"outputs in {out}")
    bad = [c for c in cells if c["status"] != "ok"]
    if bad:
        raise click.ClickException(f"{len(bad)} of {len(cells)} cells did not run: " + "; ".join(
            f"{c['dataset']}/{c['config']} {c['status']}" for c in bad[:5]) + ("; ..." if len(bad) > 5 else "")
            + f" (the table in {out} shows the rest)")
