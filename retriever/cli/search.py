"""`retriever search` and `retriever eval`."""

from __future__ import annotations

import time
from pathlib import Path

import click

from eval.metrics import DEFAULT_METRICS
from indexing.results import STRATEGIES
from eval.trec import TIES
from retriever.cli.main import AT_LEAST_1, DATASET, _Finite, _output_file, main


def _load_options(given: dict) -> dict:
    """CLI load flags -> Retriever.load options (only those given)."""
    names = {"query_model": "model", "nprobe": "nprobe", "ef_search": "ef_search", "strategy": "strategy",
             "approx": "approx", "heads_depth": "heads_depth", "candidates": "candidates", "ray_address": "ray",
             "replicas": "replicas"}
    if given.get("replicas") is not None and given.get("ray_address") is None:
        raise click.UsageError("--replicas places shard groups on Ray actors; it needs --ray")
    return {names[k]: v for k, v in given.items() if v is not None}


def strategy_options(f):
    """--strategy and its knobs (bm25/sparse indexes)."""
    f = click.option("--candidates", type=AT_LEAST_1, default=None,
                     help="bm25/sparse --strategy heads: documents scored exactly per query (default 256; 768 above "
                          "2M documents).")(f)
    f = click.option("--heads-depth", type=AT_LEAST_1, default=None,
                     help="bm25/sparse --strategy heads: postings read from each query term's head "
                          "(default 1024; 2048 above 2M documents).")(f)
    f = click.option("--approx", type=_Finite(0.0, 1.0, open_low=True), default=None,
                     help="bm25/sparse --strategy approx: stop when approx x bound < k-th score (1 = exact).")(f)
    return click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
                        help="bm25/sparse: pruned (exact block-max, default), exhaustive, approx, or heads "
                             "(candidates from each term's highest impacts, scored exactly; needs "
                             "`retriever heads INDEX`).")(f)


def ray_options(f):
    """--ray and --replicas: search a sharded index on Ray actors."""
    f = click.option("--replicas", type=AT_LEAST_1, default=None,
                     help="--ray: actors serving each shard group (batches go round robin).")(f)
    return click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS|local",
                        help="Sharded index: serve its shard groups from Ray actors (pip extra 'ray'); "
                             "results equal in-process search.")(f)


def _snippet(doc: dict | None, width: int = 90) -> str:
    if not doc:
        return ""
    text = " ".join(f"{doc.get('title', '')} | {doc.get('text', '')}".split())
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(path_type=Path))
@click.argument("query", required=False)
@click.option("-k", type=AT_LEAST_1, default=None, help="Hits per query (default 10, or 1000 with --queries).")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Search every query in a queries.jsonl or qid<TAB>text file.")
@click.option("--run", "run_out", type=click.Path(path_type=Path), help="TREC run file to write.")
@click.option("--threads", type=AT_LEAST_1, default=1, show_default=True)
@click.option("--tag", default="retriever", show_default=True, help="Run tag in the TREC file.")
@click.option("--model", "query_model", default=None,
              help="Query model location, when the index's model has moved (must match it).")
@click.option("--nprobe", type=AT_LEAST_1, default=None, help="dense IVF: lists probed per query.")
@click.option("--ef-search", type=AT_LEAST_1, default=None, help="dense HNSW: candidate list size.")
@strategy_options
@ray_options
@click.option("--explain", is_flag=True, help="hybrid: show each component's score and rank.")
@click.option("--ties", type=click.Choice(TIES), default="anserini", show_default=True,
              help="Scores in --run: anserini (rounded to 1e-4, ties lowered by 1e-6 in float32 as Anserini "
                   "does, so evaluators keep the engine's order; above a score of ~16 float32 cannot always "
                   "tell the steps apart) or trec (raw scores; trec_eval re-sorts ties).")
def search(index_dir, query, k, queries, run_out, threads, tag, explain, ties, **load):
    """Search INDEX for QUERY, or for every query in --queries (writing --run)."""
    from retriever.api import Retriever

    if (query is None) == (queries is None):
        raise click.UsageError("give either a QUERY or --queries FILE")
    if queries is not None and run_out is None:
        raise click.UsageError("--queries needs --run OUT.trec")
    _output_file(run_out, "--run")
    r = Retriever.load(index_dir, **_load_options(load))
    if query is not None:
        hits = r.search(query, k=k or 10, explain=explain)
        if not hits:
            click.echo("no documents match")
        for rank, h in enumerate(hits, 1):
            click.echo(f"{rank:>3}  {h.docid:<16} {h.score:9.4f}  {_snippet(r.doc(h.docid))}")
            if explain:
                parts = "  ".join(f"{name}: " + (f"#{p['rank']} {p['score']:.4f}" if p["rank"] else "-")
                                  for name, p in h.parts.items())
                click.echo(f"     {parts}")
        return
    from eval.beir import load_query_file
    from eval.trec import write_run

    qs = load_query_file(queries)
    start = time.perf_counter()
    run = r.search_batch(qs, k=k or 1000, threads=threads)
    took = time.perf_counter() - start
    write_run(run, run_out, tag=tag, ties=ties)
    click.echo(f"{len(qs)} queries in {took:.2f}s ({len(qs) / max(took, 1e-9):.0f} q/s); wrote {run_out}")


@main.command("eval")
@click.option("--index", "index_dir", type=click.Path(path_type=Path), help="Index to search.")
@click.option("--run", "run_file", type=click.Path(exists=True, path_type=Path),
              help="Existing TREC run to evaluate instead of searching.")
@click.option("--dataset", required=True, type=DATASET,
              help="BEIR dataset directory (corpus.jsonl, queries.jsonl, qrels/).")
@click.option("--split", default="test", show_default=True)
@click.option("--metrics", default=",".join(DEFAULT_METRICS), show_default=True,
              help="Comma-separated: ndcg@k, recall@k, mrr@k, map@k, p@k.")
@click.option("-k", "--depth", type=AT_LEAST_1, default=1000, show_default=True, help="Hits per query.")
@click.option("--threads", type=AT_LEAST_1, default=1, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write metrics as JSON.")
@click.option("--save-run", type=click.Path(path_type=Path), help="Also write the run (TREC).")
@click.option("--model-card", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A model directory from `retriever train`: record these metrics in its README.md.")
@click.option("--ties", type=click.Choice(TIES), default="anserini", show_default=True,
              help="anserini: evaluate (and save) the engine's order, as Pyserini does; trec: raw scores, "
                   "trec_eval breaks ties by doc id descending.")
@click.option("--model", "query_model", default=None,
              help="Query model location, when the index's model has moved (must match it).")
@click.option("--nprobe", type=AT_LEAST_1, default=None, help="dense IVF: lists probed per query.")
@click.option("--ef-search", type=AT_LEAST_1, default=None, help="dense HNSW: candidate list size.")
@strategy_options
@ray_options
def eval_cmd(index_dir, run_file, dataset, split, metrics, depth, threads, json_out, save_run, ties, model_card,
             **load):
    """Evaluate an index (or a run) on a BEIR split: nDCG@10, Recall@100, MRR@10, ..."""
    from eval.beir import BeirDataset, check_qrels
    from eval.metrics import evaluate, parse_metric
    from eval.report import format_table, metrics_json
    from eval.trec import read_run, write_run
    from indexing.io import atomic_write_json

    if (index_dir is None) == (run_file is None):
        raise click.UsageError("give exactly one of --index INDEX or --run RUN")
    _output_file(json_out, "--json")
    _output_file(save_run, "--save-run")
    names = [parse_metric(m).name for m in metrics.split(",") if m.strip()]
    ds = BeirDataset(dataset)
    qrels = ds.qrels(split)
    queries = ds.split_queries(split)
    if index_dir is not None:
        from retriever.api import Retriever

        r = Retriever.load(index_dir, **_load_options(load))
        report = check_qrels(qrels, ds.queries(), r.docids)
        if str(report):
            click.echo(f"note: {report}", err=True)
        start = time.perf_counter()
        run = r.search_batch(queries, k=depth, threads=threads)
        took = time.perf_counter() - start
        click.echo(f"searched {len(queries)} queries in {took:.2f}s "
                   f"({len(queries) / max(took, 1e-9):.0f} q/s)", err=True)
        name = f"{index_dir.name} ({r.kind})"
        if save_run:
            write_run(run, save_run, ties=ties)
    else:
        run = read_run(run_file, ties=ties)
        name = run_file.name
        judged = [q for q, docs in qrels.items() if any(rel > 0 for rel in docs.values())]
        absent = [q for q in judged if not run.get(q)]
        if absent:  # as eval --index notes qrels queries it cannot search: they score 0
            click.echo(f"note: {len(absent)}/{len(judged)} qrels queries with a relevant judgement are not in "
                       f"{run_file} (e.g. {', '.join(absent[:3])}); they score 0", err=True)
    result = evaluate(qrels, run, names, ties=ties)
    click.echo(f"{ds.name} / {split}: {result.num_queries} queries")
    click.echo(format_table([(name, result.metrics)], names))
    if model_card:
        from training.model_card import add_results

        add_results(model_card, ds.name, split, result.metrics, str(index_dir) if index_dir else None)
        click.echo(f"recorded in {model_card / 'README.md'}", err=True)
    if json_out:
        payload = metrics_json(ds.name, split, result.num_queries, result.metrics)
        atomic_write_json(json_out, payload)
