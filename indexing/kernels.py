"""Compiled search kernels for impact indexes (numba), with a plain numpy fallback.

``search_into`` scores one query term-at-a-time into a per-thread accumulator, remembers which
documents it touched, and keeps the best k in a bounded heap, so the cost is the number of
postings read plus the number of documents touched — never a pass over the whole collection.
Kernels release the GIL, so a thread pool searches queries in parallel.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a core dependency; the fallback keeps us usable
    HAVE_NUMBA = False


def _better(s1, d1, s2, d2):
    """Does (score s1, doc d1) rank above (s2, d2)? Higher score, then lower doc id."""
    return s1 > s2 or (s1 == s2 and d1 < d2)


def _sift_down(hs, hd, n, i):
    # min-heap on rank: the root is the worst of the kept hits
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        worst = left
        right = left + 1
        if right < n and _better(hs[worst], hd[worst], hs[right], hd[right]):
            worst = right
        if _better(hs[i], hd[i], hs[worst], hd[worst]):
            hs[i], hs[worst] = hs[worst], hs[i]
            hd[i], hd[worst] = hd[worst], hd[i]
            i = worst
        else:
            return


def _search_into(offsets, docs, impacts, q_terms, q_weights, k, acc, touched, out_docs, out_scores):
    """Top-k of sum(q_weights[j] * impacts[postings of q_terms[j]]); returns the hit count.

    ``acc`` (float32, zeros) and ``touched`` (int32) are scratch of length num_docs; ``acc`` is
    left all zeros again on return. Query weights must be positive.
    """
    n_touched = 0
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        w = q_weights[j]
        for p in range(offsets[t], offsets[t + 1]):
            d = docs[p]
            if acc[d] == 0.0:
                touched[n_touched] = d
                n_touched += 1
            acc[d] += w * np.float32(impacts[p])
    if k <= 0:
        for i in range(n_touched):
            acc[touched[i]] = 0.0
        return 0
    hs = out_scores
    hd = out_docs
    n = 0
    for i in range(n_touched):
        d = touched[i]
        s = acc[d]
        acc[d] = 0.0
        if s <= 0.0:
            continue
        if n < k:
            # insert, then restore the heap upwards
            hs[n] = s
            hd[n] = d
            c = n
            n += 1
            while c > 0:
                parent = (c - 1) // 2
                if _better(hs[parent], hd[parent], hs[c], hd[c]):
                    hs[parent], hs[c] = hs[c], hs[parent]
                    hd[parent], hd[c] = hd[c], hd[parent]
                    c = parent
                else:
                    break
        elif _better(s, d, hs[0], hd[0]):
            hs[0] = s
            hd[0] = d
            _sift_down(hs, hd, n, 0)
    # heap-sort in place: repeatedly move the worst to the end
    m = n
    while m > 1:
        m -= 1
        hs[0], hs[m] = hs[m], hs[0]
        hd[0], hd[m] = hd[m], hd[0]
        _sift_down(hs, hd, m, 0)
    return n


if HAVE_NUMBA:
    _better = njit(inline="always", cache=True)(_better)
    _sift_down = njit(cache=True)(_sift_down)
    search_into = njit(nogil=True, cache=True)(_search_into)
else:  # pragma: no cover
    search_into = None


def search_numpy(offsets, docs, impacts, q_terms, q_weights, k, num_docs):
    """Reference implementation in numpy (dense accumulator); same results as ``search_into``."""
    acc = np.zeros(num_docs, dtype=np.float32)
    for t, w in zip(q_terms.tolist(), q_weights.tolist()):
        s, e = offsets[t], offsets[t + 1]
        acc[docs[s:e]] += np.float32(w) * impacts[s:e].astype(np.float32)
    cand = np.flatnonzero(acc > 0)
    if k <= 0 or len(cand) == 0:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float32)
    vals = acc[cand]
    if len(cand) > k:
        kth = -np.partition(-vals, k - 1)[k - 1]
        above = np.flatnonzero(vals > kth)
        at = np.flatnonzero(vals == kth)[: k - len(above)]
        keep = np.concatenate([above, at])
        cand, vals = cand[keep], vals[keep]
    order = np.lexsort((cand, -vals))
    return cand[order].astype(np.int32), vals[order]
