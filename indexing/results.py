"""What searches return, in one home: a ``Hit`` (doc id, score) and a ``Run``
(``{qid: {docid: score}}``, the shape TREC run files and the evaluator use)."""

from __future__ import annotations

from typing import NamedTuple

Run = dict[str, dict[str, float]]
STRATEGIES = ("pruned", "exhaustive", "approx", "heads")  # how an impact index is searched (indexing.inverted)


class Hit(NamedTuple):
    docid: str
    score: float
