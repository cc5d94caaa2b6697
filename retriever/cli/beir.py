"""`retriever beir`: the leaderboard grid."""

from __future__ import annotations

import time
from pathlib import Path

import click

from retriever.cli.main import AT_LEAST_1, NONNEG, main


@main.command()
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory holding BEIR datasets (one subdirectory each).")
@click.option("--datasets", required=True, help="Comma-separated dataset names under --root.")
@click.option("--config", "config_file", required=True, type=click.Path(exists=True, path_type=Path),
              help="runs.yaml: {name: {index options, e.g. kind: bm25, fields: flat}}.")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True)
@click.option("-k", "--depth", type=AT_LEAST_1, default=1000, show_default=True)
@click.option("--reference", type=click.Path(exists=True, path_type=Path),
              help="Published numbers {config: {dataset: {metric: value}}} to compare with.")
@click.option("--tolerance", type=NONNEG, default=0.005, show_default=True)
@click.option("--no-plots", is_flag=True)
def beir(root, datasets, config_file, out, split, depth, reference, tolerance, no_plots):
    """Run every configuration over every dataset: leaderboard tables, runs and plots in OUT."""
    from eval.leaderboard import load_reference, plot_leaderboard, write_leaderboard
    from retriever.beir_grid import load_config, run_grid

    configs = load_config(config_file)
    ref = load_reference(reference) if reference else None
    start = time.perf_counter()
    cells = run_grid(root, [d.strip() for d in datasets.split(",") if d.strip()], configs, out,
                     split=split, k=depth)
    write_leaderboard(cells, out, reference=ref, tolerance=tolerance)
    if not no_plots:
        try:
            plot_leaderboard(cells, out)
        except ImportError as e:
            click.echo(f"note: {e}", err=True)
    click.echo((out / "leaderboard.md").read_text(encoding="utf-8"))
    reused = sum(c["cached"] for c in cells)
    click.echo(f"{len(cells)} cells ({reused} reused) in {time.perf_counter() - start:.1f}s; "
               f"outputs in {out}")
    bad = [c for c in cells if c["status"] != "ok"]
    if bad:
        raise click.ClickException(f"{len(bad)} of {len(cells)} cells did not run: " + "; ".join(
            f"{c['dataset']}/{c['config']} {c['status']}" for c in bad[:5]) + ("; ..." if len(bad) > 5 else "")
            + f" (the table in {out} shows the rest)")
