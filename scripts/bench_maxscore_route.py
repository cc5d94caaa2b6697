"""Exact pruned against exhaustive search for short BM25 queries, query by query: what the
MaxScore route (``kernels._maxscore_taat``; a query goes there when its postings are at least
``kernels.TAAT_ROUTE`` times the seeks of its final rescoring, a seek costing ``index.seek_cost``
postings: 32 up to ``kernels.TAAT_SMALL_DOCS`` documents, else 8) gives on each query set.

    python scripts/bench_maxscore_route.py [--sets scifact,mid,weighted,weighted-all,topical]
        [--dataset ../shared/data/beir/scifact] [--work /tmp/retriever-bench] [--reps 4]

Each query is searched ``--reps`` times per strategy, the two alternating (which goes first
alternating too), one query per call, k = 10; its best time per strategy is kept (so the figures
are of warm, repeated queries: ``scripts/bench_sparse_scale.py`` times fresh ones), and the ratio
is exhaustive over pruned summed over the queries. ``scifact``: BM25 flat of the SciFact corpus,
its test queries (built into WORK/scifact-bm25 when missing); the synthetic sets search the 1M
indexes ``scripts/bench_sparse_scale.py`` builds (sections bm25 and bm25-topical).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def beir_test_queries(path: Path, dataset) -> tuple:
    """The index at ``path`` and the test queries of the BEIR ``dataset``, encoded for it."""
    from eval.beir import BeirDataset
    from retriever import Retriever
    from scripts.bench_sparse_scale import encoded

    r = Retriever.load(path)
    return r.searcher.index, encoded(r, list(BeirDataset(dataset).split_queries("test").values()))


def queries_of(which: str, args) -> tuple:
    from retriever import Retriever
    from scripts.bench_sparse_scale import bm25_queries

    work = Path(args.work)
    if which == "scifact":
        path = work / "scifact-bm25"
        if not (path / "manifest.json").is_file():
            Retriever.build(args.dataset, path, kind="bm25", overwrite=True)
        return beir_test_queries(path, args.dataset)
    path = work / ("synth-topical-1000000-bm25-bp" if which == "topical" else "synth-1000000-bm25-bp")
    if not (path / "manifest.json").is_file():
        raise SystemExit(f"{path}: missing; `python scripts/bench_sparse_scale.py --sections "
                         f"{'bm25-topical' if which == 'topical' else 'bm25'}` builds it")
    return bm25_queries(path, which, args.queries)


def measure(index, queries, reps: int, k: int = 10) -> dict:
    from indexing import kernels

    for strategy in ("pruned", "exhaustive"):
        index.search_many(queries[:5], k, strategy, checked=True)
    best = {"pruned": np.full(len(queries), np.inf), "exhaustive": np.full(len(queries), np.inf)}
    routes = []
    for i, q in enumerate(queries):
        for rep in range(reps):
            for strategy in (("pruned", "exhaustive") if rep % 2 == 0 else ("exhaustive", "pruned")):
                start = time.perf_counter()
                index.search_many([q], k, strategy, checked=True)
                best[strategy][i] = min(best[strategy][i], time.perf_counter() - start)
                if strategy == "pruned":
                    route = int(index.last_route[0])
        routes.append(route)
    counts = np.bincount(routes, minlength=3)
    return {"queries": len(queries), "pruned_us": round(float(best["pruned"].mean()) * 1e6, 1),
            "exhaustive_us": round(float(best["exhaustive"].mean()) * 1e6, 1),
            "exhaustive_over_pruned": round(float(best["exhaustive"].sum() / best["pruned"].sum()), 3),
            "routes": {"maxscore": int(counts[kernels.ROUTE_MAXSCORE]),
                       "exhaustive": int(counts[kernels.ROUTE_EXHAUSTIVE])},
            "taat_route": kernels.TAAT_ROUTE, "seek_cost": index.seek_cost}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="scifact,mid,weighted,weighted-all,topical")
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--work", default="/tmp/retriever-bench")
    ap.add_argument("--queries", type=int, default=200, help="queries of each synthetic set")
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    for which in args.sets.split(","):
        index, queries = queries_of(which, args)
        print(json.dumps({"set": which, **measure(index, queries, args.reps)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
