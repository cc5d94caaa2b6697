"""What searches return, in one home: a ``Hit`` (doc id, score) and a ``Run``
(``{qid: {docid: score}}``, the shape TREC run files and the evaluator use)."""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import NamedTuple

Run = dict[str, dict[str, float]]
STRATEGIES = ("pruned", "exhaustive", "approx", "heads")  # how an impact index is searched (indexing.inverted)


class Hit(NamedTuple):
    docid: str
    score: float


def _score(hit: tuple[str, float]) -> float:
    """A hit's score as a Python float: a numpy float32 compared with Python floats is not
    transitive (np.float32(0.1) equals both 0.1 and 0.10000000149, which differ), and a list
    mixing them sorted out of order."""
    return float(hit[1])


def ranked(hits: Mapping[str, float], depth: int | None = None) -> list[tuple[str, float]]:
    """Hits best first (score descending, doc id ascending), cut to ``depth``: the engine's order,
    which TREC runs, evaluation and fusion all follow."""
    out = sorted(hits.items(), key=itemgetter(0))
    out.sort(key=_score, reverse=True)  # stable: ties stay in doc id order (no key tuples: 2x faster)
    return out if depth is None else out[:depth]
