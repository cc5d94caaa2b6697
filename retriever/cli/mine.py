"""`retriever mine`: hard negatives from any index, teacher-filtered by a model, an index, or an
ensemble of them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from retriever.cli.main import AT_LEAST_0, AT_LEAST_1, DATASET, FINITE, _floats, _output_file, _split_guard, main


def _weights(ctx, param, value):
    return None if value is None else _floats(value)


@main.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, type=DATASET, help="BEIR directory or dataset name.")
@click.option("--split", default="train", show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="negatives.jsonl to write.")
@click.option("--depth", type=AT_LEAST_1, default=200, show_default=True, help="Candidates retrieved per query.")
@click.option("--skip-top", type=AT_LEAST_0, default=0, show_default=True, help="Skip the N best non-positive candidates.")
@click.option("--max-negatives", type=AT_LEAST_1, default=32, show_default=True)
@click.option("--teacher", "teachers", multiple=True,
              help="Scores query, positives and candidates: a dense model (directory, pulled pack name, hub "
                   "id) or an index directory (bm25, sparse, dense, hybrid, sharded). Repeat for an ensemble.")
@click.option("--teacher-weights", callback=_weights, default=None,
              help="Comma-separated weight per --teacher, finite and >= 0 (default: equal).")
@click.option("--teacher-norm", type=click.Choice(["zscore", "minmax", "none"]), default=None,
              help="Per-query normalisation of each teacher's scores before they are combined "
                   "(default zscore; a single teacher without it or weights keeps its raw scores).")
@click.option("--margin", type=FINITE, default=0.95, show_default=True,
              help="Drop a candidate whose teacher score exceeds margin x the positive's "
                   "(an ensemble's scores measured from the query's lowest).")
@click.option("--min-relevance", type=AT_LEAST_1, default=1, show_default=True,
              help="Graded qrels: the lowest grade that is a positive; documents judged relevant below it "
                   "are neither positives nor negatives.")
@click.option("--device", default="auto", show_default=True, help="Teacher device.")
def mine(index_dir, dataset, split, out, depth, skip_top, max_negatives, teachers, teacher_weights, teacher_norm,
         margin, min_relevance, device):
    """Mine hard negatives for a split's queries from any index."""
    from eval.beir import BeirDataset, check_qrels
    from retriever.api import Retriever
    from training.mining import mine as mine_negatives
    from training.mining import write_negatives
    from training.teachers import check_mix

    _split_guard(split, "mining negatives from the test split would leak it into training")
    _output_file(out, "--out")
    mixing = teacher_weights is not None or teacher_norm is not None
    if mixing and not teachers:
        raise click.UsageError("--teacher-weights and --teacher-norm weigh teachers; give them with --teacher")
    if teachers:
        try:
            check_mix(len(teachers), teacher_weights, teacher_norm or "zscore")
        except ValueError as e:
            raise click.UsageError(str(e)) from None
    specs = [_teacher_spec(t) for t in teachers]
    ds = BeirDataset(dataset)
    qrels = ds.qrels(split)
    queries = ds.split_queries(split)
    r = Retriever.load(index_dir)
    docids = set(r.docids)
    report = check_qrels(qrels, ds.queries(), docids)
    if str(report):  # queries without a text are skipped; positives outside the corpus cannot be trained on
        click.echo(f"note: {report}", err=True)
    qrels = {q: judged for q, judged in qrels.items() if q in queries}
    if not any(rel >= min_relevance and d in docids for judged in qrels.values() for d, rel in judged.items()):
        raise click.ClickException(
            f"nothing to mine: no query of split {split!r} in {ds.queries_path} has a positive "
            f"(grade >= {min_relevance}) in the index's documents")
    scorers = [_open_teacher(kind, where, device) for kind, where in specs]
    teacher = None
    if len(scorers) == 1 and not mixing:
        teacher = scorers[0]  # as it always was: the one teacher's raw scores
    elif scorers:
        from training.teachers import Ensemble

        teacher = Ensemble(scorers, teacher_weights, teacher_norm or "zscore")
        click.echo(f"teacher: {teacher.name}", err=True)
    run = r.search_batch(queries, k=depth)
    records, report = mine_negatives(run, qrels, skip_top=skip_top, max_negatives=max_negatives,
                                     teacher=teacher, margin=margin, queries=queries,
                                     corpus=ds.corpus_path, min_relevance=min_relevance)
    write_negatives(records, out)
    click.echo(f"{report}; wrote {out}")
    if report.examples_too_few:
        click.echo(f"e.g. queries with too few negatives: {', '.join(report.examples_too_few)}", err=True)


def _teacher_spec(spec: str) -> tuple[str, str]:
    """("index", directory) or ("model", name) for a --teacher value; a usage error when it is
    neither (checked before anything is loaded)."""
    from retriever.encoders.models import resolve_model

    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return "index", str(path)
        if (path / "config.json").is_file():
            return "model", spec
        raise click.UsageError(f"--teacher {spec}: neither an index (no manifest.json) nor a model "
                               "directory (no config.json)")
    if path.exists():
        raise click.UsageError(f"--teacher {spec}: a file; give a model or an index directory")
    try:
        resolve_model(spec)
    except ValueError as e:
        raise click.UsageError(f"--teacher {spec}: no such index or model ({e})") from None
    return "model", spec


def _open_teacher(kind: str, where: str, device: str):
    """The scorer of one teacher: a model's encoder; a dense index's encoder (its documents
    re-encoded: the model's score, not the FAISS approximation); a hybrid's fusion of its
    components; any other index's own exact search, deepened until it holds the candidates."""
    from training import teachers

    if kind == "model":
        from retriever.encoders.dense import DenseEncoder

        return DenseEncoder(where, device=device)
    from indexing.manifest import read_manifest, safe_join

    root = Path(where)
    manifest = read_manifest(root, verify=False)
    info = {"kind": "index", "index": str(root), "index_kind": manifest["kind"], "backend": manifest["backend"],
            "fingerprint": hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()}
    if manifest["kind"] == "dense":
        from retriever.kinds import dense

        enc_root, enc_manifest = root, manifest
        if manifest["backend"] == "sharded":  # every shard has the encoder of shard 0
            enc_root = safe_join(root, manifest["shards"][0]["path"], "shard 0")
            enc_manifest = read_manifest(enc_root, verify=False)
        encoder = dense.query_encoder(enc_root, enc_manifest, device=device)
        return teachers.EncoderTeacher(encoder, name=str(root), info=info)
    from retriever.api import Retriever

    if manifest["kind"] == "hybrid":
        r = Retriever.load(root, device=device)
        return teachers.HybridTeacher(r.searcher, name=str(root), info=info)
    return teachers.SearchTeacher(Retriever.load(root), name=str(root), info=info)
