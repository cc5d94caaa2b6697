"""Dense retrieval against its peers, measured in one run (issue 4).

    python scripts/bench_dense.py [--dataset DIR] [--model minilm] [--synth-docs 1000000]

Sections:
  minilm-scifact  all-MiniLM-L6-v2 on SciFact: our encoder vs sentence-transformers (same model,
                  max length, batch size, threads): docs/s and nDCG@10 with exact (Flat) search;
                  our int8 dynamic-quantised CPU path: docs/s and nDCG@10
  ivfpq-scifact   IVF-PQ (+ float16 refine) over the MiniLM vectors: recall@10 against Flat,
                  bytes per vector, q/s against Flat
  ivfpq-synth     the same on --synth-docs synthetic 384-d vectors (low intrinsic dimension,
                  like real embeddings)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset  # noqa: E402

from indexing.corpus import iter_corpus
from eval.metrics import evaluate  # noqa: E402
from indexing.faiss_index import DenseIndex  # noqa: E402


def run_from(ids, scores, docids, qids) -> dict:
    return {q: {docids[i]: float(s) for i, s in zip(row_i, row_s) if i >= 0}
            for q, row_i, row_s in zip(qids, ids, scores)}


def recall_vs(exact_ids: np.ndarray, approx_ids: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx_ids, exact_ids)]))


def index_bytes(index: DenseIndex) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = index.save(Path(tmp))
        sizes = {p.name: p.stat().st_size for p in Path(tmp).iterdir()}
    n = index.ntotal
    return {"index_bytes_per_vector": sizes["faiss.index"] / n,
            "refine_bytes_per_vector": sizes.get("vectors_f16.npy", 0) / n, "factory": settings["factory"]}


def qps(index: DenseIndex, queries: np.ndarray, k: int, repeat: int = 3, **params) -> tuple[float, np.ndarray]:
    index.search(queries[:10], k, **params)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        ids, _ = index.search(queries, k, **params)
        best = min(best, time.perf_counter() - start)
    return len(queries) / best, ids


def minilm_scifact(args, report: dict, cache: dict) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from retriever.encoders.dense import DenseEncoder
    from indexing.corpus import doc_text
    from retriever.encoders.models import resolve_model

    torch.set_num_threads(args.threads)
    ds = BeirDataset(args.dataset)
    qrels, queries = ds.qrels("test"), ds.split_queries("test")
    qids = list(queries)
    docs = list(iter_corpus(args.dataset))
    texts = [doc_text(d) for d in docs]
    docids = [d.docid for d in docs]
    path = resolve_model(args.model)
    rows = {}

    def measure(name, encode_docs, encode_queries):
        start = time.perf_counter()
        d = encode_docs(texts)
        secs = time.perf_counter() - start
        q = encode_queries([queries[x] for x in qids])
        index = DenseIndex.build(np.ascontiguousarray(d, dtype=np.float32), "Flat")
        ids, scores = index.search(np.ascontiguousarray(q, dtype=np.float32), 1000)
        m = evaluate(qrels, run_from(ids, scores, docids, qids), ["ndcg@10", "recall@100"]).metrics
        rows[name] = {"docs_per_s": len(texts) / secs, **m}
        print(f"  {name}: {rows[name]}", flush=True)
        return d, q

    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = 256
    measure("sentence-transformers", lambda t: st.encode(t, batch_size=args.batch_size),
            lambda t: st.encode(t, batch_size=args.batch_size))
    ours = DenseEncoder(path, batch_size=args.batch_size, device="cpu")
    d, q = measure("ours", ours.encode_documents, ours.encode_queries)
    cache["scifact"] = (d, q, docids, qids, qrels)
    int8 = DenseEncoder(path, batch_size=args.batch_size, device="cpu", quantize_int8=True)
    measure("ours int8", int8.encode_documents, int8.encode_queries)
    base = rows["sentence-transformers"]
    for name in ("ours", "ours int8"):
        rows[name]["speed_vs_st"] = rows[name]["docs_per_s"] / base["docs_per_s"]
        rows[name]["ndcg10_minus_st"] = rows[name]["ndcg@10"] - base["ndcg@10"]
    report["minilm-scifact"] = {"model": path, "batch_size": args.batch_size, "threads": args.threads,
                                "max_length": 256, **rows}
    _print(f"all-MiniLM-L6-v2 on SciFact ({len(texts)} docs, batch {args.batch_size}, "
           f"{args.threads} threads, CPU)", rows)


def _ivfpq(name: str, d: np.ndarray, q: np.ndarray, spec: str, report: dict, extra=None) -> dict:
    flat = DenseIndex.build(d, "Flat")
    flat_qps, exact = qps(flat, q, 10)
    rows = {"Flat": {"qps": flat_qps, "recall@10_vs_flat": 1.0, **index_bytes(flat)}}
    for refine in (False, True):
        start = time.perf_counter()
        index = DenseIndex.build(d, spec, refine=refine)
        build = time.perf_counter() - start
        speed, ids = qps(index, q, 10)
        rows[f"{spec}{' +refine' if refine else ''}"] = {
            "qps": speed, "recall@10_vs_flat": recall_vs(exact, ids), "build_s": build, **index_bytes(index)}
    for r in rows.values():
        r["index_bytes_vs_flat"] = r["index_bytes_per_vector"] / rows["Flat"]["index_bytes_per_vector"]
        r["qps_vs_flat"] = r["qps"] / flat_qps
    report[name] = {**(extra or {}), **rows}
    return rows


def ivfpq_scifact(args, report: dict, cache: dict) -> None:
    if "scifact" not in cache:
        print("ivfpq-scifact needs minilm-scifact in the same run", file=sys.stderr)
        return
    d, q, *_ = cache["scifact"]
    spec = "IVF64,PQ48"
    rows = _ivfpq("ivfpq-scifact", d, q, spec, report, {"docs": len(d), "queries": len(q)})
    _print(f"IVF-PQ vs Flat on SciFact MiniLM vectors ({len(d)} x {d.shape[1]}, k=10)", rows)


def synthetic_vectors(n: int, dim: int = 384, latent: int = 32, clusters: int = 2000, seed: int = 0):
    """Embedding-like vectors: a cluster mixture in a low-dimensional space, lifted to ``dim``."""
    rng = np.random.default_rng(seed)
    lift = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    centers = rng.standard_normal((clusters, latent)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        z = centers[rng.integers(0, clusters, e - s)] + 0.35 * rng.standard_normal((e - s, latent)).astype(np.float32)
        x = z @ lift + 0.05 * rng.standard_normal((e - s, dim)).astype(np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def ivfpq_synth(args, report: dict, cache: dict) -> None:
    n = args.synth_docs
    data = synthetic_vectors(n + 1000)
    d, q = data[:n], data[n:]
    nlist = int(round(4 * np.sqrt(n)))
    spec = f"IVF{nlist},PQ48"
    rows = _ivfpq("ivfpq-synth", d, q, spec, report, {"docs": n, "queries": len(q)})
    _print(f"IVF-PQ vs Flat on {n:,} synthetic 384-d vectors (1000 queries, k=10)", rows)


def _print(title: str, rows: dict) -> None:
    print(f"\n{title}")
    keys = sorted({k for r in rows.values() for k in r})
    print("| system | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, ""))
                                        for k in keys) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/beir/scifact")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--synth-docs", type=int, default=1_000_000)
    ap.add_argument("--sections", default="minilm-scifact,ivfpq-scifact,ivfpq-synth")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report: dict = {}
    cache: dict = {}
    sections = {"minilm-scifact": minilm_scifact, "ivfpq-scifact": ivfpq_scifact, "ivfpq-synth": ivfpq_synth}
    for name in args.sections.split(","):
        sections[name](args, report, cache)
        if args.out:
            args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
