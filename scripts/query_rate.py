"""Query rate of an index with a given checkout's code (to compare two trees on one index kind).

    python scripts/query_rate.py TREE INDEX [--dataset DIR] [--batch-k K]

``search_batch`` over the SciFact test queries (k=100 or ``--batch-k``, best of 3) and ``search``
one query at a time over 100 of them (k=10, best of 2), with TREE's ``retriever`` on ``sys.path``
first; queries per second and milliseconds per query.
"""

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree", type=Path)
    ap.add_argument("index", type=Path)
    ap.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/beir/scifact")
    ap.add_argument("--batch-k", type=int, default=100)
    args = ap.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    from eval.beir import BeirDataset
    from retriever import Retriever

    queries = BeirDataset(args.dataset).split_queries("test")
    r = Retriever.load(args.index)
    r.search_batch(dict(list(queries.items())[:8]), k=100)  # warm-up
    best_batch = best_single = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        r.search_batch(queries, k=args.batch_k)
        best_batch = min(best_batch, time.perf_counter() - t)
    texts = list(queries.values())[:100]
    for _ in range(2):
        t = time.perf_counter()
        for text in texts:
            r.search(text, k=10)
        best_single = min(best_single, time.perf_counter() - t)
    print(f"{args.tree} {args.index.name}: batch (k={args.batch_k}) {len(queries) / best_batch:.0f} q/s "
          f"({1000 * best_batch / len(queries):.3f} ms/query), single (k=10) {len(texts) / best_single:.0f} q/s "
          f"({1000 * best_single / len(texts):.3f} ms/query)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
