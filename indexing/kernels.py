"""Compiled search kernels for impact indexes (numba), with a plain numpy fallback.

``accumulate`` scores one query term-at-a-time into a per-thread accumulator, remembers which
documents it touched, and selects the best k among those, so the cost is the number of postings
read plus the number of documents touched — never a pass over the whole collection. The k
best are then chosen by one numpy partition over packed (score, doc) keys. The kernel releases
the GIL, so a thread pool searches queries in parallel.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a core dependency; the fallback keeps us usable
    HAVE_NUMBA = False


def _accumulate(offsets, docs, impacts, q_terms, q_weights, tie_rank, acc, seen, touched, keys):
    """Score one query; pack each hit into ``keys``; return the number of hits (-1: bad doc id).

    A key is (score bits << 32) | (2**32 - 1 - tie_rank[doc]): ``tie_rank`` orders equal scores
    (the rank of each document's external id among all ids sorted as strings, so ties go to the
    smaller doc id; ``arange`` for the internal order).

    ``acc`` (float32, zeros), ``seen`` (uint8, zeros), ``touched`` (int32) and ``keys`` (uint64)
    are scratch of length num_docs; ``acc`` and ``seen`` are all zeros again on return. A
    document is recorded in ``touched`` once, the first time one of its postings is read,
    whatever its contribution (zero, denormal or huge), so ``touched`` never holds more than
    num_docs entries. A posting whose doc id is outside [0, num_docs) stops the query and
    returns -1 before anything is written out of bounds. Query weights must be finite and
    positive, term ids in range (the caller checks both).
    """
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
    n = 0
    low = np.uint64(0xFFFFFFFF)
    for i in range(n_touched):
        d = touched[i]
        if acc[d] > 0.0:
            keys[n] = (np.uint64(bits[d]) << np.uint64(32)) | (low - np.uint64(tie_rank[d]))
            n += 1
        acc[d] = 0.0
        seen[d] = 0
    return n


def top_keys(keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode the k largest packed keys into (tie ranks, scores), best first.

    A key is (score bits << 32) | (2**32 - 1 - tie rank): positive float32 bit patterns order
    like the numbers, so the largest keys are the best hits, ties going to the lower tie rank.
    """
    n = len(keys)
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float32)
    best = np.partition(keys, n - k)[n - k:] if n > k else keys.copy()
    best.sort()
    best = best[::-1]
    docs = (np.uint64(0xFFFFFFFF) - (best & np.uint64(0xFFFFFFFF))).astype(np.int32)
    scores = (best >> np.uint64(32)).astype(np.uint32).view(np.float32)
    return docs, scores


if HAVE_NUMBA:
    accumulate = njit(nogil=True, cache=True)(_accumulate)
else:  # pragma: no cover - plain Python is exact but slow
    accumulate = _accumulate
