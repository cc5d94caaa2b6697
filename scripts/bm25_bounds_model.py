"""Two more ways to prune BM25 queries, modelled on a built index before anyone writes a kernel
for them: how much of a query's postings each would still have to touch, with the threshold
known as well as each can know it. Work in postings (a block-max entry, a posting read or a
posting decoded to seek a candidate each count one), not time.

``bmp``: block-max pruning over fixed ranges of documents (BMP, Mallia et al. SIGIR 2024; our
SPLADE path). Knowing the final k-th score from the start, every block whose bound (the query
terms' largest impacts there, summed) reaches it must be scored; the bounds pass reads one entry
per term per block it touches. Printed per block size: entries and postings in scored blocks,
as shares of the query's postings, and the best speed-up in postings.

``daat``: MaxScore document at a time (Turtle & Flood; PISA's), whose threshold rises with full
scores: at doc id ``x`` it is the k-th best exact score of the documents before ``x`` (any
document DAAT skipped scored below the threshold of its time, so this is exactly DAAT's). Per
window of ``--window`` documents the terms whose bounds (smallest first) sum below the
threshold are non-essential; the essential lists' postings in the window are read, and every
document they hold whose partial score plus the non-essential bounds reaches the threshold is
sought in the non-essential lists, largest bound first (dropped once it cannot reach), each
list's 128-posting chunks holding a sought document decoded (once a query). Printed: the shares read, decoded
and sought, and the speed-up in postings.

    python scripts/bm25_bounds_model.py INDEX SET [--queries-n 40] [--model bmp|daat|both]
        [--order index|length|random]

``--order``: the documents renumbered before modelling (``length``: by their number of terms,
shortest first, so a block holds documents of one length and a BM25 impact depends mostly on the
length; ``random``: a shuffle, the order without any structure), to see what an order gives.

SET: a BM25 query set of ``scripts/bench_sparse_scale.py`` (``mid``, ``weighted``,
``weighted-all``, ``scifact-profile``, ``nfcorpus-profile``). Measured 2026-12-04 on the BM25
1M index: docs/BENCHMARKS.md, "BM25: block-max bounds and MaxScore document at a time,
modelled".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexing.kernels import CHUNK  # noqa: E402
from scripts.bench_sparse_scale import BM25_SETS, bm25_queries  # noqa: E402

SHIFTS = (5, 6, 7, 8, 10, 12)  # block sizes 32 .. 4,096 documents


def query_lists(u, terms, weights):
    """Each query term's (doc ids, weight x impact) in float32, as the kernels add them."""
    off, docs, imp = u.offsets, u.docs, u.impacts
    return [(docs[off[t]:off[t + 1]], np.float32(w) * imp[off[t]:off[t + 1]].astype(np.float32))
            for t, w in zip(terms.tolist(), weights.tolist())]


def renumbered(lists, new_id):
    """``lists`` with each document ``d`` renamed ``new_id[d]``, each list sorted again."""
    out = []
    for d, v in lists:
        nd = new_id[d]
        o = np.argsort(nd, kind="stable")
        out.append((nd[o].astype(np.int64), v[o]))
    return out


def document_order(u, num_docs: int, how: str) -> np.ndarray | None:
    """The new id of each document under ``--order`` (None: the index's own order)."""
    if how == "index":
        return None
    if how == "length":
        order = np.argsort(np.bincount(u.docs, minlength=num_docs), kind="stable")
    else:
        order = np.random.default_rng(0).permutation(num_docs)
    new_id = np.empty(num_docs, np.int64)
    new_id[order] = np.arange(num_docs)
    return new_id


def exact_scores(lists, num_docs):
    acc = np.zeros(num_docs, np.float32)
    for d, v in lists:
        acc[d] += v
    return acc


def bmp(lists, theta, num_docs, shift):
    """(block-max entries, postings in the blocks whose bound reaches ``theta``, those blocks)."""
    ub = np.zeros((num_docs >> shift) + 1)
    entries = 0
    blocks = []
    for d, v in lists:
        if not len(d):
            continue
        b = d >> shift
        starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
        ub[b[starts]] += np.maximum.reduceat(v, starts)
        entries += len(starts)
        blocks.append(b)
    need = ub >= theta * (1 - 1e-6)
    return entries, sum(int(need[b].sum()) for b in blocks), int(need.sum())


def running_theta(acc, window, k):
    """The k-th best exact score of the documents before each window's start."""
    n_win = (len(acc) + window - 1) // window
    theta = np.zeros(n_win)
    best = np.empty(0, np.float32)
    for c in range(n_win):
        theta[c] = best.min() if len(best) >= k else 0.0
        seg = acc[c * window:(c + 1) * window]
        best = np.concatenate([best, seg[seg > 0]])
        if len(best) > k:
            best = np.partition(best, len(best) - k)[len(best) - k:]
    return theta


def daat(lists, acc, window, k):
    """(postings read in essential lists, postings decoded to seek candidates, seeks)."""
    bounds = np.array([float(v.max()) if len(v) else 0.0 for _, v in lists])
    order = np.argsort(bounds, kind="stable")  # smallest bound first
    lists = [lists[i] for i in order]
    pref = np.cumsum(bounds[order])  # pref[j]: the bounds of terms 0..j summed
    theta = running_theta(acc, window, k)
    ne = np.searchsorted(pref, theta, side="left")  # terms [0, ne) are non-essential in that window
    read = decoded = seeks = 0
    chunks: list[list] = [[] for _ in lists]  # per list, the chunks seeks decoded (once a query: cursors keep them)
    for j, (d, _) in enumerate(lists):
        read += int((j >= ne[d // window]).sum())
    for c in np.flatnonzero(ne > 0):
        m, lo, hi = ne[c], c * window, (c + 1) * window
        parts = [(d[a:b], v[a:b]) for d, v in lists[m:] for a, b in [np.searchsorted(d, [lo, hi])]]
        ds = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int32)
        if not len(ds):
            continue
        vs = np.concatenate([p[1] for p in parts]).astype(np.float64)
        cand, inv = np.unique(ds, return_inverse=True)
        part = np.zeros(len(cand))
        np.add.at(part, inv, vs)
        for j in range(m - 1, -1, -1):  # non-essential, largest bound first
            keep = part + pref[j] >= theta[c]
            cand, part = cand[keep], part[keep]
            if not len(cand):
                break
            d, v = lists[j]
            seeks += len(cand)
            if not len(d):
                continue
            pos = np.minimum(np.searchsorted(d, cand), len(d) - 1)
            chunks[j].append(np.unique(pos // CHUNK))
            hit = d[pos] == cand
            part[hit] += v[pos[hit]]
    for j, (d, _) in enumerate(lists):
        if chunks[j]:
            c = np.unique(np.concatenate(chunks[j]))
            decoded += int(np.minimum(len(d) - c * CHUNK, CHUNK).sum())
    return read, decoded, seeks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", type=Path)
    ap.add_argument("queries", choices=list(BM25_SETS))
    ap.add_argument("--queries-n", dest="n", type=int, default=40)
    ap.add_argument("--model", choices=["bmp", "daat", "both"], default="both")
    ap.add_argument("--window", type=int, default=4096, help="daat: documents per threshold update")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--order", choices=["index", "length", "random"], default="index")
    args = ap.parse_args()
    index, queries = bm25_queries(args.index, args.queries, args.n)
    u = index.uncompressed()
    new_id = document_order(u, index.num_docs, args.order)
    total = 0
    b_tot = {s: [0, 0, 0] for s in SHIFTS}
    d_tot = [0, 0, 0]
    for terms, weights in queries:
        lists = query_lists(u, terms, weights)
        if new_id is not None:
            lists = renumbered(lists, new_id)
        total += sum(len(d) for d, _ in lists)
        acc = exact_scores(lists, index.num_docs)
        if args.model in ("bmp", "both"):
            theta = float(np.partition(acc, len(acc) - args.k)[len(acc) - args.k])
            for s in SHIFTS:
                b_tot[s] = [x + y for x, y in zip(b_tot[s], bmp(lists, theta, index.num_docs, s))]
        if args.model in ("daat", "both"):
            d_tot = [x + y for x, y in zip(d_tot, daat(lists, acc, args.window, args.k))]
    report = {"index": str(args.index), "set": args.queries, "order": args.order, "queries": len(queries),
              "postings_a_query": round(total / len(queries))}
    if args.model in ("bmp", "both"):
        report["bmp"] = {1 << s: {"entries_share": round(e / total, 3), "scored_share": round(p / total, 3),
                                  "blocks_scored_a_query": round(b / len(queries)),
                                  "speedup_in_postings": round(total / (e + p), 2)}
                         for s, (e, p, b) in b_tot.items()}
    if args.model in ("daat", "both"):
        read, decoded, seeks = d_tot
        report["daat"] = {"read_share": round(read / total, 3), "decoded_share": round(decoded / total, 3),
                          "seeks_share": round(seeks / total, 3),
                          "speedup_in_postings": round(total / (read + decoded + seeks), 2)}
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
