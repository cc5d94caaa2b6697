"""Profile sparse search with Linux ``perf``, numba's compiled kernels named.

``perf`` cannot name JIT code by itself; it reads ``/tmp/perf-PID.map`` for that. This script
compiles the kernels in its own process (an empty numba cache, so every function's code is
there to list), searches fresh SPLADE-like queries, then writes that map from the compiled
libraries. Usage (the delay skips loading and compiling)::

    perf record -D 60000 -F 2000 -o perf.data python scripts/profile_sparse.py INDEX 3000 [pruned|exhaustive|heads]
    perf report -i perf.data --no-children --sort symbol

INDEX: a SPLADE-like index of ``bench_sparse_scale.py`` (``/tmp/retriever-bench/...``), or its
BM25 index with a query set after the strategy (``... synth-1000000-bm25-bp 1000 pruned
scifact-profile``: ``bench_sparse_scale.BM25_SETS``, each query searched once). It prints
when the timed part starts, so ``-D`` can be set from a first run. Found with it (10M, 2026-12-04):
numba's reference counting took 11% of a pruned query (docs/BENCHMARKS.md, "fifth session").
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]


def write_perf_map(path: str | None = None) -> int:
    """``/tmp/perf-PID.map`` (or ``path``) naming every function numba compiled in this process
    (start address, size up to the next one, name); returns how many."""
    import gc

    from numba.core.registry import CPUDispatcher

    spans = []
    for obj in gc.get_objects():
        if type(obj) is CPUDispatcher:  # (isinstance would touch lazy proxies: torch warns)
            for cres in obj.overloads.values():
                lib = cres.library
                for fn in lib._final_module.functions:  # (numba has no public listing of them)
                    if fn.is_declaration:
                        continue
                    try:
                        address = lib.get_pointer_to_function(fn.name)
                    except Exception:  # noqa: BLE001 - a symbol the library does not export
                        continue
                    if address:
                        spans.append((address, fn.name))
    spans = sorted(set(spans))
    with open(path or f"/tmp/perf-{os.getpid()}.map", "w") as out:
        for i, (address, name) in enumerate(spans):
            size = spans[i + 1][0] - address if i + 1 < len(spans) else 4096
            out.write(f"{address:x} {size:x} {name[:120]}\n")
    return len(spans)


def main() -> None:
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-profile-")  # before numba loads: all compiled here
    import bench_sparse_scale as B
    from scripts.synthetic_splade import SpladeLike

    index_path, n = Path(sys.argv[1]), int(sys.argv[2])
    strategy = sys.argv[3] if len(sys.argv) > 3 else "pruned"
    started = time.perf_counter()
    if len(sys.argv) > 4:  # a BM25 index and one of the bench's query sets
        index, queries = B.bm25_queries(index_path, sys.argv[4], n)
    else:
        index = B.load_splade(index_path)
        queries = [index._checked(t, w) for t, w in SpladeLike(0).queries(B.STREAM_OFFSET + n)[B.STREAM_OFFSET:]]
    index.search_many(queries[:5], 10, strategy, checked=True)  # compiles
    print(f"timed part starts after {time.perf_counter() - started:.1f} s", flush=True)
    t = time.perf_counter()
    for q in queries:
        index.search_many([q], 10, strategy, checked=True)
    print(f"{strategy}: {1000 * (time.perf_counter() - t) / len(queries):.3f} ms a query")
    print(f"perf map: {write_perf_map()} functions")


if __name__ == "__main__":
    main()
