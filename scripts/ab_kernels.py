"""Per-query time of the search kernels of two checkouts on one built BM25 index, alternating
processes (A B A B ...), so that a kernel change is timed against its parent on the same machine
in the same minutes (run-to-run noise of the ratio pruned/exhaustive on this 2-core machine is
~10%: one tree alone cannot tell a 5% change).

    python scripts/ab_kernels.py OLD_TREE NEW_TREE [--index DIR] [--sets weighted-all,...]
        [--rounds 3] [--queries 300] [--k 10]

OLD_TREE / NEW_TREE: checkouts (``git worktree add /tmp/old HEAD~1``); each child imports
``indexing`` from its tree, the query sets from this checkout's scripts. ``--index``: a BM25
index built by ``scripts/bench_sparse_scale.py --sections bm25`` (default its 1M ``bp`` one).
Prints one JSON line per child and, last, the best ms/query of each tree and strategy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DEFAULT_INDEX = "/tmp/retriever-bench/synth-1000000-bm25-bp"


def child(tree: str, index_path: str, sets: list[str], n: int, k: int) -> dict:
    """ms/query (best of two passes) of the exhaustive and pruned kernels of ``tree``."""
    # the tree's packages before anything installed (an editable install of another checkout too)
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()]
    sys.path[:0] = [tree, str(HERE)]
    import indexing.kernels as kernels

    if not kernels.__file__.startswith(str(Path(tree).resolve())):
        raise SystemExit(f"indexing came from {kernels.__file__}, not {tree}")
    from scripts.bench_sparse_scale import bm25_queries

    out: dict = {"tree": tree}
    for name in sets:
        index, queries = bm25_queries(Path(index_path), name, n, seed=7)
        for strategy in ("exhaustive", "pruned"):
            index.search_many(queries[:5], k, strategy, checked=True)  # compiled, scratch allocated
        secs: dict = {}
        for strategy in ("pruned", "exhaustive", "pruned", "exhaustive"):
            t = time.perf_counter()
            for q in queries:
                index.search_many([q], k, strategy, checked=True)
            secs.setdefault(strategy, []).append(time.perf_counter() - t)
        out[name] = {s: round(min(v) / len(queries) * 1e3, 4) for s, v in secs.items()}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--index", default=DEFAULT_INDEX)
    ap.add_argument("--sets", default="weighted-all,scifact-profile,nfcorpus-profile")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sets = args.sets.split(",")
    if args.child:
        print(json.dumps(child(args.old, args.index, sets, args.queries, args.k)))
        return 0
    if not (Path(args.index) / "manifest.json").is_file():
        raise SystemExit(f"{args.index}: no index (build it: python scripts/bench_sparse_scale.py --sections bm25)")
    trees = [str(Path(t).resolve()) for t in (args.old, args.new)]
    best: dict = {}
    for r in range(args.rounds + 1):  # round 0 compiles each tree's kernels (numba's cache), untimed
        for tree in trees:
            cmd = [sys.executable, __file__, tree, tree, "--child", "--index", args.index, "--sets", args.sets,
                   "--queries", str(args.queries), "--k", str(args.k)]
            row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            if r == 0:
                continue
            print(json.dumps(row))
            for name in sets:
                for strategy, ms in row[name].items():
                    key = (name, strategy)
                    best.setdefault(key, {}).setdefault(tree, ms)
                    best[key][tree] = min(best[key][tree], ms)
    print("best ms/query (old, new, new/old):")
    for (name, strategy), by_tree in best.items():
        a, b = by_tree[trees[0]], by_tree[trees[1]]
        print(f"  {name:18s} {strategy:10s} {a:8.4f} {b:8.4f} {b / a:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
