"""Exact references the fast structures are checked against (plain numpy, no kernel)."""

from __future__ import annotations

import numpy as np


def dense_scores(index, query: dict[str, float]) -> np.ndarray:
    """float32 score of every document of an InvertedIndex for ``{term: weight}``, by numpy
    (packed postings are decoded into CSR first)."""
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


def guarded_search(index, queries, k: int, mode: int, approx: float = 1.0, fn=None, block_cost: float = 0.0,
                   arena: int | None = None, ms_terms: int | None = None):
    """Call the batch kernel (``fn``: default the compiled one for the index's layout) with every
    scratch buffer followed by sentinels; assert nothing was written past them and scratch came
    back zeroed. ``arena``: postings the packed kernel may keep decoded (default: all of them);
    ``ms_terms``: MaxScore for pruned queries up to this long (default: the index's setting).
    Returns (keys per query, counts, blocks scored); the packed kernel's routes in ``guarded_search.route``."""
    from indexing import kernels

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
    guarded = [("touched", touched, -7), ("cand", cand, -7), ("order", order, 7), ("loc_list", loc_list, -7),
               ("heap", heap, 7)]
    clean = [("acc", acc), ("seen", seen), ("ub", ub), ("ub_seen", ub_seen), ("loc_acc", loc_acc),
             ("loc_seen", loc_seen)]
    with np.errstate(over="ignore"):
        if index.packed is None:
            fn = fn or kernels.search_queries
            fn(0, len(checked), q_ptr, q_terms, q_weights, k, mode, np.float32(approx), np.float64(block_cost), np.float64(kernels.BLOCKS_PER_HIT),
               index.offsets, index.docs,
               index.impacts, index.tie_rank, *index.ensure_blockmax(), shift, acc[:n], seen[:n], touched[:n],
               ub[:n_blocks], ub_seen[:n_blocks], cand[:n_blocks], order[:n_blocks], loc_acc[:width],
               loc_seen[:width], loc_list[:width], heap[:k], out_keys, counts, scored)
        else:
            from indexing.compress import CHUNK, NST

            p = index.packed
            fn = fn or kernels.search_packed
            rows = max(int(np.diff(q_ptr).max(initial=0)), 1)
            ub_mask = buf(n_blocks, np.uint64, 0)
            qstate = np.full((rows + 1, NST), -7, np.int64)
            cache_docs = np.full((rows + 1, CHUNK), -7, np.int32)
            cache_vals = np.full((rows + 1, CHUNK), -7, np.float32)
            size = p.num_postings if arena is None else arena
            arena_docs, arena_vals = buf(size, np.int32, -7), buf(size, np.float32, -7)
            arena_blocks = buf(size, np.int64, -7)
            route = np.full(len(checked), -1, np.int8)
            sb = index.ensure_superblocks() if mode else index._NO_SUPER
            n_super = (n_blocks >> index.superblock_shift) + 1
            sub, sub_seen, sub_cand = buf(n_super, np.float32, 0), buf(n_super, np.uint8, 0), buf(n_super, np.int64, -7)
            fn(0, len(checked), q_ptr, q_terms, q_weights, k, mode, np.float32(approx), np.float64(block_cost), np.float64(kernels.BLOCKS_PER_HIT),
               p.stream, p.term_ptr, p.table, p.float_bits, p.norms, p.norm_table, index.tie_rank, shift,
               acc[:n], seen[:n], touched[:n], ub[:n_blocks], ub_seen[:n_blocks], ub_mask[:n_blocks],
               cand[:n_blocks], order[:n_blocks], loc_acc[:width], loc_seen[:width], loc_list[:width], heap[:k],
               qstate[:rows], cache_docs[:rows], cache_vals[:rows], arena_docs[:size], arena_vals[:size],
               arena_blocks[:size], index.whole, index.maxscore_terms if ms_terms is None else ms_terms,
               np.float64(index.seek_cost), out_keys, counts, scored, route,
               *sb, index.superblock_shift, sub[:n_super], sub_seen[:n_super], sub_cand[:n_super])
            guarded_search.route = route
            guarded += [("arena_docs", arena_docs, -7), ("arena_vals", arena_vals, -7),
                        ("arena_blocks", arena_blocks, -7), ("sub_cand", sub_cand, -7)]
            clean += [("ub_mask", ub_mask), ("sub", sub), ("sub_seen", sub_seen)]
            for name, array in (("qstate", qstate), ("cache_docs", cache_docs), ("cache_vals", cache_vals)):
                assert (array[rows] == -7).all(), f"the kernel wrote past {name}"
    for name, array, fill in guarded:
        assert (array[len(array) - GUARD:] == fill).all(), f"the kernel wrote past {name}"
    for name, array in clean:
        assert not array.any(), f"scratch {name} not left clean"
    if k > kernels.SORT_IN_KERNEL:  # (a large k's keys leave the kernels unsorted, as search_many's do)
        kernels.sort_rows(out_keys, 0, len(checked))  # best last
        return [out_keys[q, k - max(counts[q], 0):][::-1] for q in range(len(checked))], counts, scored
    return [out_keys[q, :counts[q]] for q in range(len(checked))], counts, scored
