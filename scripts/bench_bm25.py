"""BM25 on a BEIR dataset: effectiveness against Lucene's published numbers, build time, speed.

    python scripts/bench_bm25.py [--dataset ../shared/data/beir/scifact] [--out docs/bench_bm25.json]

Lucene reference numbers (Pyserini's BEIR reproductions, SciFact test, k1=0.9 b=0.4):
flat nDCG@10 0.6789 / Recall@100 0.9253, multifield nDCG@10 0.6647.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset  # noqa: E402
from eval.metrics import evaluate  # noqa: E402
from eval.report import format_table  # noqa: E402
from retriever import Retriever  # noqa: E402

LUCENE = {"scifact": {"flat": {"ndcg@10": 0.6789, "recall@100": 0.9253},
                      "multifield": {"ndcg@10": 0.6647}}}
METRICS = ["ndcg@10", "recall@100", "mrr@10"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/beir/scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeat", type=int, default=3, help="timed search passes (best is reported)")
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    args = ap.parse_args()
    if not (args.dataset / "corpus.jsonl").is_file():
        print(f"no BEIR dataset at {args.dataset}; pass --dataset DIR", file=sys.stderr)
        return 2
    ds = BeirDataset(args.dataset)
    qrels, queries = ds.qrels(args.split), ds.split_queries(args.split)
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for fields in ("flat", "multifield"):
            start = time.perf_counter()
            r = Retriever.build(args.dataset, Path(tmp) / fields, kind="bm25", fields=fields)
            build_s = time.perf_counter() - start
            run = r.search_batch(queries, k=1000)  # warm-up
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                run = r.search_batch(queries, k=1000)
                best = min(best, time.perf_counter() - start)
            m = evaluate(qrels, run, METRICS).metrics
            ref = LUCENE.get(ds.name, {}).get(fields, {})
            results[fields] = {"metrics": m, "lucene": ref, "build_s": round(build_s, 2),
                               "qps_1thread_k1000": round(len(queries) / best, 1), "docs": len(r)}
            rows.append((f"bm25 {fields} (ours)", m))
            if ref:
                rows.append((f"bm25 {fields} (Lucene)", ref))
    print(f"{ds.name} / {args.split}: {len(queries)} queries, {results['flat']['docs']} docs")
    print(format_table(rows, METRICS))
    for fields, res in results.items():
        diffs = ", ".join(f"{k} {res['metrics'][k] - v:+.4f}" for k, v in res["lucene"].items())
        print(f"{fields:<10} build {res['build_s']:.2f}s  search {res['qps_1thread_k1000']:.0f} q/s "
              f"(1 thread, k=1000)  vs Lucene: {diffs or 'n/a'}")
    if args.out:
        args.out.write_text(json.dumps({"dataset": ds.name, "split": args.split, **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
