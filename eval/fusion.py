"""Fusion of ranked lists: pure functions over runs ``{qid: {docid: score}}``.

Methods:
- ``rrf``: reciprocal rank fusion, ``sum_i w_i / (k + rank_i(d))``, k = 60 by default;
- ``minmax``: each list's scores mapped to [0, 1], then a weighted sum (a convex combination
  when the weights sum to 1);
- ``zscore``: each list's scores standardised (mean 0, sd 1), then a weighted sum;
- ``sum``: the weighted sum of raw scores.

Each component is cut to its best ``depth`` hits first. A document missing from a list gets
that list's floor: 0 contribution for rrf, the list's lowest normalised score (0 for minmax)
for the others. Output order: fused score descending, then doc id ascending.

Bounds: ``rrf_k`` is at most ``MAX_RRF_K`` (2**31) and every weight from 0 to ``MAX_WEIGHT`` (1e6),
not all 0 (a negative weight ranks a document lower for being retrieved: the fused list would
then hang on how deep each list was cut), so a weighted sum of float32 scores (an index's, up to 3.4e38) stays finite in
float64; a NaN score, or a fused score that is still not finite (runs read from files may hold any
float64), fails the query with a ValueError rather than ranking by inf or NaN.
"""

from __future__ import annotations

import math
from enum import Enum
from itertools import repeat
from typing import Mapping, Sequence

import numpy as np

from indexing.results import Run, ranked

Ranking = Mapping[str, float]
MAX_RRF_K = 2**31
MAX_WEIGHT = 1e6


class Method(str, Enum):
    RRF = "rrf"
    MINMAX = "minmax"
    ZSCORE = "zscore"
    SUM = "sum"


def normalise(hits: list[tuple[str, float]], method: Method, rrf_k: int = 60) -> tuple[dict[str, float], float]:
    """Normalised scores of one ranked list and the floor for documents it lacks."""
    if not hits:
        return {}, 0.0
    if method is Method.RRF:
        return {d: 1.0 / (rrf_k + rank) for rank, (d, _) in enumerate(hits, 1)}, 0.0
    scores = [s for _, s in hits]
    if method is Method.SUM:
        return dict(hits), min(scores)
    if method is Method.MINMAX:
        lo, hi = min(scores), max(scores)
        span = hi - lo
        return {d: (s - lo) / span if span > 0 else 1.0 for d, s in hits}, 0.0
    # z-scores do not depend on the scale: dividing by the largest |score| first keeps the mean and
    # the squares from overflowing (scores of 1e200 did)
    scale = max(abs(s) for s in scores)
    if not math.isfinite(scale):
        raise ValueError(f"zscore fusion needs finite scores, got {scale}")
    scores = [s / scale for s in scores] if scale > 0 else scores
    mean = sum(scores) / len(scores)
    sd = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    norm = {d: (s - mean) / sd if sd > 0 else 0.0 for (d, _), s in zip(hits, scores)}
    return norm, min(norm.values())


def check_weights(weights: Sequence[float], n: int | None = None, what: str = "fusion weights") -> list[float]:
    """Weights of a fusion (or of a teachers' mix, ``what``) as a list: finite numbers from 0 to
    ``MAX_WEIGHT``, not all 0, one per ranking (``n``); a ValueError otherwise."""
    weights = list(weights)
    if n is not None and len(weights) != n:
        raise ValueError(f"{len(weights)} {what} for {n} rankings")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
               for w in weights):
        raise ValueError(f"{what} must be finite numbers, got {weights}")
    if any(w < 0 for w in weights):
        raise ValueError(f"{what} must be >= 0 (a negative one ranks a document lower for being "
                         f"retrieved, so the fused list would hang on each list's depth), got {weights}")
    if weights and not any(w > 0 for w in weights):
        raise ValueError(f"{what} are all 0; at least one must be > 0")
    if any(w > MAX_WEIGHT for w in weights):
        raise ValueError(f"{what} must be at most {MAX_WEIGHT:g} (a larger one can make fused "
                         f"scores overflow), got {weights}")
    return [float(w) for w in weights]


def check_fusion(method, weights: Sequence[float] | None, depth: int | None, rrf_k,
                 k: int | None = None, n: int | None = None) -> Method:
    """Refuse settings fusion cannot use: unknown method, weights not finite, negative, all zero
    or above ``MAX_WEIGHT``, ``rrf_k`` outside 0..``MAX_RRF_K``, depth or k < 1 (None: no
    cut). Returns the method."""
    try:
        method = Method(method)
    except ValueError:
        raise ValueError(f"unknown fusion method {method!r}; one of "
                         f"{', '.join(m.value for m in Method)}") from None
    if weights is not None:
        check_weights(weights, n)
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or not 0 <= rrf_k <= MAX_RRF_K:
        shown = repr(rrf_k) if not isinstance(rrf_k, int) or abs(rrf_k) < 10**20 else f"{str(rrf_k)[:12]}..."
        raise ValueError(f"rrf_k must be an integer from 0 to {MAX_RRF_K}, got {shown}")
    for name, value in (("depth", depth), ("k", k)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"fusion {name} must be an integer >= 1, got {value!r}")
    return method


def fuse_one(rankings: Sequence[Ranking], method: Method | str = Method.RRF,
             weights: Sequence[float] | None = None, depth: int | None = 1000, rrf_k: int = 60,
             k: int | None = None) -> dict[str, float]:
    """Fuse one query's rankings; returns ``{docid: fused score}`` best first (``k`` cut)."""
    method = check_fusion(method, weights, depth, rrf_k, k, len(rankings))
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    for r in rankings:
        _refuse_nan(r)
    parts = [normalise(ranked(r, depth), method, rrf_k) for r in rankings]
    docs = list(set().union(*(p for p, _ in parts))) if parts else []
    # each document's sum, list by list in order (the float64 sums a per-document loop makes, ~4x faster)
    fused = np.zeros(len(docs))
    with np.errstate(over="ignore", invalid="ignore"):  # (what is not finite is refused just below)
        for w, (p, floor) in zip(weights, parts):
            fused += w * np.fromiter(map(p.get, docs, repeat(floor)), dtype=np.float64, count=len(docs))
    bad = np.flatnonzero(~np.isfinite(fused))
    if len(bad):
        raise ValueError(f"fused score of doc {docs[bad[0]]!r} is {fused[bad[0]]} ({method.value}, weights "
                         f"{weights}): the scores or weights are too large")
    if k is not None and k < len(docs):  # only documents that can make the k best are sorted
        keep = np.flatnonzero(fused >= np.partition(fused, len(docs) - k)[len(docs) - k])
        docs, fused = [docs[i] for i in keep], fused[keep]
    return dict(ranked(dict(zip(docs, fused.tolist())), k))


def _refuse_nan(ranking: Ranking) -> None:
    """Scores are numbers, none of them NaN (a NaN sorted first in its list, or made a min-max list
    all 1.0; a string was ranked as a string): a ValueError naming the first document otherwise."""
    scores = np.array(list(ranking.values()))
    if scores.dtype.kind in "fiu" and not (scores.dtype.kind == "f" and np.isnan(scores).any()):
        return
    for d, s in ranking.items():
        if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)):
            raise ValueError(f"doc {d!r} has score {s!r}, not a number")
        try:
            float(s)
        except OverflowError:
            raise ValueError(f"doc {d!r} has a score too large for a float (a {int(s).bit_length()}-bit "
                             "integer)") from None
        if math.isnan(s):
            raise ValueError(f"doc {d!r} has score nan")


def fuse(runs: Sequence[Run], method: Method | str = Method.RRF, weights: Sequence[float] | None = None,
         depth: int | None = 1000, rrf_k: int = 60, k: int | None = 1000) -> Run:
    """Fuse whole runs; a query present in any run is present in the result."""
    check_fusion(method, weights, depth, rrf_k, k, len(runs))
    qids = list(dict.fromkeys(q for run in runs for q in run))
    out = {}
    for q in qids:
        try:
            out[q] = fuse_one([run.get(q, {}) for run in runs], method, weights, depth, rrf_k, k)
        except ValueError as e:
            raise ValueError(f"query {q!r}: {e}") from None
    return out
