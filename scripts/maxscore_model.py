"""A numpy model of MaxScore term at a time (``kernels._maxscore_taat``'s cut rule and
``_narrow``'s candidates) on a built BM25 index: how many postings it reads and seeks for a query
set, with the exact k-th partial score after every term (the kernel estimates it from a sample
before the cut), optionally seeded by a threshold
estimate: the ``--seed-docs`` best documents by partial score after ``--seed-after`` lists,
scored fully (their seeks counted). Work in postings, not time. ``--bitmaps SHARE`` models
presence bitmaps of the terms in at least SHARE of the documents (narrowing tests a candidate
there for ``--bit-cost`` postings instead of seeking it; its bound, not its value, is dropped
when absent) and ``--best-first`` exact scoring of the candidates left best bound first: an
experiment of 2026-12-04 that the kernel does not carry (docs/BENCHMARKS.md: 3.49x in postings
on scifact-profile, no steady gain in time).

    python scripts/maxscore_model.py INDEX mid|weighted|weighted-all|topical|scifact-profile|
        nfcorpus-profile|scifact
        [--seed-docs 0] [--seed-after 1] [--queries-n 200] [--time-heads]
        [--bitmaps 0] [--bit-cost 0.5] [--best-first]

Reads every query list into numpy (the index uncompressed in memory: ~8 bytes a posting).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexing.kernels import TAAT_SEEK_COST  # noqa: E402
from scripts.bench_sparse_scale import BM25_SETS, bm25_queries  # noqa: E402
from scripts.query_profile import BEIR  # noqa: E402


def narrow(lists, dfs, order, rest, stop, acc, cand, theta, k, bounds=None, bitmap=None, bit_cost=0.0):
    """``kernels._narrow``: the unread terms sought at the candidates one at a time (a list costs
    what reading it does at most), those that can no longer reach the k-th best partial dropped
    after each. ``bitmap[j]``: term j's presence is tested (``bit_cost`` a test), its value not
    read: a candidate without it loses its bound. Returns (the cost in postings, the candidates
    left)."""
    cost = 0.0
    hi = acc[cand] + rest[stop]  # each candidate's upper bound
    for i in range(stop, len(order)):
        j = order[i]
        d, v = lists[j]
        pos = np.minimum(np.searchsorted(d, cand), max(len(d) - 1, 0))
        hit = d[pos] == cand if len(d) else np.zeros(len(cand), bool)
        if bitmap is not None and bitmap[j]:
            cost += len(cand) * bit_cost
            hi[~hit] -= bounds[j]
        else:
            cost += min(len(cand) * TAAT_SEEK_COST, dfs[j])
            acc[cand[hit]] += v[pos[hit]]
            if bounds is None:
                hi = acc[cand] + rest[i + 1]
            else:
                hi[hit] += v[pos[hit]] - bounds[j]
                hi[~hit] -= bounds[j]
        part = acc[cand]
        if len(part) >= k:
            theta = max(theta, float(np.partition(part, len(part) - k)[len(part) - k]))
        keep = hi >= theta
        cand, hi = cand[keep], hi[keep]
    return cost, cand, hi


def model(index, queries, k: int = 10, seed_docs: int = 0, seed_after: int = 1, heads: list | None = None,
          bitmap_share: float = 0.0, bit_cost: float = 0.5, best_first: bool = False) -> dict:
    """The work of ``queries`` in postings; ``heads``: each query's terms read before its cut
    appended there (the whole query when it does not cut)."""
    u = index.uncompressed()
    off, docs, imp = u.offsets, u.docs, u.impacts
    work = {"postings": 0, "read": 0, "seek": 0, "estimate": 0}
    cut = at_cut = left = 0
    narrow_cost = 0.0
    for terms, weights in queries:
        n = len(terms)
        lists = [(docs[off[t]:off[t + 1]], weights[j] * imp[off[t]:off[t + 1]].astype(np.float32))
                 for j, t in enumerate(terms)]
        bounds = np.array([v.max() if len(v) else 0.0 for _, v in lists])
        dfs = np.array([len(d) for d, _ in lists])
        bitmap = dfs >= bitmap_share * index.num_docs if bitmap_share > 0 else None
        full = np.zeros(index.num_docs, np.float32)
        for d, v in lists:
            full[d] += v
        order = np.argsort(-bounds, kind="mergesort")  # largest bound first, as the kernel reads
        rest = np.concatenate([np.cumsum(bounds[order][::-1])[::-1], [0.0]])
        acc = np.zeros(index.num_docs, np.float32)
        touched = np.zeros(index.num_docs, bool)
        read = seeks = estimate = 0  # seeks: their cost in postings
        seeded = 0.0
        stop = n
        for i, j in enumerate(order):
            d, v = lists[j]
            acc[d] += v
            touched[d] = True
            read += len(d)
            if i + 1 == n:
                break
            if i + 1 == seed_after and seed_docs:
                ids = np.flatnonzero(touched)
                top = ids[np.argsort(-acc[ids], kind="stable")[:seed_docs]]
                best = np.sort(full[top])[::-1]
                seeded = float(best[k - 1]) if len(best) >= k else 0.0
                estimate = len(top) * (n - i - 1) * TAAT_SEEK_COST
            partial = acc[touched]
            theta = max(float(np.partition(partial, len(partial) - k)[len(partial) - k]) if len(partial) >= k
                        else 0.0, seeded)
            if rest[i + 1] < theta:
                c = np.flatnonzero(touched & (acc + rest[i + 1] >= theta))
                nxt = order[i + 1]
                if len(c) * (bit_cost if bitmap is not None and bitmap[nxt] else TAAT_SEEK_COST) <= dfs[nxt]:  # seeking them costs less than the next list
                    stop = i + 1
                    cut += 1
                    at_cut += len(c)
                    seek, c, hi = narrow(lists, dfs, order, rest, i + 1, acc, c, theta, k, bounds, bitmap, bit_cost)
                    if best_first:  # scored exactly in decreasing order of their bounds until the k-th beats the next
                        scored = []
                        for x in np.argsort(-hi, kind="stable"):
                            if len(scored) >= k and hi[x] < sorted(scored)[-k]:
                                break
                            scored.append(full[c[x]])
                        c = c[:len(scored)]
                    left += len(c)
                    narrow_cost += seek
                    seeks = seek + len(c) * n * TAAT_SEEK_COST  # the last: every term at the survivors
                    break
        if heads is not None:
            heads.append((terms[order[:stop]].copy(), weights[order[:stop]].copy()))
        work["postings"] += int(dfs.sum())
        work["read"] += read
        work["seek"] += seeks
        work["estimate"] += estimate
    p = work["postings"]
    return {"queries": len(queries), "cut": cut, "read_share": round(work["read"] / p, 3),
            "seek_share": round(work["seek"] / p, 3), "estimate_share": round(work["estimate"] / p, 3),
            "speedup_in_postings": round(p / (work["read"] + work["seek"] + work["estimate"]), 2),
            "candidates_at_cut": round(at_cut / max(cut, 1), 1), "candidates_left": round(left / max(cut, 1), 1),
            "narrow_share": round(narrow_cost / p, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", type=Path)
    ap.add_argument("queries", choices=[*BM25_SETS, "topical", "scifact"],
                    help="a synthetic set (scripts/bench_sparse_scale.py), or scifact: INDEX is a BM25 index of "
                         "SciFact, searched with the test queries of --dataset")
    ap.add_argument("--dataset", default=str(BEIR / "scifact"))
    ap.add_argument("--queries-n", dest="n", type=int, default=200)
    ap.add_argument("--seed-docs", type=int, default=0)
    ap.add_argument("--seed-after", type=int, default=1)
    ap.add_argument("--bitmaps", type=float, default=0.0, help="terms in at least this share of the documents "
                    "have a presence bitmap: narrowing tests it (--bit-cost postings a test) instead of seeking")
    ap.add_argument("--bit-cost", type=float, default=0.5)
    ap.add_argument("--best-first", action="store_true", help="the candidates left scored exactly best bound "
                    "first, until the k-th exact score beats the next bound")
    ap.add_argument("--time-heads", action="store_true",
                    help="also time the exhaustive kernel over the whole queries and over only the lists read before "
                         "the cut (what reading those alone costs, against the postings' share)")
    args = ap.parse_args()
    if args.queries == "scifact":
        from scripts.bench_maxscore_route import beir_test_queries

        index, queries = beir_test_queries(args.index, args.dataset)
    else:
        index, queries = bm25_queries(args.index, args.queries, args.n)
    heads: list | None = [] if args.time_heads else None
    print({"index": str(args.index), "set": args.queries, "seed_docs": args.seed_docs,
           "seed_after": args.seed_after, **model(index, queries, seed_docs=args.seed_docs,
                                                   seed_after=args.seed_after, heads=heads,
                                                   bitmap_share=args.bitmaps, bit_cost=args.bit_cost,
                                                   best_first=args.best_first)})
    if args.time_heads:
        print(time_heads(index, queries, heads))
    return 0


def time_heads(index, queries, heads, rounds: int = 3) -> dict:
    """Exhaustive ms a query over the whole queries and over their heads (rounds alternating,
    one query a call, best round of each), and the heads' share of the postings."""
    import time

    def run(qs):
        t0 = time.perf_counter()
        for q in qs:
            index.search_many([q], 10, "exhaustive", checked=True)
        return (time.perf_counter() - t0) * 1e3 / len(qs)

    run(queries[:10])
    times = [(run(queries), run(heads)) for _ in range(rounds)]
    whole, part = min(t[0] for t in times), min(t[1] for t in times)
    off = index.uncompressed().offsets
    postings = lambda qs: sum(int(off[t + 1] - off[t]) for terms, _ in qs for t in terms.tolist())  # noqa: E731
    return {"exhaustive_ms": round(whole, 3), "exhaustive_over_heads_ms": round(part, 3),
            "heads_time_share": round(part / whole, 3), "heads_postings_share": round(postings(heads) / postings(queries), 3)}


if __name__ == "__main__":
    sys.exit(main())
