"""Hybrid retrieval on SciFact (issue 5): fusion tuned on a dev split carved from train.

    python scripts/bench_hybrid.py [--dataset DIR] [--work DIR] [--out FILE]

Builds (or reuses, under --work) BM25, all-MiniLM-L6-v2 (Flat) and SPLADE-tiny indexes, composes
BM25 + MiniLM and SPLADE + MiniLM hybrids, tunes fusion on 20% of the train queries (seed 0;
the test split is never read while tuning), then evaluates everything on test. Latency: mean
per-query time of ``search(text, k=100)`` over the test queries, one thread, query encoding
included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset, carve_dev  # noqa: E402
from eval.metrics import evaluate  # noqa: E402
from retriever import Retriever  # noqa: E402
from retriever.kinds.hybrid import FusionSettings, compose, tune  # noqa: E402

METRICS = ["ndcg@10", "recall@100"]


def build_once(dataset: Path, out: Path, **options) -> Retriever:
    if (out / "manifest.json").is_file():
        return Retriever.load(out, verify=False)
    return Retriever.build(dataset, out, progress=True, store_docs=False, **options)


def latency_ms(r: Retriever, texts: list[str], **kw) -> float:
    r.search(texts[0], k=100, **kw)
    start = time.perf_counter()
    for t in texts:
        r.search(t, k=100, **kw)
    return 1000 * (time.perf_counter() - start) / len(texts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/beir/scifact")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("RETRIEVER_BENCH_WORK", "/tmp/retriever-bench")))
    ap.add_argument("--dev-fraction", type=float, default=0.2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    ds = BeirDataset(args.dataset)
    test_qrels, test_q = ds.qrels("test"), ds.split_queries("test")
    _, dev_qrels = carve_dev(ds.qrels("train"), args.dev_fraction, seed=0)
    dev_q = {q: t for q, t in ds.queries().items() if q in dev_qrels}
    w = args.work / "hybrid-scifact"
    parts = {
        "bm25": build_once(args.dataset, w / "bm25", kind="bm25"),
        "minilm": build_once(args.dataset, w / "minilm", kind="dense", model="minilm", faiss="Flat", device="cpu"),
        "splade": build_once(args.dataset, w / "splade", kind="sparse", model="splade-tiny", device="cpu"),
    }
    rows: dict[str, dict] = {}
    texts = list(test_q.values())
    for name, r in parts.items():
        rows[name] = {**evaluate(test_qrels, r.search_batch(test_q, k=1000), METRICS).metrics,
                      "latency_ms": latency_ms(r, texts)}
    report = {"dev_queries": len(dev_q), "test_queries": len(test_q), "rows": rows}
    for sparse in ("bm25", "splade"):
        hpath = w / f"{sparse}+minilm"
        compose(parts[sparse].path, parts["minilm"].path, hpath, overwrite=True)
        h = Retriever.load(hpath, verify=False)
        runs = h.searcher.component_runs(test_q)  # test runs, used only to score fixed settings
        from eval.fusion import fuse

        def test_score(s: FusionSettings) -> dict:
            fused = fuse(runs, s.method, s.weights, s.depth, s.rrf_k, k=1000)
            return evaluate(test_qrels, fused, METRICS).metrics

        untuned = {"rrf k=60": FusionSettings("rrf", [1, 1], 1000, 60),
                   "minmax 0.5/0.5": FusionSettings("minmax", [0.5, 0.5], 1000, 60)}
        for label, s in untuned.items():
            rows[f"{sparse}+minilm {label}"] = test_score(s)
        tuned = tune(h.searcher, dev_qrels, dev_q, "ndcg@10")  # dev only
        best_minmax = next(s for s, _ in tuned if s.method == "minmax")
        best_rrf = next(s for s, _ in tuned if s.method == "rrf")
        best_any, dev_value = tuned[0]
        for label, s in (("minmax tuned", best_minmax), ("rrf tuned", best_rrf), ("best tuned", best_any)):
            rows[f"{sparse}+minilm {label}"] = {**test_score(s), "setting": f"{s.method} {s.weights} k={s.rrf_k}"}
        from retriever.kinds.hybrid import store_fusion

        store_fusion(hpath, best_minmax)
        rows[f"{sparse}+minilm minmax tuned"]["latency_ms"] = latency_ms(Retriever.load(hpath, verify=False), texts)
        report[f"{sparse}+minilm dev best"] = {"setting": f"{best_any.method} {best_any.weights}", "dev_ndcg@10": dev_value}
    best_single = max(rows["bm25"]["ndcg@10"], rows["minilm"]["ndcg@10"])
    print(f"\n{ds.name} test ({len(test_q)} queries); fusion tuned on {len(dev_q)} dev queries carved from train")
    print("| run | nDCG@10 | Recall@100 | latency (ms/query) | setting |\n|---|--:|--:|--:|---|")
    for name, r in rows.items():
        lat = f"{r['latency_ms']:.2f}" if "latency_ms" in r else ""
        print(f"| {name} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {lat} | {r.get('setting', '')} |")
    print(f"BM25+MiniLM minmax tuned - max(BM25, MiniLM) = {rows['bm25+minilm minmax tuned']['ndcg@10'] - best_single:+.4f}")
    print(f"BM25+MiniLM rrf k=60     - max(BM25, MiniLM) = {rows['bm25+minilm rrf k=60']['ndcg@10'] - best_single:+.4f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
