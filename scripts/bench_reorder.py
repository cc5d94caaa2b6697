"""Document reordering (BP, indexing/reorder.py) on the SPLADE-like synthetic corpus.

    python scripts/bench_reorder.py [--docs 100000,1000000] [--terms 100,200] [--threads 2] [--out FILE]

For each size: generation speed (docs/s), BP time and docs/s, and, for the corpus order (i.i.d.
documents: no topic order) and the BP order, the log-gap bits per posting, the share of
adjacent documents with the same dominant topic, and the mean number of 64-document blocks a
posting list touches per posting (what block-max pruning pays for).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexing.reorder import bisect_order, log_gap_cost  # noqa: E402
from scripts.synthetic_splade import SpladeLike  # noqa: E402


@njit(cache=True, nogil=True)
def _blocks_touched(indptr, indices, order, num_terms, block):
    """Distinct (term, block of ``block`` consecutive positions) pairs."""
    last = np.full(num_terms, -1, dtype=np.int64)
    n = 0
    for pos in range(order.shape[0]):
        d = order[pos]
        b = pos // block
        for p in range(indptr[d], indptr[d + 1]):
            t = indices[p]
            if last[t] != b:
                last[t] = b
                n += 1
    return n


def corpus(model: SpladeLike, docs: int):
    ptrs, ids, topics, base = [np.zeros(1, np.int64)], [], [], 0
    for blk in model.blocks(0, docs):
        ptrs.append(blk.indptr[1:] + base)
        base += int(blk.indptr[-1])
        ids.append(blk.ids)
        topics.append(blk.topic)
    return np.concatenate(ptrs), np.concatenate(ids), np.concatenate(topics)


def measure(indptr, indices, vocab, topics, order) -> dict:
    bits, postings = log_gap_cost(indptr, indices, vocab, order)
    o = np.arange(len(topics)) if order is None else order
    t = topics[o]
    blocks = _blocks_touched(indptr, indices, np.asarray(o, dtype=np.int64), vocab, 64)
    return {"bits_per_posting": bits / postings, "same_topic_adjacent": float((t[1:] == t[:-1]).mean()),
            "blocks_per_posting_64": blocks / postings}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="100000,1000000")
    ap.add_argument("--terms", default="100,200", help="document terms: lo,hi (uniform)")
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--min-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.terms.split(","))
    model = SpladeLike(0, topics=args.topics, doc_terms=(lo, hi))
    # compile outside the timings
    ip, ix, _ = corpus(model, 1000)
    bisect_order(ip, ix, model.vocab, threads=args.threads)
    measure(ip, ix, model.vocab, np.zeros(1000, np.int32), None)
    report = {}
    for n in (int(x) for x in args.docs.split(",")):
        t0 = time.perf_counter()
        indptr, indices, topics = corpus(model, n)
        gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        order = bisect_order(indptr, indices, model.vocab, iterations=args.iterations,
                             min_size=args.min_size, threads=args.threads)
        secs = time.perf_counter() - t0
        row = {"docs": n, "terms_per_doc": len(indices) / n, "generate_docs_per_s": n / gen,
               "bp_s": secs, "bp_docs_per_s": n / secs,
               "before": measure(indptr, indices, model.vocab, topics, None),
               "after": measure(indptr, indices, model.vocab, topics, order)}
        report[str(n)] = row
        print(json.dumps(row), flush=True)
        del indptr, indices, topics, order
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
