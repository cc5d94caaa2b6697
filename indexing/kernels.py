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

When the blocks would cost more than reading every posting of the query (``BLOCK_COST``
postings' worth per block and query term), the query is read exhaustively instead, exact either
way: decided before the bounds pass (``per_hit * k`` blocks expected, learnt by the index from
the queries it searched), again once the first blocks have set the threshold (every block left
whose bound reaches it counted), and while scoring.

``approx = a`` in (0, 1] stops when ``a * UB < theta`` instead (``a = 1`` is exact); smaller
values skip blocks that are unlikely, not impossible, to hold a top-k document.

On large collections (packed postings) the terms with long block-max lists are also summarised
per *superblock* of ``2**SB_SHIFT`` blocks, derived at load: superblocks are bounded first and
refined best first, so a common term's entries are decoded only where they can matter
(``_pruned_super``, below); the result is the same.

Over packed postings, a query of at most ``MAXSCORE_TERMS`` terms (BM25's short queries) is
read with MaxScore term at a time instead (``_maxscore_taat``, below: the terms added largest
bound first, the lists left unread once their bounds sum below the k-th partial score, the
candidates scored exactly), again with the exhaustive kernel's scores bit for bit.

Keys pack (float32 score bits << 32) | (2**32 - 1 - tie rank): positive float32 bit patterns
order like the numbers, so the largest keys are the best hits, ties going to the lower rank.

The same kernels exist for packed postings (``indexing.compress``; ``search_packed``), which
decode chunks of 128 postings as they read them: the same bounds, accumulated in the same
order, the same blocks scored, the same scores. Their decoding functions live here too (numba's
cache recompiles a function when its own file changes, not when a function it calls from
another file does). In hot loops, helpers are written out by hand rather than called: a numba
call with array arguments costs tens of nanoseconds (reference counts), more than the work.
"""

from __future__ import annotations

import math

import numpy as np

try:
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a core dependency; the fallback keeps us usable
    HAVE_NUMBA = False

_LOW = np.uint64(0xFFFFFFFF)
SCORED_FIRST = 8  # blocks scored before the threshold is used
BLOCK_COST = 48  # postings' worth of work to score one block for one query term (measured: 1M SPLADE-like)
MAXSCORE_TERMS = 16  # an exact pruned query of up to this many terms is read with MaxScore, term at a time
MAXSCORE_TERMS_BM25 = 1 << 30  # ... on a BM25 index: every one (block-max bounds do not pay there: queries shaped
# like SciFact's claims of 17-21 terms on BM25 1M, 0.70-0.78x exhaustive by block-max, 1.61-1.91x by MaxScore)
ROUTE_EXHAUSTIVE, ROUTE_BLOCKMAX, ROUTE_MAXSCORE, ROUTE_HEADS = 0, 1, 2, 3  # how a query was read (InvertedIndex.last_route)
BLOCKS_PER_HIT = 4  # blocks a top-k search scores per hit, before an index has measured its own
# (k = 10: 3.4 on 1M SPLADE-like with bp, 18 on BM25 1M; InvertedIndex.blocks_per_hit learns it)
NO_BLOCK = -(1 << 62)  # below any block of an int32 doc id, even a corrupt negative one


def _build_counts(offsets, docs, shift, counts):
    for t in range(offsets.shape[0] - 1):
        last = NO_BLOCK
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
        last = NO_BLOCK
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


SELECT_PER_HIT = 16  # a top-k of at least SELECT_MIN_K from at most this many documents per hit: partition
SELECT_MIN_K = 64  # (measured: k = 1000 of 4,000 keys, partition + sort 21 us, a heap 105 us; from ~25k up the heap wins)


def _top_keys(acc, seen, touched, n_touched, tie_rank, k, heap):
    """The k best keys of the touched documents into ``heap[:size]`` (returns size; the order
    is the caller's to sort: a min-heap, or any order after a partition), their accumulator and
    seen flags zeroed. Keys pushed into the heap in document order replace its minimum about
    ``k ln(n / k)`` times: for a large k and few documents a partition is cheaper; for many
    documents most keys fall below the heap's minimum and are rejected before any call."""
    bits = acc.view(np.uint32)
    size = 0
    if k >= SELECT_MIN_K and n_touched <= SELECT_PER_HIT * k:  # (fewer than k: all of them, unsorted)
        keys = np.empty(n_touched, dtype=np.uint64)
        m = 0
        for i in range(n_touched):
            d = touched[i]
            if acc[d] > 0.0:
                keys[m] = (np.uint64(bits[d]) << np.uint64(32)) | (_LOW - np.uint64(tie_rank[d]))
                m += 1
            acc[d] = 0.0
            seen[d] = 0
        return _select(keys, m, k, heap)
    floor = np.uint64(0)  # the heap's smallest score bits once full: a document below it is out, its tie rank
    for i in range(n_touched):  # unread (a positive float's bits grow with it)
        d = touched[i]
        b = np.uint64(bits[d])
        if acc[d] > 0.0 and b >= floor:
            size, floor = _offer(heap, size, k, b, tie_rank[d])
        acc[d] = 0.0
        seen[d] = 0
    return size


def _select(keys, m, k, heap):
    """The k largest of ``keys[:m]`` into ``heap`` by a partition (any order); returns their count."""
    if m > k:
        top = np.partition(keys[:m], m - k)[m - k:]  # keys are distinct (tie ranks are)
    else:
        top = keys[:m]
    for i in range(top.shape[0]):
        heap[i] = top[i]
    return top.shape[0]


SORT_IN_KERNEL = 64  # a larger top k leaves the kernels unsorted and numpy sorts the batch's rows
# (``sort_rows``): numba's sort took 33 us for 1,000 keys, numpy's 6 (SciFact BM25 at k = 1000: 27 of
# a query's 83 us)


def _emit(heap, size, k, out_keys, q):
    """A query's ``size`` best keys into its row of ``out_keys``: best first when k <= SORT_IN_KERNEL,
    else in the heap's order (``sort_rows`` orders them, best last)."""
    if k <= SORT_IN_KERNEL:
        best = np.sort(heap[:size])
        for i in range(size):
            out_keys[q, i] = best[size - 1 - i]
    else:
        for i in range(size):
            out_keys[q, i] = heap[i]


def sort_rows(keys: np.ndarray, lo: int, hi: int) -> None:
    """Rows ``lo..hi`` of a batch's keys (zero past each row's count: no key is 0, a score is
    positive) sorted in place, ascending: each row's keys end it, best last (``decode_rows`` with
    ``best_last``). numpy's sort releases the GIL: each search thread sorts its own piece."""
    keys[lo:hi].sort(axis=1)


def _offer(heap, size, k, b, rank):
    """Offer the key of a document (score bits ``b``, tie rank) to the heap of the k best keys;
    (its new size, the smallest score bits it holds once full, else 0): a document below them is
    out without its tie rank read."""
    key = (b << np.uint64(32)) | (_LOW - np.uint64(rank))
    if size < k or key > heap[0]:
        size = _heap_push(heap, size, k, key)
    return size, (heap[0] >> np.uint64(32)) if size == k else np.uint64(0)


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
    return _top_keys(acc, seen, touched, n_touched, tie_rank, k, heap)


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


def _first_blocks(k, shift):
    """Blocks scored before the threshold is used: ``SCORED_FIRST``, or twice the blocks k
    documents fill, so that the threshold is a k-th score."""
    return max(SCORED_FIRST, 2 * ((k + (1 << shift) - 1) >> shift))


def _budget(postings, block_cost, n_terms):
    """Blocks worth scoring for a query reading ``postings`` (``block_cost`` postings a block and
    term; -1: no limit)."""
    return postings / (block_cost * n_terms) if block_cost > 0 and n_terms > 0 else -1.0


def _best_first(cand, n_cand, ub, order, first):
    """The ``first`` candidate blocks with the highest bounds, as keys (bound bits << 32 | block)
    in ``order[:n]``; returns n."""
    ub_bits = ub.view(np.uint32)
    n = 0
    for i in range(n_cand):
        b = cand[i]
        n = _heap_push(order, n, min(first, n_cand), (np.uint64(ub_bits[b]) << np.uint64(32)) | np.uint64(b))
    return n


def _blocks_left(cand, n_cand, ub, ub_seen, order, approx, theta):
    """The candidate blocks not scored yet whose bound (times ``approx``) reaches ``theta``, as
    keys in ``order``, sorted ascending (best last)."""
    ub_bits = ub.view(np.uint32)
    n = 0
    for i in range(n_cand):
        b = cand[i]
        if ub_seen[b] == 1 and ub[b] > 0.0 and approx * ub[b] >= theta:
            order[n] = (np.uint64(ub_bits[b]) << np.uint64(32)) | np.uint64(b)
            n += 1
    return np.sort(order[:n])


def _threshold(heap, size, k):
    """The k-th best score so far (0 until k documents matched)."""
    if size < k:
        return np.float32(0.0)
    return np.uint32(heap[0] >> np.uint64(32)).view(np.float32)


FLT_MAX = float(np.finfo(np.float32).max)


def _floor(score, shrink, n):
    """What a float64 bound, widened for float32 rounding by a relative factor only, is compared
    with to prune: the float32 ``score`` (a k-th best, partial or final) times ``shrink``, less
    ``8 (n + 2) 2**-149``. Where sums of ``n`` weighted terms are subnormal their rounding error is
    absolute (up to 2**-150 an operation), which no relative factor covers: with weights near
    1e-45, pruned searches lost documents tied at the k-th score. An infinite score (a sum that
    overflowed) counts as the largest float32, so every document whose sum may overflow too is
    scored and ties at inf keep the tie order (with weights near 1e38 they did not)."""
    return min(np.float64(score), FLT_MAX) * shrink - (n + 2) * 2.0 ** -146


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
            key = (np.uint64(bits[off]) << np.uint64(32)) | (_LOW - np.uint64(tie_rank[d]))
            if size < k or key > heap[0]:
                size = _heap_push(heap, size, k, key)
        loc_acc[off] = 0.0
        loc_seen[off] = 0
    return size if status == 0 else -1


def _pruned(offsets, docs, impacts, bm_ptr, bm_block, bm_max, bm_start, shift, q_terms, q_weights, tie_rank, k,
            approx, block_cost, per_hit, ub, ub_seen, cand, order, heap, loc_acc, loc_seen, loc_list):
    """Block-max search of one query (module docstring); the k best keys are left in ``heap``.

    Returns (heap size, blocks scored): size -1 for a corrupt index, -2 when the blocks would
    cost more than reading every posting of the query (``block_cost`` postings per block and
    term; 0: never; ``per_hit`` * k blocks expected at least; the caller then reads them, and
    the second value is the blocks known to be needed, 0 when the search did not start). ``ub`` (float32, zeros) and
    ``ub_seen`` (uint8, zeros) have one entry per block and come back zeroed; ``cand`` and
    ``order`` hold block ids / packed keys (one per block); ``loc_*`` one per document of a
    block (zeroed)."""
    postings = 0
    for j in range(q_terms.shape[0]):
        postings += offsets[q_terms[j] + 1] - offsets[q_terms[j]]
    budget = _budget(postings, block_cost, q_terms.shape[0])
    first = _first_blocks(k, shift)
    if budget >= 0 and max(first, per_hit * k) > budget:  # the postings cost less than the blocks
        return -2, 0
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
    # 1. the blocks with the best few bounds first, for a threshold
    n_first = _best_first(cand, n_cand, ub, order, first)
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
        left = _blocks_left(cand, n_cand, ub, ub_seen, order, approx, _threshold(heap, size, k))
        n_left = left.shape[0]
        if budget >= 0 and scored + n_left > budget:  # hopeless: read the postings now
            status = -2
            scored += n_left
            n_left = 0
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


def _search_queries(lo, hi, q_ptr, q_terms, q_weights, k, strategy, approx, block_cost, per_hit, offsets, docs,
                    impacts,
                    tie_rank, bm_ptr, bm_block, bm_max, bm_start, shift, acc, seen, touched, ub, ub_seen, cand,
                    order, loc_acc, loc_seen, loc_list, heap, out_keys, out_counts, out_scored):
    """Queries ``lo..hi-1`` of a batch (CSR ``q_ptr``/``q_terms``/``q_weights``); strategy 0:
    exhaustive, 1: block-max (``approx`` 1.0 exact; a query whose surviving blocks would cost more
    than its postings, counting ``block_cost`` postings per block and term, is read exhaustively
    instead, as exact; 0: never; ``per_hit``: blocks scored per hit, expected). Each query's keys,
    best first, go to row q of ``out_keys`` (its count to ``out_counts[q]``, -1 for a corrupt
    index; ``out_scored[q]``: blocks scored, or when read exhaustively -1 - the blocks it was
    known to need, -1 when unknown)."""
    for q in range(lo, hi):
        terms = q_terms[q_ptr[q]:q_ptr[q + 1]]
        weights = q_weights[q_ptr[q]:q_ptr[q + 1]]
        if strategy == 0:
            size = _exhaustive(offsets, docs, impacts, terms, weights, tie_rank, k, acc, seen, touched, heap)
            scored = 0
        else:
            size, scored = _pruned(offsets, docs, impacts, bm_ptr, bm_block, bm_max, bm_start, shift, terms, weights,
                                   tie_rank, k, approx, block_cost, per_hit, ub, ub_seen, cand, order, heap, loc_acc,
                                   loc_seen, loc_list)
            if size == -2:  # exact either way: the postings are cheaper to read than the blocks
                size = _exhaustive(offsets, docs, impacts, terms, weights, tie_rank, k, acc, seen, touched, heap)
                scored = -1 - scored
        out_counts[q] = size
        out_scored[q] = scored
        if size > 0:
            _emit(heap, size, k, out_keys, q)


# -- packed postings: decoding (the layout is described in indexing.compress) ------------------

CHUNK = 128  # postings per chunk
WHOLE = 2048  # a term of up to this many postings is decoded whole when a block needs it
PAD = 4  # zero bytes after the last term: the bit reader loads 4 bytes at a time
MODE_TABLE, MODE_VALUES, MODE_BM25 = 0, 1, 2  # how a term's value codes become impacts
FLAG_BLOCKMAX = 4
# term state, one row per query term (int64), filled by open_term
ST_DF, ST_MODE, ST_BASE, ST_SIZE, ST_NC, ST_DIR, ST_DWD, ST_OFFS, ST_DWO, ST_BM, ST_M, ST_CHUNKS, ST_END, \
    ST_CACHED, ST_CACHED_N, ST_VALUES, ST_VPOS, ST_VW, ST_ARENA, ST_BLK, ST_BLKN, ST_POS, ST_DOC = range(23)
NST = 23  # ST_POS, ST_DOC: a MaxScore cursor (position in the decoded chunk, its doc id)


def _nbytes(n, w):
    return (n * w + 7) >> 3


def bm25_impact(idf, tf, norm):
    """Lucene's BM25 term score as our BM25 builder computes it, in float32: ``idf * tf /
    (tf + k1 * (1 - b + b * dl / avgdl))`` written as ``idf - idf / (1 + tf * norm)``. Works on
    numpy float32 arrays and, compiled, on float32 scalars: the same IEEE operations either way."""
    return idf - idf / (np.float32(1.0) + tf * norm)


def _get_varint(buf, pos, end):
    """(value, next position); (-1, -1) when it runs past ``end`` or over 9 bytes."""
    v = 0
    shift = 0
    while pos < end and shift < 63:
        b = np.int64(buf[pos])
        pos += 1
        v |= (b & 127) << shift
        if b < 128:
            return v, pos
        shift += 7
    return -1, -1


def _bits_at(buf, pos, i, w):
    """Value ``i`` of a packed array of ``w``-bit values starting at byte ``pos``: five bytes
    read whatever the width (no branch on it; up to 4 past the value's last byte: every packed
    array of a term is followed by more of the term or by the stream's PAD)."""
    if w == 0:
        return 0
    bit = i * w
    p = pos + (bit >> 3)
    v = (np.uint64(buf[p]) | (np.uint64(buf[p + 1]) << np.uint64(8)) | (np.uint64(buf[p + 2]) << np.uint64(16))
         | (np.uint64(buf[p + 3]) << np.uint64(24)) | (np.uint64(buf[p + 4]) << np.uint64(32)))
    return np.int64((v >> np.uint64(bit & 7)) & ((np.uint64(1) << np.uint64(w)) - np.uint64(1)))


def _refill(buf, pos, acc, nb):
    """A bit buffer (``acc`` holding ``nb`` bits) with the next 32 bits of ``buf`` from byte
    ``pos`` added above them; ``nb < 0`` is a first load that drops the ``-nb`` bits before the
    wanted ones. Returns (acc, nb, pos) after it. May read 3 bytes past the last wanted byte: the
    stream's PAD."""
    word = (np.uint64(buf[pos]) | (np.uint64(buf[pos + 1]) << np.uint64(8)) | (np.uint64(buf[pos + 2]) << np.uint64(16))
            | (np.uint64(buf[pos + 3]) << np.uint64(24)))
    if nb < 0:
        acc = word >> np.uint64(-nb)
    else:
        acc |= word << np.uint64(nb)
    return acc, nb + 32, pos + 4


def _take(buf, pos, acc, nb, w, mask):
    """The next ``w``-bit value (``mask``: its ``w`` low bits set, ``w <= 32``) of the bit buffer
    (``acc``, ``nb`` bits, refilled from byte ``pos``: ``_refill``, ``nb < 0`` its first load);
    returns (value, acc, nb, pos) after it."""
    while nb < w:  # (twice only when a first load's offset leaves fewer bits than the value)
        acc, nb, pos = _refill(buf, pos, acc, nb)
    return np.int64(acc & mask), acc >> np.uint64(w), nb - w, pos


def _chunk_header(buf, pos, end):
    """(doc gap width, value width, header bytes) of the chunk at ``pos``; (-1, -1, 0) when it
    runs past ``end`` or a width is above 32. One byte ``wd | wv << 6`` when wv < 3, else
    ``wd | 3 << 6`` and a byte ``wv``."""
    if pos >= end:
        return -1, -1, 0
    h = np.int64(buf[pos])
    wd = h & 63
    wv = h >> 6
    n = 1
    if wv == 3:
        if pos + 1 >= end:
            return -1, -1, 0
        wv = np.int64(buf[pos + 1])
        n = 2
    if wd > 32 or wv > 32:
        return -1, -1, 0
    return wd, wv, n


def _open_term(buf, term_ptr, t, num_docs, table_len, norms_len, norm_table_len, st):
    """Parse term ``t``'s header into ``st`` (ST_* fields); returns 0, or -1 when it is corrupt.
    A term without postings gets df 0."""
    start = np.int64(term_ptr[t])
    end = np.int64(term_ptr[t + 1])
    if end + PAD > buf.shape[0]:
        return -1
    st[ST_CACHED] = -1
    st[ST_CACHED_N] = 0
    st[ST_VALUES] = -1
    st[ST_ARENA] = -1
    st[ST_BLKN] = 0
    st[ST_END] = end
    if end <= start:
        st[ST_DF] = 0
        st[ST_NC] = 0
        st[ST_M] = 0
        st[ST_BM] = -1
        return 0 if end == start else -1
    head, pos = _get_varint(buf, start, end)
    df = head >> 3
    flags = head & 7
    mode = flags & 3
    if head < 0 or df < 1 or df > num_docs or mode > MODE_BM25:
        return -1
    base = 0
    size = 0
    if mode == MODE_TABLE:
        base, pos = _get_varint(buf, pos, end)
        if base < 0:
            return -1
        size, pos = _get_varint(buf, pos, end)
        if size < 1 or size > table_len or base > table_len - size:
            return -1
    elif mode == MODE_BM25:
        base, pos = _get_varint(buf, pos, end)
        if base < 0 or base >= table_len or norms_len != num_docs or norm_table_len != 256:
            return -1
        size = 1
    nc = (df + CHUNK - 1) // CHUNK
    st[ST_DF] = df
    st[ST_MODE] = mode
    st[ST_BASE] = base
    st[ST_SIZE] = size
    st[ST_NC] = nc
    st[ST_DIR] = 0
    st[ST_DWD] = 0
    st[ST_OFFS] = 0
    st[ST_DWO] = 0
    if nc > 1:
        if pos + 2 > end:
            return -1
        dwd = np.int64(buf[pos])
        dwo = np.int64(buf[pos + 1])
        pos += 2
        if dwd > 32 or dwo > 32:
            return -1
        st[ST_DIR] = pos
        st[ST_DWD] = dwd
        pos += _nbytes(nc - 1, dwd)
        st[ST_OFFS] = pos
        st[ST_DWO] = dwo
        pos += _nbytes(nc - 1, dwo)
        if pos > end:
            return -1
    st[ST_BM] = -1
    st[ST_M] = 0
    if flags & FLAG_BLOCKMAX:
        m, pos = _get_varint(buf, pos, end)
        if m < 1 or m > df:
            return -1
        nbytes, pos = _get_varint(buf, pos, end)
        if nbytes < 2 or nbytes > end - pos:
            return -1
        wg = np.int64(buf[pos])
        wv = np.int64(buf[pos + 1])
        if wg > 32 or wv > 32:
            return -1
        need = 2 + _nbytes(m, wg) + _nbytes(m, wv)
        if mode == MODE_BM25:
            need += m
        if need != nbytes:
            return -1
        st[ST_BM] = pos
        st[ST_M] = m
        pos += nbytes
    if pos > end:
        return -1
    st[ST_CHUNKS] = pos
    return 0


def _bm25p(idf, p):
    """``bm25_impact`` from the product ``p = tf * norm`` (float32, rounded as there): the
    impact is a non-decreasing function of ``p``, so a block's largest impact is that of its
    largest product."""
    return idf - idf / (np.float32(1.0) + p)


def _impact(mode, idf, v):
    """The impact of a decoded value: itself, or for a BM25 term its product turned into one."""
    return _bm25p(idf, v) if mode == MODE_BM25 else v


def _idf(st, table):
    return np.float32(table[st[ST_BASE]]) if st[ST_MODE] == MODE_BM25 else np.float32(0.0)


def _float_of_bits(u):
    """The float32 whose IEEE bits are ``u`` (arithmetic, exact: a view of a scratch array here
    would allocate an array object per call, ~30 ns in the hottest loops)."""
    u = np.int64(u)
    e = (u >> 23) & 0xFF
    m = u & 0x7FFFFF
    if e == 0xFF:
        v = np.inf if m == 0 else np.nan
    elif e == 0:
        v = math.ldexp(np.float64(m), -149)
    else:
        v = math.ldexp(np.float64(m | 0x800000), int(e) - 150)
    return np.float32(-v if (u >> 31) & 1 else v)


def _value(mode, code, base, size, table, float_bits, idf, norm):
    """The float32 impact of a value code (BM25: ``code`` is tf - 1 and ``norm`` the document's);
    the caller checks ``code < size`` for a table code."""
    if mode == MODE_TABLE:
        return np.float32(table[base + code])
    if mode == MODE_VALUES:
        if float_bits:
            return _float_of_bits(code)
        return np.float32(code)
    return _bm25(idf, np.float32(code + 1), norm)


def _decode_docs(buf, st, c, num_docs, out_docs, upto):
    """Decode the doc ids of chunk ``c`` of the term in ``st`` into ``out_docs`` (int32) and
    note where its value codes are (``ST_VPOS``, ``ST_VW``); returns its postings, or -ERROR
    when corrupt (1: a doc id outside the collection, 2: a bit width, 3: bytes past the term).
    Decoding stops after the first doc id >= ``upto`` (``num_docs``: the whole chunk): the count
    returned is then the postings decoded, and the chunk is not noted as cached (``ST_CACHED``)."""
    st[ST_CACHED] = -1
    st[ST_VALUES] = -1
    df = st[ST_DF]
    nc = st[ST_NC]
    end = st[ST_END]
    if c < 0 or c >= nc:
        return -3
    n = min(CHUNK, df - c * CHUNK)
    if c == 0:
        pos = st[ST_CHUNKS]
        prev = -1
    else:
        pos = st[ST_CHUNKS] + _bits_at(buf, st[ST_OFFS], c - 1, st[ST_DWO])
        prev = _bits_at(buf, st[ST_DIR], c - 1, st[ST_DWD])
    wd, wv, h = _chunk_header(buf, pos, end)
    if h == 0:
        return -2 if pos + 2 <= end else -3
    pos += h
    vpos = pos + _nbytes(n, wd)
    if vpos + _nbytes(n, wv) > end:
        return -3
    d = prev
    got = n
    if wd == 0:
        for i in range(n):
            d += 1
            out_docs[i] = d
            if d >= upto:
                got = i + 1
                break
    else:  # a 64-bit bit buffer refilled 32 bits at a time (may read 3 bytes past: the stream's PAD)
        mask = (np.uint64(1) << np.uint64(wd)) - np.uint64(1)
        shift = np.uint64(wd)
        acc = np.uint64(0)
        nb = 0
        for i in range(n):
            if nb < wd:
                acc |= (np.uint64(buf[pos]) | (np.uint64(buf[pos + 1]) << np.uint64(8))  # inline: no call
                        | (np.uint64(buf[pos + 2]) << np.uint64(16))
                        | (np.uint64(buf[pos + 3]) << np.uint64(24))) << np.uint64(nb)
                pos += 4
                nb += 32
            d += 1 + np.int64(acc & mask)
            acc >>= shift
            nb -= wd
            out_docs[i] = d
            if d >= upto:
                got = i + 1
                break
    if d >= num_docs or prev >= num_docs:
        return -1
    if got == n:
        st[ST_CACHED] = c
    st[ST_CACHED_N] = got
    st[ST_VPOS] = vpos
    st[ST_VW] = wv
    return got


def _unpack(buf, pos, n, w, out):
    """``n`` packed ``w``-bit values from byte ``pos`` into ``out`` (uint32)."""
    if w == 0:
        for i in range(n):
            out[i] = 0
        return
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    shift = np.uint64(w)
    acc = np.uint64(0)
    nb = 0
    for i in range(n):
        if nb < w:
            acc |= (np.uint64(buf[pos]) | (np.uint64(buf[pos + 1]) << np.uint64(8))  # inline: no call
                    | (np.uint64(buf[pos + 2]) << np.uint64(16))
                    | (np.uint64(buf[pos + 3]) << np.uint64(24))) << np.uint64(nb)
            pos += 4
            nb += 32
        out[i] = acc & mask
        acc >>= shift
        nb -= w


def _decode_values(buf, st, table, float_bits, norms, norm_table, docs_row, out_vals):
    """Decode the values of the chunk whose doc ids are in ``docs_row`` (``_decode_docs``)
    into ``out_vals`` (float32): impacts, or a BM25 term's products ``tf * norm`` (``_impact``
    turns a value into its impact); returns 0, or -4 for a code outside its table."""
    n = st[ST_CACHED_N]
    mode = st[ST_MODE]
    base = st[ST_BASE]
    codes = out_vals.view(np.uint32)  # codes first, turned into impacts in place
    _unpack(buf, st[ST_VPOS], n, st[ST_VW], codes)
    if mode == MODE_VALUES:
        if not float_bits:
            for i in range(n):
                out_vals[i] = np.float32(codes[i])
    elif mode == MODE_TABLE:
        size = st[ST_SIZE]
        for i in range(n):
            code = np.int64(codes[i])
            if code >= size:
                return -4
            out_vals[i] = np.float32(table[base + code])
    else:  # the product tf * norm (``_bm25p`` makes it the impact)
        for i in range(n):
            out_vals[i] = np.float32(np.int64(codes[i]) + 1) * norm_table[norms[docs_row[i]]]
    st[ST_VALUES] = st[ST_CACHED]
    return 0


def _value_at(buf, st, i, d, table, float_bits, norms, norm_table):
    """The value (as ``_decode_values``) of posting ``i`` (doc ``d``) of the decoded chunk,
    read on its own; NaN for a code outside its table (the caller treats it as corrupt)."""
    code = _bits_at(buf, st[ST_VPOS], i, st[ST_VW])
    mode = st[ST_MODE]
    if mode == MODE_TABLE:
        if code >= st[ST_SIZE]:
            return np.float32(np.nan)
        return np.float32(table[st[ST_BASE] + code])
    if mode == MODE_BM25:
        return np.float32(code + 1) * norm_table[norms[d]]
    return _value(mode, code, 0, 0, table, float_bits, np.float32(0.0), np.float32(0.0))


def _decode_chunk(buf, st, c, num_docs, table, float_bits, norms, norm_table, out_docs, out_vals):
    """Decode chunk ``c`` (doc ids and values, in one pass) into the two rows; returns its
    postings, or -ERROR when corrupt (see ``_decode_docs``; 4: a code outside its table)."""
    st[ST_CACHED] = -1
    st[ST_VALUES] = -1
    df = st[ST_DF]
    end = st[ST_END]
    if c < 0 or c >= st[ST_NC]:
        return -3
    n = min(CHUNK, df - c * CHUNK)
    if c == 0:
        pos = st[ST_CHUNKS]
        prev = -1
    else:
        pos = st[ST_CHUNKS] + _bits_at(buf, st[ST_OFFS], c - 1, st[ST_DWO])
        prev = _bits_at(buf, st[ST_DIR], c - 1, st[ST_DWD])
    wd, wv, h = _chunk_header(buf, pos, end)
    if h == 0:
        return -2 if pos + 2 <= end else -3
    pos += h
    vpos = pos + _nbytes(n, wd)
    if vpos + _nbytes(n, wv) > end:
        return -3
    if prev + n >= num_docs:
        return -1
    mode = st[ST_MODE]
    base = st[ST_BASE]
    size = st[ST_SIZE]
    bits_out = out_vals.view(np.uint32)
    dmask = (np.uint64(1) << np.uint64(wd)) - np.uint64(1)
    vmask = (np.uint64(1) << np.uint64(wv)) - np.uint64(1)
    dshift = np.uint64(wd)
    vshift = np.uint64(wv)
    dacc = np.uint64(0)
    vacc = np.uint64(0)
    dnb = 0
    vnb = 0
    d = prev
    vstart = vpos
    for i in range(n):  # two bit buffers refilled 32 bits at a time (may read 3 bytes past: PAD)
        d += 1
        if wd > 0:
            if dnb < wd:
                dacc |= (np.uint64(buf[pos]) | (np.uint64(buf[pos + 1]) << np.uint64(8))
                         | (np.uint64(buf[pos + 2]) << np.uint64(16))
                         | (np.uint64(buf[pos + 3]) << np.uint64(24))) << np.uint64(dnb)
                pos += 4
                dnb += 32
            d += np.int64(dacc & dmask)
            dacc >>= dshift
            dnb -= wd
        code = np.uint64(0)
        if wv > 0:
            if vnb < wv:
                vacc |= (np.uint64(buf[vpos]) | (np.uint64(buf[vpos + 1]) << np.uint64(8))
                         | (np.uint64(buf[vpos + 2]) << np.uint64(16))
                         | (np.uint64(buf[vpos + 3]) << np.uint64(24))) << np.uint64(vnb)
                vpos += 4
                vnb += 32
            code = vacc & vmask
            vacc >>= vshift
            vnb -= wv
        if d >= num_docs:
            return -1
        out_docs[i] = d
        if mode == MODE_VALUES:
            if float_bits:
                bits_out[i] = np.uint32(code)
            else:
                out_vals[i] = np.float32(code)
        elif mode == MODE_TABLE:
            if code >= size:
                return -4
            out_vals[i] = np.float32(table[base + np.int64(code)])
        else:  # the product tf * norm (``_bm25p`` makes it the impact)
            out_vals[i] = np.float32(np.int64(code) + 1) * norm_table[norms[d]]
    st[ST_CACHED] = c
    st[ST_CACHED_N] = n
    st[ST_VALUES] = c
    st[ST_VPOS] = vstart
    st[ST_VW] = wv
    return n


def _find_chunk(buf, st, lo):
    """The chunk holding the first posting >= doc ``lo`` (the last chunk whose previous-doc
    entry is < lo)."""
    nc = st[ST_NC]
    a = 1
    b = nc
    while a < b:
        mid = (a + b) >> 1
        if _bits_at(buf, st[ST_DIR], mid - 1, st[ST_DWD]) < lo:
            a = mid + 1
        else:
            b = mid
    return a - 1


def _load_chunk(buf, st, c, num_docs, table, float_bits, norms, norm_table, docs_row, vals_row):
    """Chunk ``c`` of the term decoded (doc ids and impacts) into its cache rows, unless it is
    there already; returns its postings or -ERROR."""
    if st[ST_CACHED] == c and st[ST_VALUES] == c:
        return st[ST_CACHED_N]
    if st[ST_CACHED] != c:
        n = _decode_docs(buf, st, c, num_docs, docs_row, num_docs)
        if n < 0:
            return n
    if _decode_values(buf, st, table, float_bits, norms, norm_table, docs_row, vals_row) < 0:
        st[ST_CACHED] = -1
        return -4
    return st[ST_CACHED_N]


def _load_docs(buf, st, c, num_docs, docs_row, upto):
    """Chunk ``c``'s doc ids in the cache row (decoded unless there already, up to the first
    >= ``upto``: ``_decode_docs``); postings there or -ERROR."""
    if st[ST_CACHED] == c:
        return st[ST_CACHED_N]
    return _decode_docs(buf, st, c, num_docs, docs_row, upto)


def _bm_layout(buf, st):
    """Where a term's stored block-max list keeps its parts: (gap width, value width, gaps,
    value codes, BM25 length bytes) -- ``m`` entries each, from ``st[ST_BM]``."""
    m = st[ST_M]
    pos = st[ST_BM]
    wg = np.int64(buf[pos])
    wv = np.int64(buf[pos + 1])
    gpos = pos + 2
    vpos = gpos + _nbytes(m, wg)
    return wg, wv, gpos, vpos, vpos + _nbytes(m, wv)


def _bm_value(buf, npos, i, mode, code, base, size, table, float_bits, idf, norm_table):
    """The impact of block-max entry ``i`` with value ``code`` (BM25: with its length byte)."""
    norm = norm_table[buf[npos + i]] if mode == MODE_BM25 else np.float32(0.0)
    return _value(mode, code, base, size, table, float_bits, idf, norm)


def _read_blockmax(buf, st, table, float_bits, norm_table, out_blocks, out_vals):
    """Decode a term's stored block-max list into ``out_blocks`` (int64) and ``out_vals``
    (float32); returns its length, or -ERROR."""
    m = st[ST_M]
    wg, wv, gpos, vpos, npos = _bm_layout(buf, st)
    mode = st[ST_MODE]
    base = st[ST_BASE]
    idf = np.float32(table[base]) if mode == MODE_BM25 else np.float32(0.0)
    b = -1
    for i in range(m):
        b += 1 + _bits_at(buf, gpos, i, wg)
        code = _bits_at(buf, vpos, i, wv)
        if mode == MODE_TABLE and code >= st[ST_SIZE]:
            return -4
        out_blocks[i] = b
        out_vals[i] = _bm_value(buf, npos, i, mode, code, base, st[ST_SIZE], table, float_bits, idf, norm_table)
    return m


def _doc_freqs(buf, term_ptr, num_docs, table_len, norms_len, norm_table_len, st, out):
    """Each term's posting count into ``out``; returns the first term whose header is corrupt, or -1."""
    for t in range(term_ptr.shape[0] - 1):
        if _open_term(buf, term_ptr, t, num_docs, table_len, norms_len, norm_table_len, st) < 0:
            return t
        out[t] = st[ST_DF]
    return -1


def _term_modes(buf, term_ptr, num_docs, table_len, norms_len, norm_table_len, st, modes, bases):
    """Each term's impact mode and table base (mode -1 for a term without postings); returns
    the first corrupt term, or -1."""
    for t in range(term_ptr.shape[0] - 1):
        if _open_term(buf, term_ptr, t, num_docs, table_len, norms_len, norm_table_len, st) < 0:
            return t
        modes[t] = st[ST_MODE] if st[ST_DF] > 0 else -1
        bases[t] = st[ST_BASE]
    return -1


def _verify_terms(buf, term_ptr, num_docs, table, float_bits, max_value, norms, norm_table, shift, st, docs_row,
                  vals_row, bm_blocks, bm_vals, out):
    """Scan every term: headers, chunk directory against the chunks, doc ids, codes, impacts
    finite and >= 0 (integers <= ``max_value``; -1: no bound), block-max lists against the
    postings. ``out`` gets (error code, term) of the first fault, (0, -1) when none."""
    out[0] = 0
    out[1] = -1
    for t in range(term_ptr.shape[0] - 1):
        err = 0
        if _open_term(buf, term_ptr, t, num_docs, table.shape[0], norms.shape[0], norm_table.shape[0], st) < 0:
            err = 3
        elif st[ST_DF] > 0:
            has_bm = st[ST_BM] >= 0
            m = 0
            if has_bm:
                m = _read_blockmax(buf, st, table, float_bits, norm_table, bm_blocks, bm_vals)
                if m < 0:
                    err = -m
            expect = st[ST_CHUNKS]
            last_doc = -1
            cur_b = -1
            cur_max = np.float32(0.0)
            k = 0
            for c in range(st[ST_NC]):
                if err != 0:
                    break
                if c > 0 and (st[ST_CHUNKS] + _bits_at(buf, st[ST_OFFS], c - 1, st[ST_DWO]) != expect
                              or _bits_at(buf, st[ST_DIR], c - 1, st[ST_DWD]) != last_doc):
                    err = 7
                    break
                n = _decode_chunk(buf, st, c, num_docs, table, float_bits, norms, norm_table, docs_row, vals_row)
                if n < 0:
                    err = -n
                    break
                idf = _idf(st, table)
                for i in range(n):
                    vals_row[i] = _impact(st[ST_MODE], idf, vals_row[i])
                wd, wv, h = _chunk_header(buf, expect, st[ST_END])
                expect += h + _nbytes(n, wd) + _nbytes(n, wv)
                last_doc = docs_row[n - 1]
                for i in range(n):
                    v = vals_row[i]
                    if not (v >= 0.0 and v < np.inf) or (max_value >= 0 and v > max_value):
                        err = 5
                        break
                    b = docs_row[i] >> shift
                    if b != cur_b:
                        if cur_b >= 0 and has_bm:
                            if k >= m or bm_blocks[k] != cur_b or bm_vals[k] != cur_max:
                                err = 6
                                break
                            k += 1
                        cur_b = b
                        cur_max = v
                    elif v > cur_max:
                        cur_max = v
            if err == 0:
                if expect != st[ST_END]:
                    err = 8
                elif has_bm and (k >= m or bm_blocks[k] != cur_b or bm_vals[k] != cur_max or k + 1 != m):
                    err = 6
        if err != 0:
            out[0] = err
            out[1] = t
            return


def _decode_all(buf, term_ptr, offsets, num_docs, table, float_bits, norms, norm_table, st, docs_row, vals_row,
                out_docs, out_vals):
    """Every term's postings into CSR arrays (``offsets`` from the doc frequencies); returns the
    first corrupt term, or -1."""
    for t in range(term_ptr.shape[0] - 1):
        if _open_term(buf, term_ptr, t, num_docs, table.shape[0], norms.shape[0], norm_table.shape[0], st) < 0:
            return t
        p = offsets[t]
        for c in range(st[ST_NC]):
            n = _decode_chunk(buf, st, c, num_docs, table, float_bits, norms, norm_table, docs_row, vals_row)
            if n < 0:
                return t
            idf = _idf(st, table)
            for i in range(n):
                out_docs[p + i] = docs_row[i]
                out_vals[p + i] = _impact(st[ST_MODE], idf, vals_row[i])
            p += n
    return -1


_bm25 = bm25_impact  # compiled below, for scalars inside the kernels


# -- the same searches over packed postings (indexing.compress) --------------------------------
#
# Each query term's header is parsed once per query into its row of ``qstate``; its chunks are
# decoded, when needed, into its row of ``cache_docs`` / ``cache_vals`` (one chunk per term stays
# decoded: the block-max pass leaves a one-chunk term's postings there for the scoring pass).
# Block bounds come from the term's stored block-max list, or are derived from its decoded
# postings (the same maxima); ``ub_mask[b]`` has bit j set when query term j (j < 63; bit 63 for
# the rest) has postings in block b, so scoring a block looks up only those terms. Scores, bounds
# and their order of accumulation are the uncompressed kernels' own: results are equal bit for bit.

def _add_chunks(buf, st, w, idf, table, float_bits, norms, norm_table, docs_row, vals_row, acc, seen, touched,
                n_touched, dense=False):
    """Add ``w x`` every posting of the open term in ``st`` into the accumulator, chunk by chunk
    (touched documents listed); the new count of touched documents, or ``-1 - count`` when a chunk
    is corrupt (the ones touched so far still listed, for the caller to clear)."""
    num_docs = acc.shape[0]
    bm25 = st[ST_MODE] == MODE_BM25
    for c in range(st[ST_NC]):
        n = _load_chunk(buf, st, c, num_docs, table, float_bits, norms, norm_table, docs_row, vals_row)
        if n < 0:
            return -1 - n_touched
        n_touched = _add_postings(docs_row, vals_row, 0, n, w, idf, bm25, acc, seen, touched, n_touched, dense)
    return n_touched


def _add_postings(docs, vals, lo, hi, w, idf, bm25, acc, seen, touched, n_touched, dense=False):
    """Add ``w x`` the decoded postings ``lo:hi`` (BM25: their products turned into impacts with
    ``idf``) into the accumulator; returns the new count of touched documents. ``dense``: no seen
    flags or touched list kept (``_exhaustive_packed``'s dense queries; the count stays)."""
    for i in range(lo, hi):
        d = docs[i]
        if not dense and seen[d] == 0:
            seen[d] = 1
            touched[n_touched] = d
            n_touched += 1
        if bm25:
            acc[d] += w * _bm25p(idf, vals[i])
        else:
            acc[d] += w * vals[i]
    return n_touched


def _top_keys_dense(acc, tie_rank, k, heap):
    """``_top_keys`` over every document in order (a dense query's accumulator: no touched list),
    the accumulator zeroed."""
    bits = acc.view(np.uint32)
    n = acc.shape[0]
    if k >= SELECT_MIN_K and n <= SELECT_PER_HIT * k:  # a large k of a small collection: a partition
        keys = np.empty(n, dtype=np.uint64)  # (SciFact, k = 1000: 117 -> 86 us a query against the heap)
        m = 0
        for d in range(n):
            if acc[d] != 0.0:
                if acc[d] > 0.0:
                    keys[m] = (np.uint64(bits[d]) << np.uint64(32)) | (_LOW - np.uint64(tie_rank[d]))
                    m += 1
                acc[d] = 0.0
        return _select(keys, m, k, heap)
    size = 0
    floor = np.uint64(0)
    for d in range(n):
        if acc[d] != 0.0:
            b = np.uint64(bits[d])
            if acc[d] > 0.0 and b >= floor:
                size, floor = _offer(heap, size, k, b, tie_rank[d])
            acc[d] = 0.0
    return size


EXHAUSTIVE_DENSE = 0.5  # a query of at least this many postings per document keeps no touched list: its top k
# comes from one pass over the whole accumulator (BM25 1M: see docs/BENCHMARKS.md, "exhaustive kernel")


def _exhaustive_packed(buf, term_ptr, table, float_bits, norms, norm_table, q_terms, q_weights, tie_rank, k, acc,
                       seen, touched, heap, qstate, cache_docs, cache_vals, arena_docs, arena_vals, reuse):
    """``_exhaustive`` over packed postings. ``reuse``: the terms are open already (the pruned
    kernel's fallback), those it decoded whole are read from the arena. A query of at least
    ``EXHAUSTIVE_DENSE`` postings per document keeps no seen flags or touched list (most documents
    are touched): its top k comes from a pass over the whole accumulator."""
    num_docs = acc.shape[0]
    n = q_terms.shape[0]
    if not reuse:
        for j in range(n):
            if _open_term(buf, term_ptr, q_terms[j], num_docs, table.shape[0], norms.shape[0], norm_table.shape[0],
                          qstate[j]) < 0:
                return -1
    total = 0
    for j in range(n):
        total += qstate[j, ST_DF]
    dense = total >= EXHAUSTIVE_DENSE * num_docs
    n_touched = 0
    status = 0
    for j in range(n):
        st = qstate[j]
        w = q_weights[j]
        bm25 = st[ST_MODE] == MODE_BM25
        idf = _idf(st, table)
        if reuse and st[ST_ARENA] >= 0:
            n_touched = _add_postings(arena_docs, arena_vals, st[ST_ARENA], st[ST_ARENA] + st[ST_DF], w, idf, bm25,
                                      acc, seen, touched, n_touched, dense)
            continue
        added = _add_chunks(buf, st, w, idf, table, float_bits, norms, norm_table, cache_docs[j], cache_vals[j],
                            acc, seen, touched, n_touched, dense)
        if added < 0:
            n_touched = -1 - added
            status = -1
            break
        n_touched = added
    if status < 0:
        if dense:
            acc[:] = 0.0
        for i in range(n_touched):
            acc[touched[i]] = 0.0
            seen[touched[i]] = 0
        return -1
    if dense:
        return _top_keys_dense(acc, tie_rank, k, heap)
    return _top_keys(acc, seen, touched, n_touched, tie_rank, k, heap)


def _bounds_stored(buf, st, w, bit, table, float_bits, norm_table, ub, ub_seen, ub_mask, cand, n_cand, track):
    """Add a term's stored block maxima (times ``w``) to the block bounds; (n_cand, status, the
    largest of them times ``w``).
    ``track`` False: blocks are not listed as candidates here (``ub_mask`` alone marks them; the
    caller lists them with ``_gather``, or ``_pruned_super`` sweeps the blocks): without the branch
    and the two writes per entry the pass runs ~1.6x faster (see ``_gather``)."""
    m = st[ST_M]
    wg, wv, gpos, vpos, npos = _bm_layout(buf, st)
    mode = st[ST_MODE]
    base = st[ST_BASE]
    size = st[ST_SIZE]
    idf = np.float32(table[base]) if mode == MODE_BM25 else np.float32(0.0)
    n_blocks = ub.shape[0]
    gmask = (np.uint64(1) << np.uint64(wg)) - np.uint64(1)
    vmask = (np.uint64(1) << np.uint64(wv)) - np.uint64(1)
    gacc = np.uint64(0)
    gnb = 0
    vacc = np.uint64(0)
    vnb = 0
    b = -1
    top = np.float32(0.0)
    for i in range(m):  # two bit buffers refilled 32 bits at a time (1.4x faster than a byte at a
        # time: 10M SPLADE-like, the unsummarised terms' ~580k entries a query)
        g, gacc, gnb, gpos = _take(buf, gpos, gacc, gnb, wg, gmask)
        code, vacc, vnb, vpos = _take(buf, vpos, vacc, vnb, wv, vmask)
        b += 1 + g
        if b >= n_blocks or (mode == MODE_TABLE and code >= size):
            return n_cand, -1, top
        if mode == MODE_BM25:  # (written out: in this loop, the bounds pass, _bm_value measured 2x slower queries)
            v = _bm25(idf, np.float32(code + 1), norm_table[buf[npos + i]])
        else:
            v = _value(mode, code, base, size, table, float_bits, idf, np.float32(0.0))
        if track and ub_seen[b] == 0:  # (inline: a call with array arguments costs more than the work)
            ub_seen[b] = 1
            cand[n_cand] = b
            n_cand += 1
        x = w * v
        top = max(top, x)
        ub[b] += x
        ub_mask[b] |= bit
    return n_cand, 0, top


GATHER_SHARE = 0.25  # a query's stored block-max entries, as a share of the blocks, from which the bounds pass
# lists candidates by one sweep of the blocks (``_gather``) instead of entry by entry (``_pruned_super``:
# lists none, clears the scratch whole)


def _gather(ub_mask, ub_seen, cand, n_cand):
    """List every block some term marked in ``ub_mask`` and not listed yet (``ub_seen`` 0) as a
    candidate; returns the new count. One sequential sweep of the blocks: when a query's terms
    hold block-max entries in most blocks this is cheaper than listing them entry by entry (the
    bounds pass without it, SPLADE-like 1M: ~6 against ~9 ns an entry)."""
    for b in range(ub_mask.shape[0]):
        if ub_mask[b] != 0 and ub_seen[b] == 0:
            ub_seen[b] = 1
            cand[n_cand] = b
            n_cand += 1
    return n_cand


def _decode_whole(buf, st, num_docs, shift, table, float_bits, norms, norm_table, arena_docs, arena_vals,
                  arena_blocks, used):
    """Decode every chunk of the term into the arena at ``used[0]`` (``ST_ARENA``), and list its
    blocks (``block << 32 | first arena position``) at ``used[1]`` of ``arena_blocks``
    (``ST_BLK``, ``ST_BLKN``); returns 0, or -1 when corrupt."""
    a = used[0]
    for c in range(st[ST_NC]):
        n = _decode_chunk(buf, st, c, num_docs, table, float_bits, norms, norm_table, arena_docs[a:], arena_vals[a:])
        if n < 0:
            return -1
        a += n
    st[ST_CACHED] = -1
    st[ST_VALUES] = -1
    st[ST_ARENA] = used[0]
    m = used[1]
    cur = -1
    for i in range(used[0], a):
        b = arena_docs[i] >> shift
        if b != cur:
            arena_blocks[m] = (np.int64(b) << 32) | i
            m += 1
            cur = b
    st[ST_BLK] = used[1]
    st[ST_BLKN] = m - used[1]
    used[0] = a
    used[1] = m
    return 0


def _bounds_derived(buf, st, w, bit, shift, num_docs, table, float_bits, norms, norm_table, docs_row, vals_row, ub,
                    ub_seen, ub_mask, cand, n_cand, arena_docs, arena_vals, arena_blocks, used):
    """Add a term's block maxima, read from its decoded postings, to the block bounds. The
    postings are decoded into the arena at ``used[0]`` when they fit (``ST_ARENA``: where; the
    scoring pass then reads them like uncompressed ones), else chunk by chunk into the cache
    rows. Returns (n_cand, status, the largest block maximum times ``w``)."""
    df = st[ST_DF]
    into_arena = used[0] + df <= arena_docs.shape[0]
    if into_arena:
        if _decode_whole(buf, st, num_docs, shift, table, float_bits, norms, norm_table, arena_docs, arena_vals,
                         arena_blocks, used) < 0:
            return n_cand, -1, np.float32(0.0)
        chunks = 1
    else:
        chunks = st[ST_NC]
    mode = st[ST_MODE]
    idf = _idf(st, table)
    cur = -1
    best = np.float32(0.0)
    top = np.float32(0.0)
    for c in range(chunks + 1):
        if c == chunks:  # the last block
            if cur >= 0:
                if ub_seen[cur] == 0:
                    ub_seen[cur] = 1
                    cand[n_cand] = cur
                    n_cand += 1
                x = w * _impact(mode, idf, best)
                top = max(top, x)
                ub[cur] += x
                ub_mask[cur] |= bit
            break
        if into_arena:
            docs = arena_docs[st[ST_ARENA]:st[ST_ARENA] + df]
            vals = arena_vals[st[ST_ARENA]:st[ST_ARENA] + df]
            n = df
        else:
            n = _load_chunk(buf, st, c, num_docs, table, float_bits, norms, norm_table, docs_row, vals_row)
            if n < 0:
                return n_cand, -1, top
            docs = docs_row
            vals = vals_row
        for i in range(n):  # a BM25 term's largest product gives its largest impact
            b = docs[i] >> shift
            if b != cur:
                if cur >= 0:
                    if ub_seen[cur] == 0:
                        ub_seen[cur] = 1
                        cand[n_cand] = cur
                        n_cand += 1
                    x = w * _impact(mode, idf, best)
                    top = max(top, x)
                    ub[cur] += x
                    ub_mask[cur] |= bit
                cur = b
                best = vals[i]
            elif vals[i] > best:
                best = vals[i]
    return n_cand, 0, top


def _score_block_packed(b, buf, table, float_bits, norms, norm_table, shift, q_weights, tie_rank, k, heap, size,
                        ub_mask, loc_acc, loc_seen, loc_list, qstate, cache_docs, cache_vals, arena_docs,
                        arena_vals, arena_blocks, used, whole, bound, perm, loc_vals):
    """``_score_block`` over packed postings: each query term with postings in block ``b`` (its
    bit ``j & 63`` in ``ub_mask[b]``) is read from the arena (a term decoded whole: by the
    bounds pass, or here at its first block when it has at most ``WHOLE`` postings and fits),
    else from the chunk holding the block's first document, decoded into its cache row (doc ids
    once; impacts all at once when the block needs many, else one by one); returns the new heap
    size, or -1 for a corrupt index. ``bound`` (float64, >= the sum of every term's ``w x`` block
    maximum here, or inf): after each term the block is given up once the best partial score plus
    what the unread terms can add (``bound`` less each read term's largest contribution here: a
    block maximum is at least it) falls below the k-th score; none of its documents could enter
    the top k, so the result is the one scoring every term gives. Terms are read in the order of
    ``perm`` (positions in the query); when that is not the query's own order (``loc_vals`` has a
    column per query term, zeros), each contribution is also kept in its document's row there, and
    a block read to the end sums its documents' rows in the query's order: the scores are the
    exhaustive kernel's, bit for bit, whichever order gave up the blocks."""
    num_docs = tie_rank.shape[0]
    base = b << shift
    top = base + loc_acc.shape[0]
    mask = ub_mask[b]
    n_loc = 0
    status = 0
    eps = 4.0 * (q_weights.shape[0] + 2) * 2.0 ** -24
    low = _floor(_threshold(heap, size, k), 1.0 - eps, q_weights.shape[0])
    rest = bound
    best = np.float32(0.0)
    keep = loc_vals.shape[1] > 0
    n_read = 0  # terms read (their columns of loc_vals are cleared after a block given up)
    for jj in range(perm.shape[0]):
        j = perm[jj]
        if (mask >> np.uint64(j & 63)) & np.uint64(1) == 0:
            continue
        n_read = jj + 1
        df = qstate[j, ST_DF]
        if df == 0:
            continue
        w = q_weights[j]
        mode = qstate[j, ST_MODE]
        idf = np.float32(table[qstate[j, ST_BASE]]) if mode == MODE_BM25 else np.float32(0.0)
        if qstate[j, ST_ARENA] < 0 and df <= whole and used[0] + df <= arena_docs.shape[0] and \
                _decode_whole(buf, qstate[j], num_docs, shift, table, float_bits, norms, norm_table, arena_docs,
                              arena_vals, arena_blocks, used) < 0:
            status = -1
            break
        a0 = qstate[j, ST_ARENA]
        tmax = np.float32(0.0)  # the term's largest contribution here
        if a0 >= 0:  # decoded whole: the block's postings from the term's block list
            lo = qstate[j, ST_BLK]
            last = lo + qstate[j, ST_BLKN]
            hi = last
            while lo < hi:
                mid = (lo + hi) >> 1
                if (arena_blocks[mid] >> 32) < b:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == last or (arena_blocks[lo] >> 32) != b:
                continue
            i = arena_blocks[lo] & 0xFFFFFFFF
            end = (arena_blocks[lo + 1] & 0xFFFFFFFF) if lo + 1 < last else a0 + df
            while i < end:
                off = arena_docs[i] - base
                if loc_seen[off] == 0:
                    loc_seen[off] = 1
                    loc_list[n_loc] = off
                    n_loc += 1
                x = w * _impact(mode, idf, arena_vals[i])
                tmax = max(tmax, x)
                loc_acc[off] += x
                if keep:
                    loc_vals[off, j] = x
                best = max(best, loc_acc[off])
                i += 1
        else:  # from the chunk holding the block's first document
            st = qstate[j]
            docs_row = cache_docs[j]
            vals_row = cache_vals[j]
            c = 0
            if st[ST_NC] > 1:
                c = st[ST_CACHED]  # the decoded chunk, when the block starts inside it
                if c < 0 or docs_row[st[ST_CACHED_N] - 1] < base or \
                        (c > 0 and _bits_at(buf, st[ST_DIR], c - 1, st[ST_DWD]) >= base):
                    c = _find_chunk(buf, st, base)
            while True:
                n = _load_docs(buf, st, c, num_docs, docs_row, top)
                if n < 0:
                    status = -1
                    break
                lo = 0
                hi = n
                while lo < hi:  # the first posting >= base
                    mid = (lo + hi) >> 1
                    if docs_row[mid] < base:
                        lo = mid + 1
                    else:
                        hi = mid
                i = lo
                last = lo
                while last < n and docs_row[last] < top:
                    last += 1
                decoded = st[ST_VALUES] == c
                if not decoded and 4 * (last - lo) > n:  # many of them: decode every impact at once
                    if _decode_values(buf, st, table, float_bits, norms, norm_table, docs_row, vals_row) < 0:
                        status = -1
                        break
                    decoded = True
                while i < last:
                    d = docs_row[i]
                    if decoded:
                        v = vals_row[i]
                    else:
                        v = _value_at(buf, st, i, d, table, float_bits, norms, norm_table)
                        if np.isnan(v):
                            status = -1
                            break
                    off = d - base
                    if loc_seen[off] == 0:
                        loc_seen[off] = 1
                        loc_list[n_loc] = off
                        n_loc += 1
                    x = w * _impact(mode, idf, v)
                    tmax = max(tmax, x)
                    loc_acc[off] += x
                    if keep:
                        loc_vals[off, j] = x
                    best = max(best, loc_acc[off])
                    i += 1
                if status < 0:
                    break
                if i < n or c + 1 >= st[ST_NC]:
                    break
                c += 1  # the block goes on in the next chunk
        if status < 0:
            break
        rest -= tmax
        if size >= k and np.float64(best) * (1.0 + eps) + rest < low:
            status = 1  # given up: no document here reaches the k-th score
            break
    if keep:  # the rows summed in the query's order (a block read to the end), or cleared
        for i in range(n_loc):
            off = loc_list[i]
            row = loc_vals[off]
            if status == 0:
                score = np.float32(0.0)
                for j in range(row.shape[0]):
                    if (mask >> np.uint64(j & 63)) & np.uint64(1) != 0:
                        score += row[j]
                        row[j] = 0.0
                loc_acc[off] = score
            else:
                for jj in range(n_read):
                    row[perm[jj]] = 0.0
    bits = loc_acc.view(np.uint32)
    for i in range(n_loc):
        off = loc_list[i]
        if status == 0 and loc_acc[off] > 0.0:
            d = base + off
            key = (np.uint64(bits[off]) << np.uint64(32)) | (_LOW - np.uint64(tie_rank[d]))
            if size < k or key > heap[0]:
                size = _heap_push(heap, size, k, key)
        loc_acc[off] = 0.0
        loc_seen[off] = 0
    return size if status >= 0 else -1


def _pruned_packed(buf, term_ptr, table, float_bits, norms, norm_table, shift, q_terms, q_weights, tie_rank, k,
                   approx, block_cost, per_hit, ub, ub_seen, ub_mask, cand, order, heap, loc_acc, loc_seen, loc_list,
                   qstate, cache_docs, cache_vals, arena_docs, arena_vals, arena_blocks, whole):
    """``_pruned`` over packed postings (same bounds, same blocks, same order; -1 corrupt,
    -2 over budget). ``ub_mask`` (uint64, one per block, zeros) comes back zeroed."""
    num_docs = tie_rank.shape[0]
    n_cand = 0
    status = 0
    postings = 0
    used = np.zeros(2, dtype=np.int64)  # arena postings and block entries taken
    entries = 0
    for j in range(q_terms.shape[0]):
        if _open_term(buf, term_ptr, q_terms[j], num_docs, table.shape[0], norms.shape[0], norm_table.shape[0],
                      qstate[j]) < 0:
            return -1, 0
        postings += qstate[j, ST_DF]
        if qstate[j, ST_BM] >= 0:
            entries += qstate[j, ST_M]
    track = entries < GATHER_SHARE * ub.shape[0]
    budget = _budget(postings, block_cost, q_terms.shape[0])
    first = _first_blocks(k, shift)
    if budget >= 0 and max(first, per_hit * k) > budget:  # the postings cost less than the blocks
        return -2, 0
    for j in range(q_terms.shape[0]):
        st = qstate[j]
        if st[ST_DF] == 0:
            continue
        bit = np.uint64(1) << np.uint64(j & 63)
        if st[ST_BM] >= 0:
            n_cand, status, _ = _bounds_stored(buf, st, q_weights[j], bit, table, float_bits, norm_table,
                                               ub, ub_seen, ub_mask, cand, n_cand, track)
        else:
            n_cand, status, _ = _bounds_derived(buf, st, q_weights[j], bit, shift, num_docs, table, float_bits,
                                                norms, norm_table, cache_docs[j], cache_vals[j], ub, ub_seen, ub_mask,
                                                cand, n_cand, arena_docs, arena_vals, arena_blocks, used)
        if status < 0:
            break
    if not track:  # (also after a corrupt term: the marked blocks are cleared through the list)
        n_cand = _gather(ub_mask, ub_seen, cand, n_cand)
    perm = np.arange(q_terms.shape[0])
    no_vals = np.zeros((1, 0), dtype=np.float32)  # (the query's order: no rows kept)
    scored = 0
    size = 0
    sum_widen = 1.0 + 2.0 * (q_terms.shape[0] + 1) * 2.0 ** -24  # a float32 sum of n terms, rounded down
    if status == 0:
        n_first = _best_first(cand, n_cand, ub, order, first)
        for i in range(n_first):
            b = np.int64(order[i] & _LOW)
            ub_seen[b] = 2  # scored
            size = _score_block_packed(b, buf, table, float_bits, norms, norm_table, shift, q_weights, tie_rank, k,
                                       heap, size, ub_mask, loc_acc, loc_seen, loc_list, qstate, cache_docs,
                                       cache_vals, arena_docs, arena_vals, arena_blocks, used, whole,
                                       np.float64(ub[b]) * sum_widen, perm, no_vals)
            scored += 1
            if size < 0:
                status = -1
                break
        if status == 0:
            left = _blocks_left(cand, n_cand, ub, ub_seen, order, approx, _threshold(heap, size, k))
            n_left = left.shape[0]
            if budget >= 0 and scored + n_left > budget:  # hopeless: read the postings now
                status = -2
                scored += n_left
                n_left = 0
            for i in range(n_left - 1, -1, -1):
                key = left[i]
                if approx * np.uint32(key >> np.uint64(32)).view(np.float32) < _threshold(heap, size, k):
                    break
                if budget >= 0 and scored >= budget:
                    status = -2
                    break
                b = np.int64(key & _LOW)
                size = _score_block_packed(b, buf, table, float_bits, norms, norm_table, shift,
                                           q_weights, tie_rank, k, heap, size, ub_mask, loc_acc, loc_seen, loc_list,
                                           qstate, cache_docs, cache_vals, arena_docs, arena_vals,
                                           arena_blocks, used, whole, np.float64(ub[b]) * sum_widen, perm, no_vals)
                scored += 1
                if size < 0:
                    status = -1
                    break
    for i in range(n_cand):
        b = cand[i]
        ub[b] = 0.0
        ub_seen[b] = 0
        ub_mask[b] = 0
    return (size if status == 0 else status), scored


# -- MaxScore over packed postings: term bounds and cursors -------------------------------------
#
# ``_term_bound``: an upper bound of a term's impacts from its chunk headers (nothing decoded);
# ``_ms_seek``: a cursor moved to the first posting >= a document through the chunk directory.
# Both serve MaxScore term at a time (``_maxscore_taat``, below).

def _term_bound(buf, st, table, float_bits, nmax):
    """An upper bound of every impact of the term in ``st``, read from its chunk headers: the
    widest value code of its chunks bounds its codes, and every way a code becomes an impact is
    non-decreasing in the code (a table sorted ascending; a float32's bits of a positive number;
    a BM25 ``tf`` whose product with the largest length factor ``nmax`` bounds ``tf * norm``),
    float32 rounding included. -1 when a chunk header is corrupt; inf when the widths allow any
    float (then the term is always essential)."""
    wmax = 0
    for c in range(st[ST_NC]):
        pos = st[ST_CHUNKS]
        if c > 0:
            pos += _bits_at(buf, st[ST_OFFS], c - 1, st[ST_DWO])
        wd, wv, h = _chunk_header(buf, pos, st[ST_END])
        if h == 0:
            return np.float32(-1.0)
        if wv > wmax:
            wmax = wv
    top = (np.int64(1) << wmax) - 1  # the largest code those widths can hold
    mode = st[ST_MODE]
    if mode == MODE_TABLE:
        return np.float32(table[st[ST_BASE] + min(top, st[ST_SIZE] - 1)])
    if mode == MODE_BM25:
        return _bm25p(np.float32(table[st[ST_BASE]]), np.float32(top + 1) * nmax)
    if float_bits:
        return np.float32(np.inf) if wmax > 30 else _float_of_bits(top)
    return np.float32(top)


def _ms_seek(buf, st, d, num_docs, docs_row):
    """Move the cursor of the term in ``st`` to its first posting >= doc ``d`` (``ST_DOC``:
    that doc, or ``num_docs`` past the end); decodes doc ids only. 0, or -1 when corrupt."""
    if st[ST_DOC] >= d:
        return 0
    c = st[ST_CACHED]
    n = st[ST_CACHED_N]
    p = st[ST_POS]
    if c < 0 or docs_row[n - 1] < d:
        c = _find_chunk(buf, st, d)
        n = _load_docs(buf, st, c, num_docs, docs_row, num_docs)
        if n < 0:
            return -1
        p = 0
    lo = p
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if docs_row[mid] < d:
            lo = mid + 1
        else:
            hi = mid
    if lo == n:  # only in the term's last chunk
        st[ST_POS] = n - 1
        st[ST_DOC] = num_docs
    else:
        st[ST_POS] = lo
        st[ST_DOC] = docs_row[lo]
    return 0


def _rewind(st):
    """Put the seek cursor of the term in ``st`` (``_seek_value``) before its first posting."""
    st[ST_CACHED] = -1
    st[ST_VALUES] = -1
    st[ST_DOC] = -1


def _seek_value(buf, st, d, num_docs, docs_row, vals_row, table, float_bits, norms, norm_table):
    """The stored value of doc ``d`` in the term of ``st``, its cursor moved forward there
    (``_ms_seek``; docs asked in increasing order after ``_rewind``): (1, value) when the term
    holds ``d``, (0, 0) when not, (-1, 0) for a corrupt list."""
    if _ms_seek(buf, st, d, num_docs, docs_row) < 0:
        return -1, np.float32(0.0)
    if st[ST_DOC] != d:
        return 0, np.float32(0.0)
    if st[ST_VALUES] == st[ST_CACHED]:
        return 1, np.float32(vals_row[st[ST_POS]])
    v = _value_at(buf, st, st[ST_POS], d, table, float_bits, norms, norm_table)
    if np.isnan(v):
        return -1, np.float32(0.0)
    return 1, v


# -- MaxScore term at a time (packed postings) ---------------------------------------------------
#
# Block-max bounds cannot pay for a short query of rare terms (BM25): its top-10 needs blocks all
# over the collection, and the bounds pass alone touches every block of its longest term.
# Turtle & Flood's MaxScore, term at a time: the query's terms are added into the accumulator
# (the exhaustive kernel's loop) in decreasing order of their bound ``w * largest impact``
# (``_term_bound``). After a term, when the bounds of the terms still unread sum to less than
# ``theta``, the k-th best partial score of the first TAAT_SAMPLE documents touched (the rarest
# terms'; a lower bound of the k-th best score: every score is at least its partial score), no
# document that only those terms hold can reach the top k: the documents whose partial score plus
# ``rest`` reaches ``theta`` are the candidates, and the rest of the lists is never decoded. It
# stops at the first term where seeking the candidates (their number estimated from a sample)
# costs less than reading the next list (``seek_cost`` postings a seek); a query whose k hits alone
# would cost a quarter of its postings in seeks is read exhaustively. The unread terms are then
# sought at the candidates one at a time, largest bound first, and after each one a candidate whose
# partial score plus the bounds still unread falls below the k-th best partial score is dropped
# (``_narrow``; on 1M BM25 documents, queries shaped like SciFact's claims cut with ~4,900
# candidates and end with ~10: ``scripts/maxscore_model.py``). Every candidate left is then
# scored exactly, each term in query order (seeking in its list, the exhaustive kernel's float32
# sum), so scores are bit for bit the exhaustive ones. Partial sums run in another order than the
# exact ones: the threshold is shrunk and the bounds widened by more than float32 rounding of a sum
# of n positive terms can move them, so a document at the k-th score (a tie) stays a candidate.
# On a term of long postings (a near stop word) it reads the rare terms and seeks the candidates
# in the long list; with no such term it is the exhaustive kernel plus the k-th partial score per
# term (and a few hundred seeks at the end).

TAAT_SAMPLE = 4096  # documents the threshold and the candidates' estimate read between two terms
TAAT_MIN_DENSITY = 0.06  # MaxScore only for a query of at least this many postings per document: on BM25 1M
# (2026-12-04, per query, best of 5) it lost to the exhaustive kernel below ~60,000 postings on three query sets
# (0.78-0.94x), broke even at 60,000-200,000 and won above (2.13x on nfcorpus-profile's heaviest)
TAAT_ROUTE = 4  # MaxScore only for a query of >= this many times its k x terms final seeks in postings
TAAT_SEEK_COST = 8  # postings' worth of work to seek one candidate in one list (measured: BM25 1M)
TAAT_DEEP_K = 250  # above this k a seek costs k / TAAT_DEEP_K times more: the candidates at the cut and the
# final seeks grow with k until each seek decodes a chunk of its own (BM25 1M, queries shaped like SciFact's and
# NFCorpus's: at k = 1000 MaxScore was 0.90x / 0.93x exhaustive with seeks at 8 postings, 1.00x / 0.98x at 32, and
# the stop-word set kept 1.42x; at k = 100 the plain cost measured best: 1.30x / 1.43x, against 1.18x / 1.32x at 32)
TAAT_SMALL_DOCS = 1 << 18  # up to this many documents (an accumulator of <= 1 MB, in a core's cache) reading is
TAAT_SEEK_COST_SMALL = 32  # cheaper per posting and a seek costs this many postings' worth: SciFact BM25 with 8
# sent 216 of 300 queries to MaxScore at 0.82x the exhaustive kernel; with 32 none, 0.97x (1M sets keep 8; raising
# TAAT_ROUTE to 16 instead cost the 1M `text_queries` streams 1.45 -> 1.17x): scripts/bench_maxscore_route.py


def _fheap_push(fheap, size, k, v):
    """Min-heap of the k largest float32 values seen (``fheap[0]`` the k-th); the new size."""
    if size < k:
        fheap[size] = v
        c = size
        while c > 0:
            p = (c - 1) >> 1
            if fheap[p] <= fheap[c]:
                break
            fheap[p], fheap[c] = fheap[c], fheap[p]
            c = p
        return size + 1
    if v > fheap[0]:
        fheap[0] = v
        c = 0
        while True:
            left = 2 * c + 1
            small = c
            if left < k and fheap[left] < fheap[small]:
                small = left
            if left + 1 < k and fheap[left + 1] < fheap[small]:
                small = left + 1
            if small == c:
                break
            fheap[small], fheap[c] = fheap[c], fheap[small]
            c = small
    return size


def _kth_partial(acc, touched, n_touched, k, fheap):
    """The k-th largest accumulator value over the touched documents (0 with fewer than k)."""
    if n_touched < k:
        return np.float32(0.0)
    size = 0
    for i in range(n_touched):
        v = acc[touched[i]]
        if size < k or v > fheap[0]:  # (inline: a call per document costs more than the document)
            size = _fheap_push(fheap, size, k, v)
    return fheap[0]


def _candidates(acc, touched, n_touched, rest, theta, widen):
    """How many of the touched documents reach ``theta`` with ``rest`` added (widened)."""
    m = 0
    for i in range(n_touched):
        if (np.float64(acc[touched[i]]) + rest) * widen >= theta:
            m += 1
    return m


def _collect(acc, seen, touched, n_touched, k, rest, widen, shrink, n, fheap, cand, kept):
    """One pass over the touched documents (their accumulator and seen flags zeroed): the
    documents whose partial score plus ``rest`` (widened) reaches the k-th best partial score
    (shrunk: ``_floor``, sums of ``n`` terms) into ``cand``, their partial scores into ``kept``;
    returns their number. A document is kept as it comes when it reaches the k-th best so far
    (which only grows), and the kept ones are filtered at the end."""
    size = 0
    m = 0
    theta = np.float64(0.0)
    for i in range(n_touched):
        d = touched[i]
        v = acc[d]
        acc[d] = 0.0
        seen[d] = 0
        if size < k or v > fheap[0]:  # (inline: a call per document costs more than the document)
            size = _fheap_push(fheap, size, k, v)
            if size == k:
                theta = _floor(fheap[0], shrink, n)
        if (np.float64(v) + rest) * widen >= theta:
            cand[m] = d
            kept[m] = v
            m += 1
    theta = _floor(fheap[0], shrink, n) if size == k else 0.0
    out = 0
    for i in range(m):
        if (np.float64(kept[i]) + rest) * widen >= theta:
            cand[out] = cand[i]
            kept[out] = kept[i]
            out += 1
    return out


def _narrow(buf, table, float_bits, norms, norm_table, q_weights, idf, qstate, cache_docs, cache_vals, order, rest,
            stop, k, widen, shrink, fheap, acc, cand, partial, m):
    """The candidates ``cand[:m]`` (their partial scores in ``partial``) after MaxScore's cut at
    ``stop``, narrowed: the unread terms sought at them one at a time, largest bound first, and
    after each term the candidates whose partial score plus the bounds still unread falls below the
    k-th best partial (a lower bound of the k-th score, rising as terms are added) dropped. Keeps
    them in doc order in ``cand[:m']``; returns m', or -1 for a corrupt list. The partial sums
    live in ``acc`` (zero elsewhere, and zeroed again on every way out)."""
    num_docs = acc.shape[0]
    for x in range(m):
        acc[cand[x]] = partial[x]
    cand[:m].sort()
    for i in range(stop, order.shape[0]):
        j = order[i]
        st = qstate[j]
        if st[ST_DF] > 0:
            _rewind(st)
            w = q_weights[j]
            for x in range(m):
                d = cand[x]
                found, v = _seek_value(buf, st, d, num_docs, cache_docs[j], cache_vals[j], table, float_bits, norms,
                                       norm_table)
                if found < 0:
                    m = -m - 1
                    break
                if found:
                    acc[d] += w * _impact(st[ST_MODE], idf[j], v)
            if m < 0:
                for x in range(-m - 1):
                    acc[cand[x]] = 0.0
                return -1
        size = 0
        for x in range(m):  # (inline: a call per document costs more than the document)
            v = acc[cand[x]]
            if size < k or v > fheap[0]:
                size = _fheap_push(fheap, size, k, v)
        theta = _floor(fheap[0], shrink, order.shape[0]) if size == k else 0.0
        out = 0
        for x in range(m):
            d = cand[x]
            if (np.float64(acc[d]) + rest[i + 1]) * widen >= theta:
                cand[out] = d
                out += 1
            else:
                acc[d] = 0.0
        m = out
    for x in range(m):
        acc[cand[x]] = 0.0
    return m


def _maxscore_taat(buf, term_ptr, table, float_bits, norms, norm_table, q_terms, q_weights, tie_rank, k, approx,
                   acc, seen, touched, heap, qstate, cache_docs, cache_vals, arena_docs, arena_vals, seek_cost):
    """MaxScore term at a time (above): the k best keys left in ``heap``; returns their count,
    -1 for a corrupt index, -2 when too many candidates stay (the accumulator is cleared; the
    caller reads the query exhaustively), -3 when it would not pay (nothing read). ``approx`` < 1:
    the unread terms dropped once their bounds fall below ``theta / approx`` (sooner; a document
    only they hold is missed; scores stay exact)."""
    num_docs = acc.shape[0]
    n = q_terms.shape[0]
    ub = np.zeros(n, dtype=np.float64)
    idf = np.zeros(n, dtype=np.float32)
    nmax = np.float32(0.0)
    for i in range(norm_table.shape[0]):
        if norm_table[i] > nmax:
            nmax = norm_table[i]
    if k > TAAT_DEEP_K:
        seek_cost = seek_cost * (k / TAAT_DEEP_K)
    total_postings = 0
    for j in range(n):
        if _open_term(buf, term_ptr, q_terms[j], num_docs, table.shape[0], norms.shape[0], norm_table.shape[0],
                      qstate[j]) < 0:
            return -1
        total_postings += qstate[j, ST_DF]
    if k * n * seek_cost * TAAT_ROUTE > total_postings:  # the final seeks alone would weigh: read it all
        return -3
    if seek_cost > 0 and total_postings < TAAT_MIN_DENSITY * num_docs:  # too light a query to gain from a cut
        return -3
    for j in range(n):
        st = qstate[j]
        if st[ST_DF] == 0:
            continue
        idf[j] = _idf(st, table)
        bound = _term_bound(buf, st, table, float_bits, nmax)
        if bound < 0.0:
            return -1
        ub[j] = np.float64(q_weights[j]) * np.float64(bound)
    order = np.argsort(-ub, kind="mergesort")  # largest bound first
    rest = np.zeros(n + 1, dtype=np.float64)  # rest[i]: the bounds of order[i:] summed
    for i in range(n - 1, -1, -1):
        rest[i] = rest[i + 1] + ub[order[i]]
    eps = 8.0 * (n + 2) * 2.0 ** -24
    widen = 1.0 + eps
    shrink = 1.0 - eps
    fheap = np.empty(max(k, 1), dtype=np.float32)
    n_touched = 0
    theta = np.float64(0.0)
    read = 0  # postings added so far
    stop = n
    for i in range(n):
        j = order[i]
        st = qstate[j]
        added = _add_chunks(buf, st, q_weights[j], idf[j], table, float_bits, norms, norm_table, cache_docs[j],
                            cache_vals[j], acc, seen, touched, n_touched)
        if added < 0:
            for x in range(-1 - added):
                acc[touched[x]] = 0.0
                seen[touched[x]] = 0
            return -1
        n_touched = added
        read += st[ST_DF]
        # can the terms left be dropped? Only if their bounds fall below what the read ones can give
        if i + 1 < n and rest[i + 1] * widen * approx < rest[0] - rest[i + 1] and n_touched >= k:
            # the k-th best of the first documents touched (the rarest terms'): a lower bound, found cheaply
            theta = _floor(_kth_partial(acc, touched, min(n_touched, k + TAAT_SAMPLE), k, fheap), shrink, n)
            if rest[i + 1] * widen * approx < theta:
                stride = max(1, n_touched // TAAT_SAMPLE)  # candidates estimated from a sample
                cands = stride * _candidates(acc, touched[::stride], (n_touched + stride - 1) // stride, rest[i + 1],
                                             theta, widen)
                if cands * seek_cost <= qstate[order[i + 1], ST_DF]:  # seeking them costs less than the next list
                    stop = i + 1
                    break
    if n_touched <= arena_docs.shape[0]:  # (per-thread scratch: an allocation per query stalls threads)
        cand = arena_docs[:n_touched]
        score = arena_vals[:n_touched]
    else:
        cand = np.empty(n_touched, dtype=np.int32)
        score = np.empty(n_touched, dtype=np.float32)
    m = _collect(acc, seen, touched, n_touched, k, rest[stop], widen, shrink, n, fheap, cand, score)
    if stop == n and m * n * seek_cost > read:  # no cut and many candidates (k near the matches): read again
        return -2
    if stop < n:
        m = _narrow(buf, table, float_bits, norms, norm_table, q_weights, idf, qstate, cache_docs, cache_vals, order,
                    rest, stop, k, widen, shrink, fheap, acc, cand, score, m)
        if m < 0:
            return -1
    cand = cand[:m]
    if stop == n:  # (_narrow leaves them in doc order)
        cand.sort()
    score = score[:m]
    score[:] = 0.0
    for j in range(n):  # exact scores: every term in query order, as the exhaustive kernel sums them
        st = qstate[j]
        if st[ST_DF] == 0:
            continue
        _rewind(st)
        w = q_weights[j]
        for x in range(m):
            found, v = _seek_value(buf, st, cand[x], num_docs, cache_docs[j], cache_vals[j], table, float_bits, norms,
                                   norm_table)
            if found < 0:
                return -1
            if found:
                score[x] += w * _impact(st[ST_MODE], idf[j], v)
    bits = score.view(np.uint32)
    size = 0
    for x in range(m):
        if score[x] > 0.0:
            key = (np.uint64(bits[x]) << np.uint64(32)) | (_LOW - np.uint64(tie_rank[cand[x]]))
            if size < k or key > heap[0]:
                size = _heap_push(heap, size, k, key)
    return size


# -- superblocks: a coarse first level of block-max bounds (packed postings) --------------------
#
# On a large collection the bounds pass dominates a pruned query: a common query term holds a
# block-max entry in nearly every block (156,000 blocks at 10M documents), each decoded and
# added. A *superblock* is ``2**sb_shift`` consecutive blocks. For every term whose stored
# block-max list has at least ``sb_min`` entries, the index derives at load (``super_summary``:
# nothing stored, no format change) one entry per superblock it touches: the first block it holds
# there, where that block's entry sits in its block-max list, and the largest impact there.
#
# ``_pruned_super`` then bounds superblocks first: the terms without a summary (short lists) add
# their block maxima into the block bounds as before, each superblock takes the largest of its
# blocks' bounds, and every summarised term adds ``w * max`` to the superblocks it touches.
# Superblocks are *refined* best bound first (the summarised terms' entries of that superblock
# decoded into its blocks' bounds, found from the summary without reading the rest of the list),
# their blocks go on a max-heap of block bounds, and the best block is scored whenever its bound
# is at least the best unrefined superblock's; the search stops when neither can reach the k-th
# score. A superblock's terms are refined heaviest first, and it is dropped unrefined as soon as
# its best block bound so far plus the superblock maxima of the terms still unread falls below the
# k-th score (10M SPLADE-like: 3,105 refinements a query before). When the unsummarised terms
# hold entries in most blocks (``GATHER_SHARE``), superblock bounds come from one sweep of the
# block bounds and the scratch is cleared whole, with no candidate list (1.21x with the former,
# 6.90 -> 5.71 ms). Block bounds now add terms in two passes, not in the query's term order, so every bound
# is widened by ``2 (n + 1) 2**-24`` (more than float32 rounding of a sum of n positive terms can
# move it) and compared in float64; a block or superblock is skipped only when below the
# threshold, so ties are scored and the result stays the exhaustive one, bit for bit.

SB_SHIFT = 6  # 64 blocks (4,096 documents) per superblock
SB_SHARE = 0.4  # a term is summarised when its block-max list covers this share of the blocks: measured on
# 10M SPLADE-like (156k blocks), terms of >= 65,536 entries (42%): 10.8 ms a query, >= 32,768: 11.9, >= 16,384
# (10%): 25-31 (slower than without superblocks, 17.3: the bounds of superblocks are loose, most get refined)


def _super_summary(buf, term_ptr, num_docs, table, float_bits, norms_len, norm_table, shift, sb_shift, sb_min, st,
                   ptr, first, entry, val, fill):
    """Count (``fill`` False: into ``ptr[t + 1]``) or write each summarised term's superblock
    entries: first block, its entry index, largest impact (float32, as the bounds pass reads
    it). A term whose header or block-max list is corrupt gets none (the kernel's own checks
    then find it). Returns the number of entries."""
    n_blocks = (num_docs >> shift) + 1
    total = 0
    for t in range(term_ptr.shape[0] - 1):
        if fill and ptr[t + 1] == ptr[t]:
            continue
        if _open_term(buf, term_ptr, t, num_docs, table.shape[0], norms_len, norm_table.shape[0], st) < 0:
            continue
        m = st[ST_M]
        if st[ST_BM] < 0 or m < sb_min:
            continue
        wg, wv, gpos, vpos, npos = _bm_layout(buf, st)
        mode = st[ST_MODE]
        base = st[ST_BASE]
        size = st[ST_SIZE]
        idf = np.float32(table[base]) if mode == MODE_BM25 else np.float32(0.0)
        b = -1
        cur = -1
        n = 0
        e = ptr[t] if fill else 0
        ok = True
        for i in range(m):
            b += 1 + _bits_at(buf, gpos, i, wg)
            code = _bits_at(buf, vpos, i, wv)
            if b >= n_blocks or (mode == MODE_TABLE and code >= size):
                ok = False
                break
            s = b >> sb_shift
            if s != cur:
                cur = s
                n += 1
                if fill:
                    first[e + n - 1] = b
                    entry[e + n - 1] = i
                    val[e + n - 1] = 0.0
            if fill:
                v = _bm_value(buf, npos, i, mode, code, base, size, table, float_bits, idf, norm_table)
                if v > val[e + n - 1]:
                    val[e + n - 1] = v
        if not fill:
            ptr[t + 1] = n if ok else 0
        total += n if ok else 0
    return total


def _mh_push(h, n, key):
    """Push ``key`` on the max-heap ``h[:n]``; returns n + 1."""
    i = n
    h[i] = key
    while i > 0:
        parent = (i - 1) >> 1
        if h[parent] >= h[i]:
            break
        h[parent], h[i] = h[i], h[parent]
        i = parent
    return n + 1


def _mh_pop(h, n):
    """Remove the largest key of the max-heap ``h[:n]`` (n > 0); returns n - 1."""
    n -= 1
    h[0] = h[n]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and h[c + 1] > h[c]:
            c += 1
        if h[i] >= h[c]:
            break
        h[i], h[c] = h[c], h[i]
        i = c
    return n


def _sb_top(ub, s, sb_shift):
    """The largest block bound of superblock ``s`` (0 when none)."""
    top = np.float32(0.0)
    for b in range(s << sb_shift, min((s + 1) << sb_shift, ub.shape[0])):
        top = max(top, ub[b])
    return top


def _refine(buf, st, w, bit, e0, b0, sb_shift, table, float_bits, norm_table, ub, ub_seen, ub_mask, cand, n_cand):
    """Add a summarised term's block maxima of one superblock (its block-max list from entry
    ``e0``, block ``b0``) to the block bounds; (n_cand, status, the largest bound among the blocks
    it added to)."""
    m = st[ST_M]
    wg, wv, gpos, vpos, npos = _bm_layout(buf, st)
    mode = st[ST_MODE]
    base = st[ST_BASE]
    size = st[ST_SIZE]
    idf = np.float32(table[base]) if mode == MODE_BM25 else np.float32(0.0)
    s = b0 >> sb_shift
    b = b0
    i = e0
    # entry i's gap and code from two bit buffers refilled 32 bits at a time (as _bounds_stored),
    # started at entry e0's bits (a first load with nb < 0)
    gbit = (e0 + 1) * wg  # entry e0's own gap is already in b0
    gpos = gpos + (gbit >> 3)
    gacc = np.uint64(0)
    gnb = -(gbit & 7)
    vbit = e0 * wv
    vpos = vpos + (vbit >> 3)
    vacc = np.uint64(0)
    vnb = -(vbit & 7)
    gmask = (np.uint64(1) << np.uint64(wg)) - np.uint64(1)
    vmask = (np.uint64(1) << np.uint64(wv)) - np.uint64(1)
    top = np.float32(0.0)
    while True:
        code, vacc, vnb, vpos = _take(buf, vpos, vacc, vnb, wv, vmask)
        if b >= ub.shape[0] or (mode == MODE_TABLE and code >= size):
            return n_cand, -1, top
        if mode == MODE_BM25:  # (written out as in _bounds_stored: _bm_value here measured 1.3x slower queries)
            v = _bm25(idf, np.float32(code + 1), norm_table[buf[npos + i]])
        else:
            v = _value(mode, code, base, size, table, float_bits, idf, np.float32(0.0))
        if ub_seen[b] == 0:
            ub_seen[b] = 1
            cand[n_cand] = b
            n_cand += 1
        ub[b] += w * v
        ub_mask[b] |= bit
        top = max(top, ub[b])
        i += 1
        if i >= m:
            break
        g, gacc, gnb, gpos = _take(buf, gpos, gacc, gnb, wg, gmask)
        b += 1 + g
        if (b >> sb_shift) != s:
            break
    return n_cand, 0, top


def _pruned_super(buf, term_ptr, table, float_bits, norms, norm_table, shift, q_terms, q_weights, tie_rank, k,
                  approx, block_cost, per_hit, ub, ub_seen, ub_mask, cand, order, heap, loc_acc, loc_seen, loc_list,
                  qstate, cache_docs, cache_vals, arena_docs, arena_vals, arena_blocks, whole, sb_ptr, sb_first,
                  sb_entry, sb_val, sb_shift, sub, sub_seen, sub_cand):
    """``_pruned_packed`` with superblocks (above): the same result, the same contract (size or
    -1 corrupt / -2 over budget, blocks scored); ``order`` holds the block heap; ``sub``,
    ``sub_seen`` (one per superblock, zeros) and ``sub_cand`` come back zeroed."""
    num_docs = tie_rank.shape[0]
    n = q_terms.shape[0]
    n_cand = 0
    n_sc = 0
    status = 0
    postings = 0
    used = np.zeros(2, dtype=np.int64)
    for j in range(n):
        if _open_term(buf, term_ptr, q_terms[j], num_docs, table.shape[0], norms.shape[0], norm_table.shape[0],
                      qstate[j]) < 0:
            return -1, 0
        postings += qstate[j, ST_DF]
    budget = _budget(postings, block_cost, n)
    if budget >= 0 and max(_first_blocks(k, shift), per_hit * k) > budget:
        return -2, 0
    summarised = np.zeros(n, dtype=np.bool_)
    entries = 0
    for j in range(n):
        t = q_terms[j]
        if qstate[j, ST_DF] > 0 and qstate[j, ST_BM] >= 0:
            if sb_ptr[t + 1] > sb_ptr[t]:
                summarised[j] = True
            else:
                entries += qstate[j, ST_M]
    track = entries < GATHER_SHARE * ub.shape[0]
    heavy = np.zeros(n, dtype=np.float32)  # each term's largest w x block maximum
    for j in range(n):  # terms without a summary: block bounds, as _pruned_packed
        st = qstate[j]
        if st[ST_DF] == 0 or summarised[j]:
            continue
        bit = np.uint64(1) << np.uint64(j & 63)
        if st[ST_BM] >= 0:
            n_cand, status, heavy[j] = _bounds_stored(buf, st, q_weights[j], bit, table, float_bits, norm_table,
                                                      ub, ub_seen, ub_mask, cand, n_cand, track)
        else:
            n_cand, status, heavy[j] = _bounds_derived(buf, st, q_weights[j], bit, shift, num_docs, table,
                                                       float_bits, norms, norm_table, cache_docs[j], cache_vals[j],
                                                       ub, ub_seen, ub_mask, cand, n_cand, arena_docs, arena_vals,
                                                       arena_blocks, used)
        if status < 0:
            break
    n_blocks = ub.shape[0]
    if status == 0 and track:
        for i in range(n_cand):  # a superblock's bound from those terms: its best block's
            b = cand[i]
            s = b >> sb_shift
            if sub_seen[s] == 0:
                sub_seen[s] = 1
                sub_cand[n_sc] = s
                n_sc += 1
            if ub[b] > sub[s]:
                sub[s] = ub[b]
    elif status == 0:  # most blocks have a bound: one sweep of them, no candidate list (cleared whole)
        for s in range(sub.shape[0]):
            top = _sb_top(ub, s, sb_shift)
            if top > 0.0:
                sub_seen[s] = 1
                sub_cand[n_sc] = s
                n_sc += 1
                sub[s] = top
    if status == 0:
        for j in range(n):
            if not summarised[j]:
                continue
            t = q_terms[j]
            w = q_weights[j]
            for e in range(sb_ptr[t], sb_ptr[t + 1]):
                s = sb_first[e] >> sb_shift
                if s >= sub.shape[0]:
                    status = -1
                    break
                if sub_seen[s] == 0:
                    sub_seen[s] = 1
                    sub_cand[n_sc] = s
                    n_sc += 1
                x = w * sb_val[e]
                heavy[j] = max(heavy[j], x)
                sub[s] += x
    # Blocks are scored heaviest term first: a block is given up after fewer terms (10M
    # SPLADE-like: 18.2 -> 14.6 terms read a block); its scores are then summed in query order.
    perm = np.argsort(-heavy, kind="mergesort")
    r_x = np.empty(n, dtype=np.float64)  # a superblock's summarised terms, heaviest first
    r_j = np.empty(n, dtype=np.int64)
    r_e = np.empty(n, dtype=np.int64)
    loc_vals = np.zeros((loc_acc.shape[0], n), dtype=np.float32)
    sum_widen = 1.0 + 2.0 * (n + 1) * 2.0 ** -24
    widen = np.float64(approx) * sum_widen
    scored = 0
    size = 0
    nh = 0
    if status == 0:
        sub_bits = sub.view(np.uint32)
        skeys = np.empty(n_sc, dtype=np.uint64)
        for i in range(n_sc):
            s = sub_cand[i]
            skeys[i] = (np.uint64(sub_bits[s]) << np.uint64(32)) | np.uint64(s)
        skeys = np.sort(skeys)
        ub_bits = ub.view(np.uint32)
        nxt = n_sc - 1
        while True:
            theta = _floor(_threshold(heap, size, k), 1.0, n)
            sb_bound = np.float64(np.uint32(skeys[nxt] >> np.uint64(32)).view(np.float32)) if nxt >= 0 else -1.0
            if nh > 0 and np.float64(np.uint32(order[0] >> np.uint64(32)).view(np.float32)) >= sb_bound:
                key = order[0]
                if widen * np.float64(np.uint32(key >> np.uint64(32)).view(np.float32)) < theta:
                    break  # no block, and no superblock, can reach the top k
                if budget >= 0 and scored >= budget:
                    status = -2
                    break
                nh = _mh_pop(order, nh)
                b = np.int64(key & _LOW)
                ub_seen[b] = 2  # scored
                size = _score_block_packed(b, buf, table, float_bits, norms, norm_table, shift, q_weights, tie_rank,
                                           k, heap, size, ub_mask, loc_acc, loc_seen, loc_list, qstate, cache_docs,
                                           cache_vals, arena_docs, arena_vals, arena_blocks, used, whole,
                                           np.float64(ub[b]) * sum_widen, perm, loc_vals)
                scored += 1
                if size < 0:
                    status = -1
                    break
                continue
            if nxt < 0 or widen * sb_bound < theta:
                break
            s = np.int64(skeys[nxt] & _LOW)
            nxt -= 1
            n_r = 0  # refine: the summarised terms' maxima of the superblock's blocks
            rest = 0.0  # what the terms not refined yet may add to a block: their superblock maxima
            for j in range(n):
                if not summarised[j]:
                    continue
                t = q_terms[j]
                lo = sb_ptr[t]
                hi = sb_ptr[t + 1]
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if (sb_first[mid] >> sb_shift) < s:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo == sb_ptr[t + 1] or (sb_first[lo] >> sb_shift) != s:
                    continue
                x = q_weights[j] * sb_val[lo]
                i = n_r  # kept heaviest first (insertion: a few terms)
                while i > 0 and r_x[i - 1] < x:
                    r_x[i] = r_x[i - 1]
                    r_j[i] = r_j[i - 1]
                    r_e[i] = r_e[i - 1]
                    i -= 1
                r_x[i] = x
                r_j[i] = j
                r_e[i] = lo
                n_r += 1
                rest += x
            top = _sb_top(ub, s, sb_shift)  # the best block's bound so far
            full = True
            for i in range(n_r):
                if widen * (np.float64(top) + rest) < theta:
                    full = False  # no block here can reach the top k (theta only rises): the rest unread
                    break
                j = r_j[i]
                e = r_e[i]
                n_cand, status, got = _refine(buf, qstate[j], q_weights[j], np.uint64(1) << np.uint64(j & 63),
                                              np.int64(sb_entry[e]), np.int64(sb_first[e]), sb_shift, table,
                                              float_bits, norm_table, ub, ub_seen, ub_mask, cand, n_cand)
                if status < 0:
                    break
                top = max(top, got)
                rest -= r_x[i]
            if status < 0:
                break
            if not full:
                continue
            for b in range(s << sb_shift, min((s + 1) << sb_shift, n_blocks)):
                if ub_seen[b] != 2 and ub[b] > 0.0 and widen * np.float64(ub[b]) >= theta:
                    nh = _mh_push(order, nh, (np.uint64(ub_bits[b]) << np.uint64(32)) | np.uint64(b))
    if track:
        for i in range(n_cand):
            b = cand[i]
            ub[b] = 0.0
            ub_seen[b] = 0
            ub_mask[b] = 0
    else:
        ub[:] = 0.0
        ub_seen[:] = 0
        ub_mask[:] = 0
    for i in range(n_sc):
        s = sub_cand[i]
        sub[s] = 0.0
        sub_seen[s] = 0
    return (size if status == 0 else status), scored


def _search_packed(lo, hi, q_ptr, q_terms, q_weights, k, strategy, approx, block_cost, per_hit, buf, term_ptr,
                   table, float_bits, norms, norm_table, tie_rank, shift, acc, seen, touched, ub, ub_seen, ub_mask, cand,
                   order, loc_acc, loc_seen, loc_list, heap, qstate, cache_docs, cache_vals, arena_docs,
                   arena_vals, arena_blocks, whole, ms_terms, seek_cost, out_keys, out_counts, out_scored,
                   out_route, sb_ptr, sb_first, sb_entry, sb_val, sb_shift, sub, sub_seen, sub_cand):
    """``_search_queries`` over packed postings (``buf`` the stream, ``term_ptr`` where each
    term starts, ``table`` its impact table, ``norms``/``norm_table`` the BM25 length bytes);
    ``qstate``, ``cache_docs`` and ``cache_vals`` have a row per term of the longest query.
    An exact pruned query of at most ``ms_terms`` terms (BM25's short queries) is read with
    MaxScore term at a time (``_maxscore_taat``, ``seek_cost`` its cost model), or exhaustively
    when that would not pay; longer and approximate ones with block-max bounds (or exhaustively
    when the blocks would not pay). ``out_route``: ROUTE_* per query. With a superblock summary
    (``sb_ptr`` longer than 1: ``super_summary``), block-max queries of more than ``ms_terms``
    terms bound superblocks first (``_pruned_super``; ``sub``, ``sub_seen``, ``sub_cand``: its
    scratch); shorter (approximate) ones keep the plain kernel, whose early estimate of the blocks
    left sends a query that blocks will not pay for to the exhaustive kernel before it spends its
    budget (measured on BM25 1M: with superblocks for every query, pruned k = 1000 fell to 0.68x)."""
    for q in range(lo, hi):
        terms = q_terms[q_ptr[q]:q_ptr[q + 1]]
        weights = q_weights[q_ptr[q]:q_ptr[q + 1]]
        if terms.shape[0] > qstate.shape[0]:
            out_counts[q] = -1
            continue
        route = ROUTE_EXHAUSTIVE
        if strategy == 0:
            size = _exhaustive_packed(buf, term_ptr, table, float_bits, norms, norm_table, terms, weights, tie_rank,
                                      k, acc, seen, touched, heap, qstate, cache_docs, cache_vals, arena_docs,
                                      arena_vals, False)
            scored = 0
        else:
            if terms.shape[0] <= ms_terms:
                route = ROUTE_MAXSCORE
                size = _maxscore_taat(buf, term_ptr, table, float_bits, norms, norm_table, terms, weights,
                                      tie_rank, k, approx, acc, seen, touched, heap, qstate, cache_docs, cache_vals,
                                      arena_docs, arena_vals, seek_cost)
                scored = -1  # (no blocks)
                if size == -2 or size == -3:  # it would not pay: the exhaustive kernel (-3: nothing read yet)
                    route = ROUTE_EXHAUSTIVE
                    size = _exhaustive_packed(buf, term_ptr, table, float_bits, norms, norm_table, terms, weights,
                                              tie_rank, k, acc, seen, touched, heap, qstate, cache_docs, cache_vals,
                                              arena_docs, arena_vals, size == -3)
            else:
                route = ROUTE_BLOCKMAX
                if sb_ptr.shape[0] > 1 and terms.shape[0] > ms_terms:
                    size, scored = _pruned_super(buf, term_ptr, table, float_bits, norms, norm_table, shift, terms,
                                                 weights, tie_rank, k, approx, block_cost, per_hit, ub, ub_seen,
                                                 ub_mask, cand, order, heap, loc_acc, loc_seen, loc_list, qstate,
                                                 cache_docs, cache_vals, arena_docs, arena_vals, arena_blocks, whole,
                                                 sb_ptr, sb_first, sb_entry, sb_val, sb_shift, sub, sub_seen, sub_cand)
                else:
                    size, scored = _pruned_packed(buf, term_ptr, table, float_bits, norms, norm_table, shift, terms,
                                                  weights, tie_rank, k, approx, block_cost, per_hit, ub, ub_seen,
                                                  ub_mask, cand, order, heap, loc_acc, loc_seen, loc_list, qstate,
                                                  cache_docs, cache_vals, arena_docs, arena_vals, arena_blocks, whole)
                if size == -2:  # the blocks would not pay
                    route = ROUTE_EXHAUSTIVE
                    size = _exhaustive_packed(buf, term_ptr, table, float_bits, norms, norm_table, terms, weights,
                                              tie_rank, k, acc, seen, touched, heap, qstate, cache_docs, cache_vals,
                                              arena_docs, arena_vals, True)
                    scored = -1 - scored
        out_route[q] = route
        out_counts[q] = size
        out_scored[q] = scored
        if size > 0:
            _emit(heap, size, k, out_keys, q)


def _decode_rows(keys, counts, lo, hi, tie_order, scale, ids, scores, best_last=False):
    """Rows ``lo..hi`` of a batch's packed keys (their first ``counts[q]`` entries, best first; with
    ``best_last`` their last, best last: ``sort_rows``; none for a corrupt query's -1) into
    internal ids (``tie_order`` of the tie rank) and float32 scores,
    divided by ``scale`` when it is above 0: ``decode_keys`` done by the thread that searched
    those rows (at k = 1000 the batch's decoding done once at the end, in one thread, was 16 of
    104 ms of a two-thread batch of short BM25 queries)."""
    bits = scores.view(np.uint32)
    last = keys.shape[1] - 1
    for q in range(lo, hi):
        for i in range(counts[q]):
            key = keys[q, last - i] if best_last else keys[q, i]
            ids[q, i] = tie_order[np.int64(_LOW - (key & _LOW))]
            bits[q, i] = np.uint32(key >> np.uint64(32))
            if scale > 0:
                scores[q, i] = scores[q, i] / scale


if HAVE_NUMBA:
    # A kernel that allocates nothing is compiled without numba's reference counting (``_nrt``):
    # with it, every call increfs each array argument on entry and decrefs it on exit (atomic
    # operations, pruned by LLVM only in simple control flow), and the pruned path makes such calls
    # per block, chunk and superblock: 11% of a 10M SPLADE-like query (perf), 7.60 -> 6.80 ms with
    # these lean, the exhaustive kernel 1.4%. A kernel that allocates (a sort too), or calls one
    # that does, fails to compile lean (its callees are compiled with its flags): those keep NRT.
    lean = dict(nogil=True, cache=True, _nrt=False)
    _heap_push = njit(**lean)(_heap_push)
    _find = njit(**lean)(_find)
    _threshold = njit(**lean)(_threshold)
    _floor = njit(**lean)(_floor)
    _first_blocks = njit(**lean)(_first_blocks)
    _budget = njit(**lean)(_budget)
    _best_first = njit(**lean)(_best_first)
    _blocks_left = njit(nogil=True, cache=True)(_blocks_left)
    _top_keys = njit(nogil=True, cache=True)(_top_keys)
    _exhaustive = njit(nogil=True, cache=True)(_exhaustive)
    _score_block = njit(**lean)(_score_block)
    _pruned = njit(nogil=True, cache=True)(_pruned)
    search_queries = njit(nogil=True, cache=True)(_search_queries)
    build_counts = njit(**lean)(_build_counts)
    build_fill = njit(**lean)(_build_fill)
    _add_postings = njit(**lean)(_add_postings)
    _add_chunks = njit(**lean)(_add_chunks)
    _offer = njit(**lean)(_offer)
    _select = njit(nogil=True, cache=True)(_select)
    _top_keys_dense = njit(nogil=True, cache=True)(_top_keys_dense)
    _emit = njit(nogil=True, cache=True)(_emit)
    _exhaustive_packed = njit(nogil=True, cache=True)(_exhaustive_packed)
    _decode_whole = njit(**lean)(_decode_whole)
    _bounds_stored = njit(**lean)(_bounds_stored)
    _gather = njit(**lean)(_gather)
    _bounds_derived = njit(**lean)(_bounds_derived)
    _score_block_packed = njit(**lean)(_score_block_packed)
    _pruned_packed = njit(nogil=True, cache=True)(_pruned_packed)
    _term_bound = njit(**lean)(_term_bound)
    _ms_seek = njit(**lean)(_ms_seek)
    _rewind = njit(**lean)(_rewind)
    _seek_value = njit(**lean)(_seek_value)
    _fheap_push = njit(**lean)(_fheap_push)
    _kth_partial = njit(**lean)(_kth_partial)
    _candidates = njit(**lean)(_candidates)
    _collect = njit(**lean)(_collect)
    _narrow = njit(nogil=True, cache=True)(_narrow)
    _maxscore_taat = njit(nogil=True, cache=True)(_maxscore_taat)
    super_summary = njit(**lean)(_super_summary)
    _mh_push = njit(**lean)(_mh_push)
    _mh_pop = njit(**lean)(_mh_pop)
    _sb_top = njit(**lean)(_sb_top)
    _refine = njit(**lean)(_refine)
    _pruned_super = njit(nogil=True, cache=True)(_pruned_super)
    decode_rows = njit(nogil=True, cache=True)(_decode_rows)
    search_packed = njit(nogil=True, cache=True)(_search_packed)
    _nbytes = njit(nogil=True, cache=True, inline="always")(_nbytes)
    _get_varint = njit(nogil=True, cache=True, inline="always")(_get_varint)
    _bits_at = njit(nogil=True, cache=True, inline="always")(_bits_at)
    _refill = njit(nogil=True, cache=True, inline="always")(_refill)
    _take = njit(nogil=True, cache=True, inline="always")(_take)
    _chunk_header = njit(nogil=True, cache=True, inline="always")(_chunk_header)
    _open_term = njit(**lean)(_open_term)
    _bm25 = njit(**lean)(_bm25)
    _bm25p = njit(nogil=True, cache=True, inline="always")(_bm25p)
    _impact = njit(nogil=True, cache=True, inline="always")(_impact)
    _idf = njit(nogil=True, cache=True, inline="always")(_idf)
    _value = njit(nogil=True, cache=True, inline="always")(_value)
    _float_of_bits = njit(nogil=True, cache=True, inline="always")(_float_of_bits)
    _decode_docs = njit(**lean)(_decode_docs)
    _unpack = njit(**lean)(_unpack)
    _decode_values = njit(**lean)(_decode_values)
    _value_at = njit(nogil=True, cache=True, inline="always")(_value_at)
    _decode_chunk = njit(**lean)(_decode_chunk)
    _load_docs = njit(**lean)(_load_docs)
    _find_chunk = njit(**lean)(_find_chunk)
    _load_chunk = njit(**lean)(_load_chunk)
    _bm_layout = njit(nogil=True, cache=True, inline="always")(_bm_layout)
    _bm_value = njit(nogil=True, cache=True, inline="always")(_bm_value)
    _read_blockmax = njit(**lean)(_read_blockmax)
    _doc_freqs = njit(**lean)(_doc_freqs)
    _term_modes = njit(**lean)(_term_modes)
    _verify_terms = njit(**lean)(_verify_terms)
    _decode_all = njit(**lean)(_decode_all)
else:  # pragma: no cover
    search_queries, build_counts, build_fill = _search_queries, _build_counts, _build_fill
    search_packed = _search_packed
    super_summary = _super_summary
    decode_rows = _decode_rows


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
