"""`retriever hybrid`, `tune-fusion` and `fuse`: fusion of two indexes or of runs."""

from __future__ import annotations

from pathlib import Path

import click

from eval.fusion import MAX_RRF_K, MAX_WEIGHT, Method, check_weights
from retriever.cli.main import AT_LEAST_1, DATASET, FRACTION, _floats, _output_file, _split_guard, main

METHODS = [m.value for m in Method]
RRF_K = click.IntRange(0, MAX_RRF_K)


def _weights(ctx, param, value):
    """--weights: finite numbers from 0 to MAX_WEIGHT, not all 0 (``check_weights``; a usage error otherwise)."""
    if value is None:
        return None
    try:
        return check_weights(_floats(value))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@main.command()
@click.argument("sparse_index", type=click.Path(exists=True, path_type=Path))
@click.argument("dense_index", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(METHODS), default="rrf", show_default=True)
@click.option("--weights", default="1,1", show_default=True, callback=_weights,
              help=f"Sparse weight, dense weight (each from 0 to {MAX_WEIGHT:g}).")
@click.option("--depth", type=AT_LEAST_1, default=1000, show_default=True, help="Hits taken from each component.")
@click.option("--rrf-k", type=RRF_K, default=60, show_default=True)
@click.option("--overwrite", is_flag=True)
def hybrid(sparse_index, dense_index, out, method, weights, depth, rrf_k, overwrite):
    """Compose a hybrid index OUT from two existing indexes over the same corpus."""
    from retriever.kinds.hybrid import compose

    compose(sparse_index, dense_index, out, method=method, weights=weights, depth=depth,
            rrf_k=rrf_k, overwrite=overwrite)
    click.echo(f"hybrid index {out}: {sparse_index} + {dense_index}, {method} {','.join(f'{w:g}' for w in weights)}")


@main.command("tune-fusion")
@click.argument("index_dir", metavar="INDEX", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, type=DATASET, help="BEIR directory or dataset name.")
@click.option("--split", default="dev", show_default=True,
              help="Tuning split; with --dev-fraction, the part of it carved out as dev. Never test.")
@click.option("--dev-fraction", type=FRACTION, default=None,
              help="Carve this fraction of --split's queries as dev (e.g. --split train --dev-fraction 0.2).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the dev carve.")
@click.option("--metric", default="ndcg@10", show_default=True)
@click.option("--dry-run", is_flag=True, help="Report the best setting without storing it.")
def tune_fusion(index_dir, dataset, split, dev_fraction, seed, metric, dry_run):
    """Search fusion method and weights on a dev split; store the best in the manifest."""
    from eval.beir import BeirDataset, carve_dev, check_qrels
    from eval.metrics import parse_metric
    from retriever.api import Retriever
    from retriever.kinds.hybrid import store_fusion, tune

    _split_guard(split, "tuning on the test split would make its numbers meaningless; "
                        "use a dev split (or --split train --dev-fraction 0.2)")
    metric = parse_metric(metric).name
    ds = BeirDataset(dataset)
    qrels = ds.qrels(split)
    if dev_fraction:
        _, qrels = carve_dev(qrels, dev_fraction, seed)
    queries = {q: t for q, t in ds.queries().items() if q in qrels}
    r = Retriever.load(index_dir)
    if r.kind != "hybrid":
        raise click.UsageError(f"{index_dir} is a {r.kind} index; tune-fusion needs a hybrid index")
    where = f"{split}{f', dev fraction {dev_fraction}' if dev_fraction else ''}"
    report = check_qrels(qrels, ds.queries(), r.docids)
    if str(report):
        click.echo(f"note: {report}", err=True)
    if not queries:
        raise click.ClickException(f"no tuning queries: none of the {len(qrels)} qrels queries of {where} "
                                   f"is in {ds.queries_path}; nothing stored")
    results = tune(r.searcher, qrels, queries, metric)
    click.echo(f"{len(queries)} tuning queries ({where})")
    click.echo(f"| method | weights | rrf_k | {metric} |\n|---|---|--:|--:|")
    for setting, value in results[:8]:
        click.echo(f"| {setting.method} | {','.join(f'{w:g}' for w in setting.weights)} | {setting.rrf_k} | {value:.4f} |")
    best, value = results[0]
    if value <= 0 and not dry_run:  # nothing to choose from: the first grid setting would be stored
        raise click.ClickException(f"every setting scores 0 {metric} on the {len(queries)} tuning queries "
                                   f"({where}); nothing stored")
    if not dry_run:
        store_fusion(index_dir, best, {"split": split, "dev_fraction": dev_fraction, "seed": seed,
                                       "metric": metric, "value": value, "queries": len(queries)},
                     tuned_on=r.manifest)
        click.echo(f"stored {best.method} {best.weights} in {index_dir}/manifest.json")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--method", type=click.Choice(METHODS), default="rrf", show_default=True)
@click.option("--weights", default=None, callback=_weights,
              help=f"One weight per run (default all 1; each from 0 to {MAX_WEIGHT:g}, not all 0).")
@click.option("--depth", type=AT_LEAST_1, default=1000, show_default=True, help="Hits taken from each run.")
@click.option("--rrf-k", type=RRF_K, default=60, show_default=True)
@click.option("-k", type=AT_LEAST_1, default=1000, show_default=True, help="Hits per query in the output.")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--tag", default="fused", show_default=True)
def fuse(runs, method, weights, depth, rrf_k, k, out, tag):
    """Fuse TREC run files into one."""
    from eval.fusion import fuse as fuse_runs
    from eval.trec import read_run, write_run

    _output_file(out, "--out")
    fused = fuse_runs([read_run(p) for p in runs], method, weights, depth, rrf_k, k)
    write_run(fused, out, tag=tag)
    click.echo(f"fused {len(runs)} runs ({method}) over {len(fused)} queries into {out}")
