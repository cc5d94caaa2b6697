"""Does keeping the accumulator in cache make the rare lists cheaper to read?

MaxScore reads a BM25 query's rarest lists exhaustively before it can cut; their postings
scatter over an accumulator of one float per document (4 MB at 1M documents). This times that
scatter alone (no decoding): seven sorted lists of 0.15-10% of 1M documents (~180,000 postings,
like the lists a `scifact-profile` query reads before its cut), a BM25 impact computed per
posting from a length byte, seen flags and a touched list as ``indexing.kernels`` keeps them,
cleared after each pass; whole lists one after the other, against docid range by range (the
accumulator slice of a range in cache while every list adds its postings there).

    python scripts/bench_scatter.py [--rounds 3] [--passes 50]

Measured 2026-12-04 (docs/BENCHMARKS.md, "Presence bitmaps for MaxScore's narrowing: tried, not
kept"): with one range of every document as "whole", 0.98-1.24 ms a pass whole against 0.98-2.2
ms by ranges of 8,192-131,072 documents (a plain loop per list had given 0.745-0.755 ms whole).
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

DOCS = 1_000_000
SHARES = (0.0015, 0.003, 0.005, 0.01, 0.02, 0.04, 0.1)
RANGES = (8192, 32768, 131072)


@numba.njit(cache=True)
def _clear(acc, seen, touched, n):
    for i in range(n):
        acc[touched[i]] = 0.0
        seen[touched[i]] = 0


@numba.njit(cache=True)
def by_range(docs, vals, acc, seen, touched, norms, norm_table, size):
    """The same postings, docid range by range (``size`` documents): every list adds the
    postings of one range before the next range; returns the documents touched."""
    pos = np.zeros(len(docs), np.int64)
    total = 0
    for lo in range(0, acc.shape[0], size):
        hi = lo + size
        n = 0
        for li in range(len(docs)):
            d, v = docs[li], vals[li]
            i = pos[li]
            while i < d.shape[0] and d[i] < hi:  # (written out: a helper, even inline="always", ran 7x slower)
                x = d[i]
                if seen[x] == 0:
                    seen[x] = 1
                    touched[n] = x
                    n += 1
                acc[x] += 1.5 - 1.5 / (1.0 + v[i] * norm_table[norms[x]])
                i += 1
            pos[li] = i
        _clear(acc, seen, touched, n)
        total += n
    return total


def whole(docs, vals, acc, seen, touched, norms, norm_table):
    """Every list over the whole accumulator, one after the other (one range of every document)."""
    return by_range(docs, vals, acc, seen, touched, norms, norm_table, acc.shape[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passes", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    docs = numba.typed.List([np.sort(rng.choice(DOCS, int(s * DOCS), replace=False)).astype(np.int32)
                             for s in SHARES])
    vals = numba.typed.List([rng.random(len(d)).astype(np.float32) for d in docs])
    norms = rng.integers(0, 256, DOCS).astype(np.uint8)
    norm_table = rng.random(256).astype(np.float32)
    acc, seen, touched = np.zeros(DOCS, np.float32), np.zeros(DOCS, np.uint8), np.zeros(DOCS, np.int32)
    state = (acc, seen, touched, norms, norm_table)
    assert whole(docs, vals, *state) == by_range(docs, vals, *state, RANGES[0])  # compiled, and the same work

    def ms(fn, *extra) -> float:
        t = time.perf_counter()
        for _ in range(args.passes):
            fn(docs, vals, *state, *extra)
        return (time.perf_counter() - t) * 1e3 / args.passes

    postings = sum(len(d) for d in docs)
    for _ in range(args.rounds):
        row = {"whole": ms(whole), **{f"range {r}": ms(by_range, r) for r in RANGES}}
        print(f"{postings} postings, ms a pass: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
