"""Compiled search kernels for impact indexes (numba; plain Python when numba is missing):
exhaustive term-at-a-time scoring, exact block-max pruning, an approximate mode, and batches of
queries searched with every per-query step compiled (the GIL is released, so threads scale).

Exhaustive: every posting of every query term is added into a per-thread accumulator; each
document is recorded once, the first time one of its postings is read, whatever its
contribution (zero, denormal or huge), and doc ids are bounds-checked as they are read, so a
corrupt index fails the query (-1) instead of writing outside a buffer. The k best keys are kept
in a min-heap.

Documents are cut into blocks of ``2**shift`` consecutive internal ids. For each term the index
keeps its *block-max list*: every block holding one of its postings, the largest impact there,
and where in the term's postings that block starts (BMP, Mallia et al. SIGIR 2024; the bound
works best when similar documents share blocks: ``indexing.reorder``).

A query (terms ``t_j``, weights ``w_j > 0``) is searched exactly as follows:

1. every block's upper bound ``UB[b] = sum_j w_j * blockmax[t_j][b]`` is accumulated, in the
   query's term order and in float32 like the scores themselves: rounding is monotone, so
   ``UB[b] >= score(d)`` for every document ``d`` of ``b``, bit for bit;
2. the few blocks with the highest bounds are scored first (exactly: postings of the block,
   the same float32 sums as the exhaustive kernel), giving a threshold ``theta`` = the k-th best
   score once k documents matched;
3. the blocks with ``UB >= theta`` are sorted by bound and scored in that order, ``theta``
   rising as better documents are found, until the next bound is below ``theta``: no document
   left can reach the top k, and a document tied with the k-th score is still seen, so the tie
   order (``tie_rank``) is kept. The result equals the exhaustive one: same documents, same
   scores, same order.

When the blocks left would cost more than reading every posting of the query (few documents
per block for its terms, or a large k), the query is read exhaustively instead: exact either way.

``approx = a`` in (0, 1] stops when ``a * UB < theta`` instead (``a = 1`` is exact); smaller
values skip blocks that are unlikely, not impossible, to hold a top-k document.

Keys pack (float32 score bits << 32) | (2**32 - 1 - tie rank): positive float32 bit patterns
order like the numbers, so the largest keys are the best hits, ties going to the lower rank.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a core dependency; the fallback keeps us usable
    HAVE_NUMBA = False

_LOW = np.uint64(0xFFFFFFFF)
SCORED_FIRST = 8  # blocks scored before the threshold is used
BLOCK_COST = 32  # postings' worth of work to score one block for one query term (binary search, setup)


def _build_counts(offsets, docs, shift, counts):
    for t in range(offsets.shape[0] - 1):
        last = -1
        c = 0
        for p in range(offsets[t], offsets[t + 1]):
            b = docs[p] >> shift
            if b != last:
                c += 1
                last = b
        counts[t] = c


def _build_fill(offsets, docs, impacts, shift, ptr, block, bmax, start):
    for t in range(offsets.shape[0] - 1):
        q = ptr[t] - 1
        last = -1
        base = offsets[t]
        for p in range(base, offsets[t + 1]):
            b = docs[p] >> shift
            if b != last:
                q += 1
                block[q] = b
                bmax[q] = impacts[p]
                start[q] = p - base
                last = b
            elif impacts[p] > bmax[q]:
                bmax[q] = impacts[p]


def _heap_push(heap, size, cap, key):
    """Min-heap of at most ``cap`` uint64 keys (the ``cap`` largest seen); returns the new size."""
    if size < cap:
        i = size
        heap[i] = key
        size += 1
        while i > 0:
            parent = (i - 1) >> 1
            if heap[parent] <= heap[i]:
                break
            heap[parent], heap[i] = heap[i], heap[parent]
            i = parent
        return size
    if key <= heap[0]:
        return size
    heap[0] = key
    i = 0
    while True:
        left = 2 * i + 1
        right = left + 1
        smallest = i
        if left < size and heap[left] < heap[smallest]:
            smallest = left
        if right < size and heap[right] < heap[smallest]:
            smallest = right
        if smallest == i:
            break
        heap[smallest], heap[i] = heap[i], heap[smallest]
        i = smallest
    return size


def _exhaustive(offsets, docs, impacts, q_terms, q_weights, tie_rank, k, acc, seen, touched, heap):
    """Every posting of every query term; the k best keys left in ``heap`` (returns their count,
    -1 for a doc id outside the collection). Scratch as in ``kernels.accumulate``."""
    num_docs = acc.shape[0]
    n_touched = 0
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        w = q_weights[j]
        for p in range(offsets[t], offsets[t + 1]):
            d = docs[p]
            if d < 0 or d >= num_docs:
                for i in range(n_touched):
                    acc[touched[i]] = 0.0
                    seen[touched[i]] = 0
                return -1
            if seen[d] == 0:
                seen[d] = 1
                touched[n_touched] = d
                n_touched += 1
            acc[d] += w * np.float32(impacts[p])
    bits = acc.view(np.uint32)
    size = 0
    for i in range(n_touched):
        d = touched[i]
        if acc[d] > 0.0:
            size = _heap_push(heap, size, k, (np.uint64(bits[d]) << np.uint64(32)) | (_LOW - np.uint64(tie_rank[d])))
        acc[d] = 0.0
        seen[d] = 0
    return size


def _find(ids, lo, hi, v):
    """Index of ``v`` in the ascending ``ids[lo:hi]``, or -1."""
    while lo < hi:
        mid = (lo + hi) >> 1
        x = ids[mid]
        if x < v:
            lo = mid + 1
        elif x > v:
            hi = mid
        else:
            return mid
    return -1


def _threshold(heap, size, k):
    """The k-th best score so far (0 until k documents matched)."""
    if size < k:
        return np.float32(0.0)
    return np.uint32(heap[0] >> np.uint64(32)).view(np.float32)


def _score_block(b, offsets, docs, impacts, bm_ptr, bm_block, bm_start, shift, q_terms, q_weights, tie_rank, k,
                 heap, size, loc_acc, loc_seen, loc_list):
    """Score the documents of block ``b`` exactly (each query term's entry for the block found
    by binary search in its block list) and push them into the heap; returns the new heap size,
    or -1 when the block-max data does not describe the postings (a corrupt index)."""
    base = b << shift
    width = loc_acc.shape[0]
    n_loc = 0
    status = 0
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        p = _find(bm_block, bm_ptr[t], bm_ptr[t + 1], b)
        if p < 0:
            continue
        start = offsets[t] + bm_start[p]
        end = offsets[t] + bm_start[p + 1] if p + 1 < bm_ptr[t + 1] else offsets[t + 1]
        if start > end or end > offsets[t + 1]:
            status = -1
            break
        w = q_weights[j]
        for pos in range(start, end):
            off = docs[pos] - base
            if off < 0 or off >= width or docs[pos] >= tie_rank.shape[0]:
                status = -1
                break
            if loc_seen[off] == 0:
                loc_seen[off] = 1
                loc_list[n_loc] = off
                n_loc += 1
            loc_acc[off] += w * np.float32(impacts[pos])
        if status < 0:
            break
    bits = loc_acc.view(np.uint32)
    for i in range(n_loc):
        off = loc_list[i]
        if status == 0 and loc_acc[off] > 0.0:
            d = base + off
            size = _heap_push(heap, size, k, (np.uint64(bits[off]) << np.uint64(32)) | (_LOW - np.uint64(tie_rank[d])))
        loc_acc[off] = 0.0
        loc_seen[off] = 0
    return size if status == 0 else -1


def _pruned(offsets, docs, impacts, bm_ptr, bm_block, bm_max, bm_start, shift, q_terms, q_weights, tie_rank, k,
            approx, block_cost, ub, ub_seen, cand, order, heap, loc_acc, loc_seen, loc_list):
    """Block-max search of one query (module docstring); the k best keys are left in ``heap``.

    Returns (heap size, blocks scored): size -1 for a corrupt index, -2 when the blocks scored
    so far cost more than reading every posting of the query would (``block_cost`` postings per
    block and term; 0: never; the caller then reads them). ``ub`` (float32, zeros) and
    ``ub_seen`` (uint8, zeros) have one entry per block and come back zeroed; ``cand`` and
    ``order`` hold block ids / packed keys (one per block); ``loc_*`` one per document of a
    block (zeroed)."""
    n_cand = 0
    n_blocks = ub.shape[0]
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        w = q_weights[j]
        for p in range(bm_ptr[t], bm_ptr[t + 1]):
            b = bm_block[p]
            if b >= n_blocks:
                for i in range(n_cand):
                    ub[cand[i]] = 0.0
                    ub_seen[cand[i]] = 0
                return -1, 0
            if ub_seen[b] == 0:
                ub_seen[b] = 1
                cand[n_cand] = b
                n_cand += 1
            ub[b] += w * np.float32(bm_max[p])
    postings = 0
    for j in range(q_terms.shape[0]):
        postings += offsets[q_terms[j] + 1] - offsets[q_terms[j]]
    budget = postings / (block_cost * q_terms.shape[0]) if block_cost > 0 and q_terms.shape[0] > 0 else -1.0
    ub_bits = ub.view(np.uint32)
    # 1. the blocks with the best few bounds first, for a threshold
    first = min(SCORED_FIRST, n_cand)
    n_first = 0
    for i in range(n_cand):
        b = cand[i]
        n_first = _heap_push(order, n_first, first, (np.uint64(ub_bits[b]) << np.uint64(32)) | np.uint64(b))
    size = 0
    scored = 0
    status = 0
    for i in range(n_first):
        b = np.int64(order[i] & _LOW)
        ub_seen[b] = 2  # scored
        size = _score_block(b, offsets, docs, impacts, bm_ptr, bm_block, bm_start, shift, q_terms, q_weights,
                            tie_rank, k, heap, size, loc_acc, loc_seen, loc_list)
        scored += 1
        if size < 0:
            status = -1
            break
    if status == 0:
        # 2. the blocks that may still hold a top-k document, best bound first, while one may
        theta = _threshold(heap, size, k)
        n_left = 0
        for i in range(n_cand):
            b = cand[i]
            if ub_seen[b] == 1 and ub[b] > 0.0 and approx * ub[b] >= theta:
                order[n_left] = (np.uint64(ub_bits[b]) << np.uint64(32)) | np.uint64(b)
                n_left += 1
        left = np.sort(order[:n_left])
        for i in range(n_left - 1, -1, -1):
            key = left[i]
            if approx * np.uint32(key >> np.uint64(32)).view(np.float32) < _threshold(heap, size, k):
                break
            if budget >= 0 and scored >= budget:
                status = -2
                break
            size = _score_block(np.int64(key & _LOW), offsets, docs, impacts, bm_ptr, bm_block, bm_start, shift,
                                q_terms, q_weights, tie_rank, k, heap, size, loc_acc, loc_seen, loc_list)
            scored += 1
            if size < 0:
                status = -1
                break
    for i in range(n_cand):
        b = cand[i]
        ub[b] = 0.0
        ub_seen[b] = 0
    return (size if status == 0 else status), scored


def _search_queries(lo, hi, q_ptr, q_terms, q_weights, k, strategy, approx, block_cost, offsets, docs, impacts,
                    tie_rank, bm_ptr, bm_block, bm_max, bm_start, shift, acc, seen, touched, ub, ub_seen, cand,
                    order, loc_acc, loc_seen, loc_list, heap, out_keys, out_counts, out_scored):
    """Queries ``lo..hi-1`` of a batch (CSR ``q_ptr``/``q_terms``/``q_weights``); strategy 0:
    exhaustive, 1: block-max (``approx`` 1.0 exact; a query whose surviving blocks would cost more
    than its postings, counting ``block_cost`` postings per block and term, is read exhaustively
    instead, as exact; 0: never). Each query's keys, best first, go to row q of ``out_keys``
    (its count to ``out_counts[q]``, -1 for a corrupt index; ``out_scored[q]``: blocks scored,
    -1 when read exhaustively)."""
    for q in range(lo, hi):
        terms = q_terms[q_ptr[q]:q_ptr[q + 1]]
        weights = q_weights[q_ptr[q]:q_ptr[q + 1]]
        if strategy == 0:
            size = _exhaustive(offsets, docs, impacts, terms, weights, tie_rank, k, acc, seen, touched, heap)
            scored = 0
        else:
            size, scored = _pruned(offsets, docs, impacts, bm_ptr, bm_block, bm_max, bm_start, shift, terms, weights,
                                   tie_rank, k, approx, block_cost, ub, ub_seen, cand, order, heap, loc_acc, loc_seen,
                                   loc_list)
            if size == -2:  # exact either way: the postings are cheaper to read than the blocks
                size = _exhaustive(offsets, docs, impacts, terms, weights, tie_rank, k, acc, seen, touched, heap)
                scored = -1
        out_counts[q] = size
        out_scored[q] = scored
        if size > 0:
            best = np.sort(heap[:size])
            for i in range(size):
                out_keys[q, i] = best[size - 1 - i]


if HAVE_NUMBA:
    _heap_push = njit(nogil=True, cache=True)(_heap_push)
    _find = njit(nogil=True, cache=True)(_find)
    _threshold = njit(nogil=True, cache=True)(_threshold)
    _exhaustive = njit(nogil=True, cache=True)(_exhaustive)
    _score_block = njit(nogil=True, cache=True)(_score_block)
    _pruned = njit(nogil=True, cache=True)(_pruned)
    search_queries = njit(nogil=True, cache=True)(_search_queries)
    build_counts = njit(nogil=True, cache=True)(_build_counts)
    build_fill = njit(nogil=True, cache=True)(_build_fill)
else:  # pragma: no cover
    search_queries, build_counts, build_fill = _search_queries, _build_counts, _build_fill


def build_blockmax(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, shift: int):
    """(ptr int64[terms+1], block uint32, max (impact dtype), start uint32 relative to the term's
    first posting): each term's block-max list, blocks ascending."""
    n_terms = len(offsets) - 1
    counts = np.zeros(n_terms, dtype=np.int64)
    build_counts(offsets, docs, shift, counts)
    ptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    total = int(ptr[-1])
    block = np.empty(total, dtype=np.uint32)
    bmax = np.empty(total, dtype=impacts.dtype)
    start = np.empty(total, dtype=np.uint32)
    build_fill(offsets, docs, impacts, shift, ptr, block, bmax, start)
    return ptr, block, bmax, start


def decode_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Packed keys -> (tie ranks int32, scores float32)."""
    ranks = (_LOW - (keys & _LOW)).astype(np.int32)
    scores = (keys >> np.uint64(32)).astype(np.uint32).view(np.float32)
    return ranks, scores
