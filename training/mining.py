"""Hard-negative mining: turn a run over training queries into negatives, as data.

For every query with a positive judgement (a grade of at least ``min_relevance``, default 1):
retrieve ``depth`` documents from any index, drop the positives, the documents judged relevant
below that grade (neither positive nor a safe negative) and the query's own id (BEIR's convention), skip the first ``skip_top`` remaining
candidates (the likeliest unjudged positives), keep up to ``max_negatives``. With a teacher, a
candidate whose teacher score exceeds ``margin`` x the best positive's teacher score is dropped
as a probable false negative, and the kept scores are the teacher's. Output, one JSON object per
query: ``{"qid", "pos": [...], "neg": [...], "neg_scores": [...]}``; with a teacher also
``"pos_scores"`` (the teacher's score of each positive) and ``"teacher"`` (its name), which
training reads as a distillation target.

A teacher is a dense encoder (``encode_queries`` / ``encode_documents``) or any scorer of
``training.teachers`` (an index, or an ``Ensemble`` of teachers). An ensemble's scores are
per-query normalised and combined, so they have no fixed zero: its margin is measured from the
query's lowest combined score ``lo`` (over the positives and the candidates it scored, the best
2 x ``max_negatives`` in the corpus, which are also the set each teacher is normalised over): a
candidate is dropped when ``t - lo > margin x (p - lo)``, ``p`` the best positive's combined
score. For a single teacher ``lo`` is 0, the rule above. An ensemble's records name the whole
mix as ``"teacher"``: ``{"teachers": [{kind, path or model, fingerprint}, ...], "weights",
"norm"}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from indexing.io import atomic_open
from indexing.corpus import Doc, iter_corpus
from training.teachers import Scorer, as_scorer, record_of


class Teacher(Protocol):
    def encode_queries(self, texts: list[str]) -> np.ndarray: ...

    def encode_documents(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class MiningReport:
    queries: int = 0
    negatives: int = 0
    too_few: int = 0          # queries with fewer than max_negatives negatives
    none: int = 0             # queries left with no negative at all
    dropped_by_teacher: int = 0
    examples_too_few: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        mean = self.negatives / max(self.queries, 1)
        return (f"{self.queries} queries, {mean:.1f} negatives each on average; {self.too_few} with "
                f"fewer than asked ({self.none} with none); {self.dropped_by_teacher} candidates "
                f"dropped as likely false negatives")


def _texts(corpus, wanted: set[str]) -> dict[str, Doc]:
    return {d.docid: d for d in iter_corpus(corpus) if d.docid in wanted}


def mine(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], *,
         skip_top: int = 0, max_negatives: int = 32, teacher: Teacher | Scorer | None = None,
         margin: float = 0.95, queries: Mapping[str, str] | None = None, corpus=None,
         min_relevance: int = 1) -> tuple[list[dict], MiningReport]:
    """Negatives per query from a run (``{qid: {docid: score}}``, any index kind)."""
    if skip_top < 0 or max_negatives < 1:
        raise ValueError("skip_top must be >= 0 and max_negatives >= 1")
    if isinstance(min_relevance, bool) or not isinstance(min_relevance, int) or min_relevance < 1:
        raise ValueError(f"min_relevance must be an integer >= 1, got {min_relevance!r}")
    if teacher is not None and (queries is None or corpus is None):
        raise ValueError("a teacher needs the query texts and the corpus")
    report = MiningReport()
    plans = []
    for qid, judged in qrels.items():
        pos = sorted(d for d, rel in judged.items() if rel >= min_relevance)
        if not pos:
            continue
        ranked = sorted(run.get(qid, {}).items(), key=lambda x: (-x[1], x[0]))
        # judged non-relevant documents stay: they are true negatives; lower positive grades go
        excluded = {d for d, rel in judged.items() if rel > 0} | {qid}
        cands = [(d, s) for d, s in ranked if d not in excluded][skip_top:]
        plans.append((qid, pos, cands))
    if teacher is not None:
        teacher = as_scorer(teacher)
        wanted = {d for _, pos, cands in plans for d in pos} | {d for *_, cands in plans for d, _ in cands}
        docs = _texts(corpus, wanted)
        plans, pos_scores = _filter_with_teacher(plans, teacher, queries, docs, margin, max_negatives, report)
    records = []
    for qid, pos, cands in plans:
        kept = cands[:max_negatives]
        record = {"qid": qid, "pos": pos, "neg": [d for d, _ in kept], "neg_scores": [float(s) for _, s in kept]}
        if teacher is not None and qid in pos_scores:  # teacher scores: a distillation target
            record.update(pos_scores=pos_scores[qid], teacher=record_of(teacher))
        records.append(record)
        report.queries += 1
        report.negatives += len(kept)
        if len(kept) < max_negatives:
            report.too_few += 1
            if len(report.examples_too_few) < 5:
                report.examples_too_few.append(qid)
        if not kept:
            report.none += 1
    return records, report


def _filter_with_teacher(plans, teacher: Scorer, queries, docs: dict[str, Doc], margin: float,
                         max_negatives: int, report: MiningReport):
    """Teacher scores for positives and candidates (each query and document scored once), and the
    false-negative filter on them."""
    pools = [(qid, pos, [(d, s) for d, s in cands if d in docs][: 2 * max_negatives])  # room for drops
             for qid, pos, cands in plans]
    groups = [(qid, [d for d in pos if d in docs], [d for d, _ in pool]) for qid, pos, pool in pools]
    scored = teacher.score(queries, groups, docs)
    relative = getattr(teacher, "relative_margin", False)
    out, pos_scores = [], {}
    for (qid, pos, pool), (_, scored_pos, _), (scores, cand_scores) in zip(pools, groups, scored):
        if not scored_pos:
            out.append((qid, pos, pool))
            continue
        if len(scored_pos) == len(pos):  # a positive missing from the corpus leaves no teacher record
            pos_scores[qid] = scores
        pos_score = max(scores)
        lo = min(scores + cand_scores) if relative else 0.0
        kept = []
        for (d, _), t in zip(pool, cand_scores):
            if t - lo > margin * (pos_score - lo):
                report.dropped_by_teacher += 1
            else:
                kept.append((d, t))
        out.append((qid, pos, kept))
    return out, pos_scores


def write_negatives(records: list[dict], path: str | os.PathLike) -> None:
    """JSONL, one query per line, written atomically."""
    with atomic_open(path) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
