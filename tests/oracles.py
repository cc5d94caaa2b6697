"""Exact references the fast structures are checked against (plain numpy, no kernel)."""

from __future__ import annotations

import numpy as np


def dense_scores(index, query: dict[str, float]) -> np.ndarray:
    """float32 score of every document of an InvertedIndex for ``{term: weight}``, by numpy."""
    acc = np.zeros(index.num_docs, dtype=np.float32)
    terms, weights = index.encode(query)
    for t, w in zip(terms.tolist(), weights.tolist()):
        s, e = index.offsets[t], index.offsets[t + 1]
        acc[index.docs[s:e]] += np.float32(w) * index.impacts[s:e].astype(np.float32)
    return acc / np.float32(index.scale) if index.scale else acc


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """Ids of the k best positive scores: score descending, then id ascending (Lucene's order)."""
    hits = np.flatnonzero(scores > 0)
    return sorted(hits.tolist(), key=lambda i: (-scores[i], i))[:k]


GUARD = 8


def guarded_search(index, queries, k: int, mode: int, approx: float = 1.0, fn=None, block_cost: float = 0.0):
    """Call the batch kernel (``fn``: default the compiled one) with every scratch buffer followed
    by sentinels; assert nothing was written past them and scratch came back zeroed.
    Returns (keys per query, counts, blocks scored)."""
    from indexing import kernels

    fn = fn or kernels.search_queries
    n, shift = index.num_docs, index.shift
    n_blocks, width = (n >> shift) + 1, 1 << shift

    def buf(size, dtype, fill):
        return np.full(size + GUARD, fill, dtype=dtype)

    acc, seen, touched = buf(n, np.float32, 0), buf(n, np.uint8, 0), buf(n, np.int32, -7)
    ub, ub_seen = buf(n_blocks, np.float32, 0), buf(n_blocks, np.uint8, 0)
    cand, order = buf(n_blocks, np.int64, -7), buf(n_blocks, np.uint64, 7)
    loc_acc, loc_seen, loc_list = buf(width, np.float32, 0), buf(width, np.uint8, 0), buf(width, np.int32, -7)
    heap = buf(k, np.uint64, 7)
    checked = [index._checked(t, w) for t, w in queries]
    q_ptr = np.zeros(len(checked) + 1, np.int64)
    np.cumsum([len(t) for t, _ in checked], out=q_ptr[1:])
    q_terms = np.concatenate([t for t, _ in checked] + [np.empty(0, np.int32)]).astype(np.int32)
    q_weights = np.concatenate([w for _, w in checked] + [np.empty(0, np.float32)]).astype(np.float32)
    out_keys = np.zeros((len(checked), k), np.uint64)
    counts = np.zeros(len(checked), np.int64)
    scored = np.zeros(len(checked), np.int64)
    with np.errstate(over="ignore"):
        fn(0, len(checked), q_ptr, q_terms, q_weights, k, mode, np.float32(approx), np.float64(block_cost),
           index.offsets, index.docs,
           index.impacts, index.tie_rank, *index.ensure_blockmax(), shift, acc[:n], seen[:n], touched[:n],
           ub[:n_blocks], ub_seen[:n_blocks], cand[:n_blocks], order[:n_blocks], loc_acc[:width], loc_seen[:width],
           loc_list[:width], heap[:k], out_keys, counts, scored)
    for name, array, fill in (("touched", touched, -7), ("cand", cand, -7), ("order", order, 7),
                              ("loc_list", loc_list, -7), ("heap", heap, 7)):
        assert (array[len(array) - GUARD:] == fill).all(), f"the kernel wrote past {name}"
    for name, array in (("acc", acc), ("seen", seen), ("ub", ub), ("ub_seen", ub_seen), ("loc_acc", loc_acc),
                        ("loc_seen", loc_seen)):
        assert not array.any(), f"scratch {name} not left clean"
    return [out_keys[q, :counts[q]] for q in range(len(checked))], counts, scored
