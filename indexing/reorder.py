"""Document reordering by recursive graph bisection (BP; Dhulipala et al., KDD 2016).

Give documents new internal ids so that documents sharing terms sit next to each other: each
term's posting list then has small gaps (smaller compressed postings) and blocks of consecutive
documents have tighter per-term maxima (block-max pruning).

The method: split the documents into two halves and, for a fixed number of iterations, swap
pairs of documents between the halves when that lowers an estimate of the cost of
delta-encoding every posting list; then recurse into each half until a partition has at most
``min_size`` documents (or ``max_depth`` levels are done). For a term with ``d1`` of its
documents in a half of ``n1`` documents and ``d2`` in the other half of ``n2``, the estimated
cost is ``d1 * log2(n1 / (d1 + 1)) + d2 * log2(n2 / (d2 + 1))`` (the paper's "LogGap" bound).
Moving a document from one half to the other gains, per term it contains, the drop in that
cost; a document's gain is the sum over its terms. Each iteration sorts both halves by gain
(descending, stable) and swaps the i-th documents of the two halves while their gains sum to
more than zero; it stops early when nothing moves.

Contracts (:func:`bisect_order`):

- Input is a document -> term CSR: ``indptr`` (num_docs + 1, non-decreasing from 0) and
  ``indices`` (term ids in ``[0, num_terms)``). Term ids within a document are expected to be
  distinct; a repeated one only weighs that term double.
- Output ``order`` (int32, length num_docs) lists old doc ids by new position: ``order[new] =
  old``. It is a permutation (every document exactly once), whatever the input (empty
  documents, identical documents, no documents).
- Deterministic for a given input and ``seed``: the seed fixes the initial order (a seeded
  shuffle), all arithmetic is sequential float64 with log2 taken from one precomputed table,
  and ties in the gain sort keep positional order. The result does not depend on the number of
  threads (the partitions of one level are independent and each is processed by one thread).
- Memory: the input plus O(num_docs) for the order and the log table, plus four arrays of
  ``num_terms`` entries and two of the largest partition size per worker. Never a dense
  document x term matrix, never a transposed copy.

The compiled path (numba, GIL released, the partitions of a level in parallel) is the one to
use; :func:`bisect_order_reference` is a plain Python/numpy rendering of the same algorithm
(degrees recounted from scratch each iteration, full sorts) for tests: it returns the identical
order, only much slower.

:func:`log_gap_cost` measures an ordering: total over terms of ``log2`` of the gaps between
consecutive postings (the first gap counted from position -1). Divided by the number of
postings it is an estimate of bits per posting for a delta coder.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from indexing.cpus import usable_cpus

try:
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a core dependency
    HAVE_NUMBA = False

__all__ = ["bisect_order", "bisect_order_reference", "log_gap_cost", "doc_term_csr", "bp_terms",
           "inverse_permutation"]


# -- kernels (plain Python; compiled below when numba is present) -----------------------------

def _bisect_partition(wptr, widx, lo, mid, hi, iterations, log2n, side, perm,
                      deg1, deg2, gain_l, gain_r, cost, terms, dirty, flag, gains, cand_l, cand_r):
    """Bisect the working rows ``[lo, hi)`` into ``mid - lo`` and ``hi - mid`` documents.

    Row ``i`` of the working CSR (``wptr``, ``widx``) is the document at position ``i`` when
    the level began. Rows never move while the partition is worked on: ``side[i]`` (1 left,
    0 right) says where each is, so every pass reads the rows sequentially. On return
    ``perm[lo:hi]`` lists the rows by new position: the left rows ascending, then the right.

    Scratch: ``deg1``/``deg2`` (int32, num_terms, zeros on entry and on return), ``flag``
    (bool, num_terms, False on entry and on return), ``gain_l``/``gain_r``/``cost`` (float64,
    num_terms), ``terms``/``dirty`` (int32, num_terms + 1), ``gains`` (float64) and
    ``cand_l``/``cand_r`` (int64), each at least ``hi - lo`` long. Returns the swaps made.
    """
    n1 = mid - lo
    n2 = hi - mid
    ln1 = log2n[n1]
    ln2 = log2n[n2]
    # degrees of every term in both halves, and the list of the partition's distinct terms
    # (branch-free: ``terms[nt]`` is always written, ``nt`` only moves on a term's first sight)
    nt = 0
    for i in range(lo, mid):
        side[i] = True
        for p in range(wptr[i], wptr[i + 1]):
            t = widx[p]
            terms[nt] = t
            nt += (deg1[t] | deg2[t]) == 0
            deg1[t] += 1
    for i in range(mid, hi):
        side[i] = False
        for p in range(wptr[i], wptr[i + 1]):
            t = widx[p]
            terms[nt] = t
            nt += (deg1[t] | deg2[t]) == 0
            deg2[t] += 1
    total_swaps = 0
    # the terms whose degrees changed since their gains were computed: all of them at first
    n_dirty = nt
    for j in range(nt):
        dirty[j] = terms[j]
    for _ in range(iterations):
        # per term: what moving one document left -> right (gain_l) or right -> left saves
        # (a pure function of the degrees: only the terms whose degrees moved are recomputed;
        # gain_l is only read by left documents with the term, so a >= 1 there, and b >= 1 for
        # gain_r; the other value is computed, harmlessly, with log2n[0] = 0)
        for j in range(n_dirty):
            t = dirty[j]
            flag[t] = False
            a = deg1[t]
            b = deg2[t]
            fa = float(a)
            fb = float(b)
            c0 = fa * (ln1 - log2n[a + 1]) + fb * (ln2 - log2n[b + 1])
            cost[t] = c0
            gain_l[t] = c0 - ((fa - 1.0) * (ln1 - log2n[a]) + (fb + 1.0) * (ln2 - log2n[b + 2]))
            gain_r[t] = c0 - ((fa + 1.0) * (ln1 - log2n[a + 2]) + (fb - 1.0) * (ln2 - log2n[b]))
        # per document: the sum over its terms, summed left to right
        max_l = -np.inf
        max_r = -np.inf
        for i in range(lo, hi):
            s = 0.0
            if side[i]:
                for p in range(wptr[i], wptr[i + 1]):
                    s += gain_l[widx[p]]
                if s > max_l:
                    max_l = s
            else:
                for p in range(wptr[i], wptr[i + 1]):
                    s += gain_r[widx[p]]
                if s > max_r:
                    max_r = s
            gains[i - lo] = s
        # only a document whose gain beats minus the other side's best can be in a swap
        nl = 0
        nr = 0
        for i in range(hi - lo):
            if side[lo + i]:
                if gains[i] + max_r > 0.0:
                    cand_l[nl] = i
                    nl += 1
            elif gains[i] + max_l > 0.0:
                cand_r[nr] = i
                nr += 1
        if nl == 0 or nr == 0:
            break
        # both sides by gain, descending; equal gains keep the row order (stable sort)
        sl = cand_l[:nl][np.argsort(-gains[cand_l[:nl]], kind="mergesort")]
        sr = cand_r[:nr][np.argsort(-gains[cand_r[:nr]], kind="mergesort")]
        swaps = 0
        n_dirty = 0
        for k in range(min(nl, nr)):
            x = sl[k]
            y = sr[k]
            if gains[x] + gains[y] <= 0.0:
                break
            for p in range(wptr[lo + x], wptr[lo + x + 1]):
                t = widx[p]
                deg1[t] -= 1
                deg2[t] += 1
                dirty[n_dirty] = t
                n_dirty += not flag[t]
                flag[t] = True
            for p in range(wptr[lo + y], wptr[lo + y + 1]):
                t = widx[p]
                deg1[t] += 1
                deg2[t] -= 1
                dirty[n_dirty] = t
                n_dirty += not flag[t]
                flag[t] = True
            side[lo + x] = False
            side[lo + y] = True
            swaps += 1
        if swaps == 0:
            break
        # keep the round only if it lowered the estimated cost (swapping both ends of a pair
        # of postings, or a whole cluster flipping sides, would otherwise repeat forever)
        delta = 0.0
        for j in range(n_dirty):
            t = dirty[j]
            a = deg1[t]
            b = deg2[t]
            delta += (float(a) * (ln1 - log2n[a + 1]) + float(b) * (ln2 - log2n[b + 1])) - cost[t]
        if not delta < 0.0:
            for k in range(swaps):
                x = sl[k]
                y = sr[k]
                for p in range(wptr[lo + x], wptr[lo + x + 1]):
                    t = widx[p]
                    deg1[t] += 1
                    deg2[t] -= 1
                for p in range(wptr[lo + y], wptr[lo + y + 1]):
                    t = widx[p]
                    deg1[t] -= 1
                    deg2[t] += 1
                side[lo + x] = True
                side[lo + y] = False
            break
        total_swaps += swaps
    for j in range(n_dirty):
        flag[dirty[j]] = False
    for j in range(nt):
        deg1[terms[j]] = 0
        deg2[terms[j]] = 0
    kl = lo
    kr = mid
    for i in range(lo, hi):
        if side[i]:
            perm[kl] = i
            kl += 1
        else:
            perm[kr] = i
            kr += 1
    return total_swaps


def _bisect_worker(wptr, widx, los, mids, his, num_terms, iterations, log2n, side, perm,
                   first, step, cap):
    """Bisect partitions ``first, first + step, ...`` of a level (``[los[p], his[p])`` at
    ``mids[p]``) with one set of scratch; ``perm`` (identity on entry) gets each partition's
    new row order. A partition of at most ``cap`` postings then has its working rows laid out
    in that order in place (while they are in cache); larger ones are left to the caller.
    Partitions are disjoint, so workers run side by side without locks."""
    n_parts = los.shape[0]
    largest = 0
    postings = 0
    for p in range(first, n_parts, step):
        largest = max(largest, his[p] - los[p])
        size = wptr[his[p]] - wptr[los[p]]
        if size <= cap:
            postings = max(postings, size)
    deg1 = np.zeros(num_terms, dtype=np.int32)
    deg2 = np.zeros(num_terms, dtype=np.int32)
    gain_l = np.zeros(num_terms, dtype=np.float64)
    gain_r = np.zeros(num_terms, dtype=np.float64)
    cost = np.zeros(num_terms, dtype=np.float64)
    terms = np.empty(num_terms + 1, dtype=np.int32)  # + 1: the branch-free appends
    dirty = np.empty(num_terms + 1, dtype=np.int32)
    flag = np.zeros(num_terms, dtype=np.bool_)
    gains = np.empty(largest, dtype=np.float64)
    cand_l = np.empty(largest, dtype=np.int64)
    cand_r = np.empty(largest, dtype=np.int64)
    rows = np.empty(postings, dtype=widx.dtype)
    swaps = 0
    for p in range(first, n_parts, step):
        lo = los[p]
        hi = his[p]
        swaps += _bisect_partition(wptr, widx, lo, mids[p], hi, iterations, log2n, side, perm,
                                   deg1, deg2, gain_l, gain_r, cost, terms, dirty, flag, gains,
                                   cand_l, cand_r)
        if wptr[hi] - wptr[lo] <= cap:
            _relayout(wptr, widx, perm, lo, hi, rows, cand_l)
    return swaps


def _relayout(wptr, widx, perm, lo, hi, rows, lengths):
    """Lay the working rows ``[lo, hi)`` out in the order ``perm[lo:hi]`` (row numbers in the
    range), in place, through ``rows`` (the range's postings) and ``lengths`` (``hi - lo``).
    ``wptr[lo]`` and ``wptr[hi]`` do not change (so a neighbour's bounds are never written)."""
    base = wptr[lo]
    q = 0
    for k in range(lo, hi):
        r = perm[k]
        lengths[k - lo] = wptr[r + 1] - wptr[r]
        for p in range(wptr[r], wptr[r + 1]):
            rows[q] = widx[p]
            q += 1
    for k in range(lo, hi - 1):
        wptr[k + 1] = wptr[k] + lengths[k - lo]
    for j in range(q):
        widx[base + j] = rows[j]


def _gather(indptr, indices, order, wptr, widx, start, stop):
    """Working CSR rows ``[start, stop)``: row ``i`` = input row ``order[i]`` (``wptr`` holds
    the offsets already)."""
    for i in range(start, stop):
        d = order[i]
        q = wptr[i]
        for p in range(indptr[d], indptr[d + 1]):
            widx[q] = indices[p]
            q += 1


def _log_gap_cost(indptr, indices, order, num_terms, log2n):
    last = np.full(num_terms, -1, dtype=np.int64)
    total = 0.0
    postings = 0
    for pos in range(order.shape[0]):
        d = order[pos]
        for p in range(indptr[d], indptr[d + 1]):
            t = indices[p]
            gap = pos - last[t]
            if gap > 0:  # a repeated term id inside one document is one posting
                total += log2n[gap]
                postings += 1
                last[t] = pos
    return total, postings


def _doc_term_csr(offsets, docs, num_docs, terms):
    counts = np.zeros(num_docs + 1, dtype=np.int64)
    for t in terms:
        for p in range(offsets[t], offsets[t + 1]):
            counts[docs[p] + 1] += 1
    indptr = np.cumsum(counts)
    fill = indptr[:-1].copy()
    indices = np.empty(indptr[-1], dtype=np.int32)
    for t in terms:
        for p in range(offsets[t], offsets[t + 1]):
            d = docs[p]
            indices[fill[d]] = t
            fill[d] += 1
    return indptr, indices


if HAVE_NUMBA:
    _bisect_partition = njit(nogil=True, cache=True)(_bisect_partition)  # called by the worker
    _relayout = njit(nogil=True, cache=True)(_relayout)
    _bisect_worker = njit(nogil=True, cache=True)(_bisect_worker)
    _gather = njit(nogil=True, cache=True)(_gather)
    _log_gap_cost = njit(nogil=True, cache=True)(_log_gap_cost)
    _doc_term_csr = njit(nogil=True, cache=True)(_doc_term_csr)


# -- public API --------------------------------------------------------------------------------

def _check_csr(indptr, indices, num_terms) -> tuple[np.ndarray, np.ndarray, int]:
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    if indptr.ndim != 1 or len(indptr) < 1 or indptr.dtype.kind not in "iu":
        raise ValueError("indptr must be a 1-D integer array of num_docs + 1 entries")
    if indices.ndim != 1 or (len(indices) and indices.dtype.kind not in "iu"):
        raise ValueError("indices must be a 1-D integer array")
    if int(indptr[0]) != 0 or int(indptr[-1]) != len(indices) or (np.diff(indptr) < 0).any():
        raise ValueError(f"indptr must rise from 0 to len(indices) = {len(indices)}")
    num_terms = int(num_terms)
    if not 0 <= num_terms < 2**31:
        raise ValueError("num_terms must be in [0, 2**31)")
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= num_terms):
        raise ValueError(f"term ids must lie in [0, {num_terms})")
    # one dtype per argument: one compiled signature (int32 indices are used as given)
    return (np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(indices, dtype=np.int32),
            num_terms)


def _log2_table(n: int) -> np.ndarray:
    """log2(k) for k in [0, n]; entry 0 is unused (0.0)."""
    table = np.zeros(n + 1, dtype=np.float64)
    table[1:] = np.log2(np.arange(1, n + 1, dtype=np.float64))
    return table


def _levels(n: int, min_size: int, max_depth: int | None):
    """Yield the (lo, mid, hi) int64 arrays of each level's partitions to bisect, top first."""
    los, his = np.array([0], dtype=np.int64), np.array([n], dtype=np.int64)
    depth = 0
    while max_depth is None or depth < max_depth:
        split = (his - los) > min_size
        los, his = los[split], his[split]
        if not len(los):
            return
        mids = los + (his - los) // 2
        yield los, mids, his
        los, his = np.concatenate([los, mids]), np.concatenate([mids, his])
        depth += 1


def _initial_order(n: int, seed: int | None) -> np.ndarray:
    if seed is None:
        return np.arange(n, dtype=np.int32)
    return np.random.default_rng(seed).permutation(n).astype(np.int32)


def _run(pool: ThreadPoolExecutor, calls: list[tuple]) -> None:
    """Run ``fn(*args)`` for each ``(fn, *args)`` on the pool; re-raise the first error."""
    for future in [pool.submit(*call) for call in calls]:
        future.result()


def _relayout_cap(postings: int, workers: int) -> int:
    """Postings up to which a worker lays a partition out again itself: its scratch for that
    is at most a quarter of all postings, over all workers together (at least 2**20 each)."""
    return max(1 << 20, postings // (4 * workers))


def _chunks(ranges: list[tuple[int, int]], size: int):
    """The ranges cut into pieces of at most ``size``."""
    for a, b in ranges:
        for c in range(a, b, size):
            yield c, min(b, c + size)


def _threads(threads: int | None) -> int:
    if threads is None:
        return usable_cpus()
    if int(threads) < 1:
        raise ValueError("threads must be >= 1")
    return int(threads)


def _check_params(iterations: int, min_size: int, max_depth: int | None) -> None:
    if int(iterations) < 0:
        raise ValueError("iterations must be >= 0")
    if int(min_size) < 1:
        raise ValueError("min_size must be >= 1")
    if max_depth is not None and int(max_depth) < 0:
        raise ValueError("max_depth must be >= 0 or None")


def bisect_order(indptr, indices, num_terms: int, *, iterations: int = 20, min_size: int = 32,
                 max_depth: int | None = None, seed: int | None = 0,
                 threads: int | None = None) -> np.ndarray:
    """The BP order of a document -> term CSR: ``order[new position] = old doc id`` (int32).

    ``iterations``: swap rounds per partition (the paper's 20); ``min_size``: partitions of at
    most this many documents are not split further (the order inside them is left as is);
    ``max_depth``: at most this many levels of bisection (None: until ``min_size``); ``seed``:
    the initial order is ``default_rng(seed).permutation`` (None: the input order);
    ``threads``: threads working on the partitions of a level (None: the CPUs this process may
    use); the compiled kernels release the GIL.
    """
    _check_params(iterations, min_size, max_depth)
    indptr, indices, num_terms = _check_csr(indptr, indices, num_terms)
    n = len(indptr) - 1
    order = _initial_order(n, seed)
    if n < 2 or iterations == 0:
        return order
    log2n = _log2_table(n + 2)
    lengths = np.diff(indptr)
    wptr = np.zeros(n + 1, dtype=np.int64)
    widx = np.empty(len(indices), dtype=np.int32)
    side = np.zeros(n, dtype=np.bool_)
    threads = _threads(threads)
    with ThreadPoolExecutor(threads) as pool:
        # the working copy: rows in the current order, so each partition reads sequentially
        stale = [(0, n)]
        for los, mids, his in _levels(n, int(min_size), max_depth):
            if stale:  # rows [a, b) to fetch from the input in the current order
                np.cumsum(lengths[order], out=wptr[1:])
                _run(pool, [(_gather, indptr, indices, order, wptr, widx, a, b)
                            for a, b in _chunks(stale, max(1, -(-n // threads)))])
            perm = np.arange(n, dtype=np.int64)
            workers = max(1, min(len(los), 4 * threads))  # partitions dealt round-robin
            # partitions up to ``cap`` postings are laid out again by their worker; larger ones
            # are gathered afresh from the input before the next level
            cap = _relayout_cap(len(indices), workers)
            _run(pool, [(_bisect_worker, wptr, widx, los, mids, his, num_terms, int(iterations), log2n,
                         side, perm, w, workers, cap) for w in range(workers)])
            order = order[perm]
            big = (wptr[his] - wptr[los]) > cap
            stale = list(zip(los[big].tolist(), his[big].tolist()))
    return order


def bisect_order_reference(indptr, indices, num_terms: int, *, iterations: int = 20,
                           min_size: int = 32, max_depth: int | None = None,
                           seed: int | None = 0) -> np.ndarray:
    """:func:`bisect_order` in plain Python/numpy, written the obvious way (for tests).

    Degrees are recounted with ``np.bincount`` every iteration and both halves are fully
    sorted; gains are summed left to right in float64 from the same log2 table, so the result
    equals the compiled one exactly. Slow: use it on a few hundred documents.
    """
    _check_params(iterations, min_size, max_depth)
    indptr, indices, num_terms = _check_csr(indptr, indices, num_terms)
    n = len(indptr) - 1
    order = _initial_order(n, seed)
    if n < 2 or iterations == 0:
        return order
    log2n = _log2_table(n + 2)
    rows = [indices[indptr[d]:indptr[d + 1]].tolist() for d in range(n)]

    def cost(deg, size):
        return deg * (log2n[size] - log2n[deg.astype(np.int64) + 1])

    for los, mids, his in _levels(n, int(min_size), max_depth):
        for lo, mid, hi in zip(los.tolist(), mids.tolist(), his.tolist()):
            n1, n2 = mid - lo, hi - mid
            members = order[lo:hi].copy()  # rows stay put; ``left`` says which half each is in
            left = np.arange(hi - lo) < n1
            for _ in range(iterations):
                a = np.bincount(np.asarray([t for d in members[left] for t in rows[d]], dtype=np.int64),
                                minlength=num_terms).astype(np.float64)
                b = np.bincount(np.asarray([t for d in members[~left] for t in rows[d]], dtype=np.int64),
                                minlength=num_terms).astype(np.float64)
                ai, bi = a.astype(np.int64), b.astype(np.int64)
                c0 = cost(a, n1) + cost(b, n2)
                g_left = c0 - ((a - 1.0) * (log2n[n1] - log2n[ai]) + (b + 1.0) * (log2n[n2] - log2n[bi + 2]))
                g_right = c0 - ((a + 1.0) * (log2n[n1] - log2n[ai + 2]) + (b - 1.0) * (log2n[n2] - log2n[bi]))
                gains = np.zeros(hi - lo)
                for i, d in enumerate(members.tolist()):
                    g = g_left if left[i] else g_right
                    s = 0.0
                    for t in rows[d]:
                        s += float(g[t])
                    gains[i] = s
                li, ri = np.flatnonzero(left), np.flatnonzero(~left)
                sl = li[np.argsort(-gains[li], kind="mergesort")]
                sr = ri[np.argsort(-gains[ri], kind="mergesort")]
                before = left.copy()
                swaps = 0
                for x, y in zip(sl.tolist(), sr.tolist()):
                    if not gains[x] + gains[y] > 0.0:
                        break
                    left[x], left[y] = False, True
                    swaps += 1
                if swaps == 0:
                    break
                a2 = np.bincount(np.asarray([t for d in members[left] for t in rows[d]], dtype=np.int64),
                                 minlength=num_terms).astype(np.float64)
                b2 = np.bincount(np.asarray([t for d in members[~left] for t in rows[d]], dtype=np.int64),
                                 minlength=num_terms).astype(np.float64)
                if not float(np.sum((cost(a2, n1) + cost(b2, n2)) - c0)) < 0.0:
                    left = before  # the round did not lower the cost: undo it and stop
                    break
            order[lo:hi] = np.concatenate([members[left], members[~left]])
    return order


def log_gap_cost(indptr, indices, num_terms: int, order=None) -> tuple[float, int]:
    """(total log2-gap bits, postings) of the postings when documents are laid out in ``order``.

    For each term, the documents containing it at new positions ``p_1 < p_2 < ...`` cost
    ``log2(p_1 + 1) + sum log2(p_i - p_{i-1})``; the total is summed over terms. ``order``
    (new position -> old doc id; None: the input order) must be a permutation. Bits per posting
    is ``total / postings``. O(postings) time, O(num_terms) extra memory.
    """
    indptr, indices, num_terms = _check_csr(indptr, indices, num_terms)
    n = len(indptr) - 1
    order = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    if order.shape != (n,) or (n and not np.array_equal(np.sort(order), np.arange(n))):
        raise ValueError(f"order must be a permutation of {n} documents")
    total, postings = _log_gap_cost(indptr, indices, order, num_terms, _log2_table(n + 1))
    return float(total), int(postings)


def doc_term_csr(offsets, docs, num_docs: int, terms=None) -> tuple[np.ndarray, np.ndarray]:
    """Transpose a term -> doc CSR (an impact index's ``offsets``, ``postings_docs``) into the
    document -> term CSR :func:`bisect_order` takes: ``(indptr int64, indices int32)``, terms
    ascending within each document. ``terms``: only these term ids (ascending; default all).
    O(postings) time; the output is the only large allocation (``docs`` may be a memory map:
    it is read, a term at a time, twice)."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if not isinstance(docs, np.ndarray) or docs.dtype != np.int32:
        docs = np.ascontiguousarray(docs, dtype=np.int32)
    if int(offsets[0]) != 0 or int(offsets[-1]) != len(docs):
        raise ValueError("offsets must rise from 0 to the number of postings")
    if len(docs) and (int(docs.min()) < 0 or int(docs.max()) >= num_docs):
        raise ValueError(f"doc ids must lie in [0, {num_docs})")
    if terms is None:
        terms = np.arange(len(offsets) - 1, dtype=np.int64)
    terms = np.asarray(terms, dtype=np.int64)
    if len(terms) and (terms.min() < 0 or terms.max() >= len(offsets) - 1 or (np.diff(terms) <= 0).any()):
        raise ValueError("terms must be ascending term ids of the index")
    return _doc_term_csr(offsets, docs, int(num_docs), terms)


def bp_terms(df, max_postings: int | None) -> np.ndarray:
    """The terms BP reads when its forward index may hold at most ``max_postings`` postings: the
    terms of at least two documents (a term of one document has no gap to shorten), from the
    rarest up while they fit (frequent terms weigh least in the LogGap cost per posting and
    cost the most memory). Ascending term ids; every such term when ``max_postings`` is None."""
    df = np.asarray(df, dtype=np.int64)
    useful = np.flatnonzero(df >= 2)
    if max_postings is None or int(df[useful].sum()) <= max_postings:
        return useful
    by_df = useful[np.argsort(df[useful], kind="stable")]
    fits = np.searchsorted(np.cumsum(df[by_df]), int(max_postings), side="right")
    return np.sort(by_df[:fits])


def inverse_permutation(order) -> np.ndarray:
    """``rank`` with ``rank[old doc id] = new position`` for ``order[new position] = old id``."""
    order = np.asarray(order)
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return rank
