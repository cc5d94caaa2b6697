"""Matryoshka truncation on a BEIR dataset: nDCG@10 of a dense model's vectors cut to D dimensions.

    python scripts/bench_matryoshka.py [--dataset DIR] [--model [NAME=]MODEL ...] [--dims 384,256,128,64]
                                       [--threads 2] [--out docs/bench_matryoshka.json]

Each model encodes the corpus and the queries once, at full size (vectors cached under --cache,
keyed by the model's fingerprint and settings); every D then keeps the first D components of
each vector, re-normalised when the model normalises (exactly what
``retriever index --kind dense --model MODEL --dim D`` stores and what its searcher does to
queries: ``retriever.encoders.dense.truncate``), and searches them exactly (FAISS Flat, ties by
doc id as the dense searcher breaks them). Reported per D: nDCG@10 and Recall@100 on the test
split, nDCG@10 on a dev carve of train (--dev-fraction, seed 0; for choosing a D without
touching test), and the bytes per vector of a Flat index. Results are merged into --out by model
name, so models measured in separate runs share one file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset, carve_dev  # noqa: E402
from eval.metrics import evaluate  # noqa: E402
from indexing.corpus import doc_text, iter_corpus  # noqa: E402
from indexing.faiss_index import DenseIndex  # noqa: E402
from indexing.manifest import docid_order  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "beir" / "scifact"


def truncated(vectors: np.ndarray, dim: int, normalize: bool) -> np.ndarray:
    """The encoder's ``truncate`` on numpy rows (through torch, so the arithmetic is the same)."""
    import torch

    from retriever.encoders.dense import truncate

    return truncate(torch.from_numpy(vectors), dim, normalize).numpy()


def encode(model: str, dataset: Path, cache: Path, batch_size: int) -> dict:
    """Full-size document and query vectors of ``model`` (cached), with the encoder's settings."""
    from dataclasses import asdict

    from retriever.encoders.dense import DenseEncoder

    encoder = DenseEncoder(model, device="cpu", batch_size=batch_size)
    key = hashlib.sha256(json.dumps({"config": encoder.config(), "dataset": str(dataset.resolve())},
                                    sort_keys=True).encode()).hexdigest()[:16]
    where = cache / key
    ds = BeirDataset(dataset)
    queries = ds.queries()
    qids = sorted(queries)
    if (where / "docs.npy").is_file():
        docs = np.load(where / "docs.npy")
        docids = (where / "docids.txt").read_text(encoding="utf-8").splitlines()
        qvecs = np.load(where / "queries.npy")
        seconds = json.loads((where / "meta.json").read_text())["encode_seconds"]
    else:
        corpus = list(iter_corpus(dataset))
        docids = [d.docid for d in corpus]
        start = time.perf_counter()
        docs = encoder.encode_documents([doc_text(d) for d in corpus], progress=True)
        seconds = time.perf_counter() - start
        qvecs = encoder.encode_queries([queries[q] for q in qids])
        where.mkdir(parents=True, exist_ok=True)
        np.save(where / "docs.npy", docs)
        np.save(where / "queries.npy", qvecs)
        (where / "docids.txt").write_text("\n".join(docids) + "\n", encoding="utf-8")
        (where / "meta.json").write_text(json.dumps({"model": model, "encode_seconds": seconds}))
    return {"docs": docs, "docids": docids, "queries": dict(zip(qids, qvecs)), "normalize": encoder.settings.normalize,
            "model_dim": encoder.dim, "encode_seconds": seconds, "settings": asdict(encoder.settings),
            "path": encoder.path}


def search(docs: np.ndarray, docids: list[str], queries: dict, qids: list[str], k: int, threads: int) -> dict:
    from retriever.kinds.dense import DenseSearcher

    index = DenseIndex.build(docs, "Flat", threads=threads)
    searcher = DenseSearcher(index, docids, encoder=None, tie_order=docid_order(docids))
    found = searcher.search_vectors(np.stack([queries[q] for q in qids]), k, threads=threads)
    return {q: dict(zip(*hits)) for q, hits in zip(qids, found)}


def measure(model: str, dataset: Path, dims: list[int], args) -> dict:
    enc = encode(model, dataset, args.cache, args.batch_size)
    ds = BeirDataset(dataset)
    test = ds.qrels("test")
    _, dev = carve_dev(ds.qrels("train"), args.dev_fraction, seed=0)
    out = {"model": model, "path": enc["path"], "model_dim": enc["model_dim"], "normalize": enc["normalize"],
           "encode_seconds": round(enc["encode_seconds"], 1), "docs": len(enc["docids"]), "by_dim": {}}
    for dim in dims:
        if dim > enc["model_dim"]:
            continue
        docs = truncated(enc["docs"], dim, enc["normalize"])
        queries = {q: v for q, v in zip(enc["queries"], truncated(np.stack(list(enc["queries"].values())), dim,
                                                                   enc["normalize"]))}
        row = {"index_bytes_per_vector": 4 * dim}
        for split, qrels, metrics in (("test", test, ["ndcg@10", "recall@100"]), ("dev", dev, ["ndcg@10"])):
            qids = sorted(q for q in qrels if q in queries)
            run = search(docs, enc["docids"], queries, qids, args.depth, args.threads)
            result = evaluate(qrels, run, metrics)
            row.update({f"{split}_{m}": round(float(v), 4) for m, v in result.metrics.items()})
            row[f"{split}_queries"] = result.num_queries
        out["by_dim"][str(dim)] = row
        print(f"{model} @ {dim}: " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    p.add_argument("--model", action="append", default=None,
                   help="[NAME=]MODEL (directory or pulled pack); repeatable (default: minilm)")
    p.add_argument("--dims", default="384,256,128,64")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--depth", type=int, default=1000)
    p.add_argument("--dev-fraction", type=float, default=0.2)
    p.add_argument("--cache", type=Path, default=Path("/tmp/bench_matryoshka_vectors"))
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_matryoshka.json")
    p.add_argument("--note", default=None, help="How the models were made (recorded with the results).")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    dims = [int(x) for x in args.dims.split(",")]
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report.update({"dataset": args.dataset.name, "dims": dims, "search": "FAISS Flat (exact), k=1000",
                   "dev": f"carved from train: fraction {args.dev_fraction}, seed 0",
                   "threads": args.threads, "script": "scripts/bench_matryoshka.py"})
    results = report.setdefault("results", {})
    for spec in args.model or ["minilm"]:
        name, _, model = spec.rpartition("=")
        name = name or model
        results[name] = measure(model, args.dataset, dims, args)
        if args.note:
            results[name]["note"] = args.note
        results[name]["command"] = "python scripts/bench_matryoshka.py " + " ".join(sys.argv[1:] if argv is None else argv)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
