"""BM25 through the Lucene backend on a BEIR dataset, checked against Pyserini's published numbers.

    python scripts/lucene_check.py [--dataset ../shared/data/beir/scifact] [--fields flat|multifield]

Builds ``Retriever.build(..., kind="bm25", backend="lucene")`` in a temporary directory, searches
the split's queries (k=1000) and evaluates with ``eval.metrics.evaluate``. Needs the ``lucene``
extra. Reference (Pyserini BEIR 2CR, SciFact test, k1=0.9 b=0.4): flat nDCG@10 0.6789,
Recall@100 0.9253; multifield nDCG@10 0.6647.
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
from retriever import Retriever  # noqa: E402

REFERENCE = {"scifact": {"flat": {"ndcg@10": 0.6789, "recall@100": 0.9253}, "multifield": {"ndcg@10": 0.6647}}}
TOLERANCE = 0.0005


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/beir/scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("--fields", choices=["flat", "multifield"], default="flat")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not (args.dataset / "corpus.jsonl").is_file():
        print(f"no BEIR dataset at {args.dataset}; pass --dataset DIR", file=sys.stderr)
        return 2
    ds = BeirDataset(args.dataset)
    qrels, queries = ds.qrels(args.split), ds.split_queries(args.split)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        r = Retriever.build(args.dataset, Path(tmp) / "idx", kind="bm25", backend="lucene",
                            fields=args.fields, store_docs=False)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        run = r.search_batch(queries, k=1000, threads=args.threads)
        search_s = time.perf_counter() - start
    metrics = evaluate(qrels, run, ["ndcg@10", "recall@100"]).metrics
    reference = REFERENCE.get(ds.name, {}).get(args.fields, {})
    ok = all(abs(metrics[m] - v) <= TOLERANCE for m, v in reference.items())
    print(json.dumps({"dataset": ds.name, "split": args.split, "fields": args.fields, "queries": len(queries),
                      "build_s": round(build_s, 2), "search_s": round(search_s, 2),
                      "qps": round(len(queries) / search_s, 1),
                      "metrics": {m: round(v, 6) for m, v in metrics.items()}, "reference": reference,
                      "within_tolerance": ok if reference else None}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
