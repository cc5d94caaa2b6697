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
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Mapping, Sequence

from indexing.results import Run

Ranking = Mapping[str, float]


class Method(str, Enum):
    RRF = "rrf"
    MINMAX = "minmax"
    ZSCORE = "zscore"
    SUM = "sum"


def ranked(hits: Ranking, depth: int | None = None) -> list[tuple[str, float]]:
    """Hits best first (score descending, doc id ascending), cut to ``depth``."""
    out = sorted(hits.items(), key=lambda x: (-x[1], x[0]))
    return out if depth is None else out[:depth]


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
    mean = sum(scores) / len(scores)
    sd = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    norm = {d: (s - mean) / sd if sd > 0 else 0.0 for d, s in hits}
    return norm, min(norm.values())


def check_fusion(method, weights: Sequence[float] | None, depth: int | None, rrf_k,
                 k: int | None = None, n: int | None = None) -> Method:
    """Refuse settings fusion cannot use: unknown method, non-finite weights, ``rrf_k`` < 0,
    depth or k < 1 (None: no cut). Returns the method."""
    try:
        method = Method(method)
    except ValueError:
        raise ValueError(f"unknown fusion method {method!r}; one of "
                         f"{', '.join(m.value for m in Method)}") from None
    if weights is not None:
        weights = list(weights)
        if n is not None and len(weights) != n:
            raise ValueError(f"{len(weights)} weights for {n} rankings")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                   for w in weights):
            raise ValueError(f"fusion weights must be finite numbers, got {weights}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise ValueError(f"rrf_k must be an integer >= 0, got {rrf_k!r}")
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
    parts = [normalise(ranked(r, depth), method, rrf_k) for r in rankings]
    docs = set().union(*(p for p, _ in parts)) if parts else set()
    fused = {d: sum(w * p.get(d, floor) for w, (p, floor) in zip(weights, parts)) for d in docs}
    return dict(ranked(fused, k))


def fuse(runs: Sequence[Run], method: Method | str = Method.RRF, weights: Sequence[float] | None = None,
         depth: int | None = 1000, rrf_k: int = 60, k: int | None = 1000) -> Run:
    """Fuse whole runs; a query present in any run is present in the result."""
    check_fusion(method, weights, depth, rrf_k, k, len(runs))
    qids = list(dict.fromkeys(q for run in runs for q in run))
    return {q: fuse_one([run.get(q, {}) for run in runs], method, weights, depth, rrf_k, k) for q in qids}
