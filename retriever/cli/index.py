"""`retriever index`: a corpus into an index directory."""

from __future__ import annotations

import time
from pathlib import Path

import click

from indexing.io import dir_size
from retriever.cli.main import (AT_LEAST_0, AT_LEAST_1, KIND_NAMES, NONNEG, POSITIVE, _Finite,
                                _floats, main)


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
               f"{dir_size(r.path) / 1e6:.1f} MB")
