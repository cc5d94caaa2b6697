"""Query rate of an index with a given checkout's code (to compare two trees on one index kind).

    python scripts/query_rate.py TREE INDEX [--dataset DIR]

``search_batch`` over the SciFact test queries (k=100, best of 3) and ``search`` one query at a
time over 100 of them (k=10, best of 2), with TREE's ``retriever`` on ``sys.path`` first.
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
        r.search_batch(queries, k=100)
        best_batch = min(best_batch, time.perf_counter() - t)
    texts = list(queries.values())[:100]
    for _ in range(2):
        t = time.perf_counter()
        for text in texts:
            r.search(text, k=10)
        best_single = min(best_single, time.perf_counter() - t)
    print(f"{args.tree} {args.index.name}: batch {len(queries) / best_batch:.0f} q/s, "
          f"single {len(texts) / best_single:.0f} q/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
