"""Training data: queries, their positives and mined negatives, and the batches drawn from them.

The negatives file (``retriever mine``) gives each training query its positives and hard
negatives; the dataset gives the texts. A dev split is carved out of the file's queries for model
selection. Batches are a pure function of (seed, step): the query order of an epoch comes from
(seed, epoch), each query's positive and negatives from (seed, epoch, query), so a resumed run
sees exactly the batches an uninterrupted run would, and every process of a distributed run
computes the same global batch and takes its own slice of it.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.beir import BeirDataset, carve_dev
from indexing.corpus import doc_text, iter_corpus
from indexing.errors import DataError
from indexing.records import read_jsonl, record_id

log = logging.getLogger("retriever")


@dataclass
class Example:
    qid: str
    pos: list[str]
    neg: list[str]
    neg_scores: list[float] | None = None   # teacher scores of ``neg`` (distillation)
    pos_scores: list[float] | None = None   # teacher scores of ``pos``


def _ids(value, key: str, path: Path, lineno: int) -> list[str]:
    if not isinstance(value, list):
        raise DataError(f'"{key}" must be a list of doc ids', path=path, line=lineno)
    return [record_id({"id": d}, "doc", path, lineno) for d in value]


def _scores(value, name: str, n: int, path: Path, lineno: int) -> None:
    if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise DataError(f"{name} must be a list of finite numbers", path=path, line=lineno)
    if len(value) != n:
        raise DataError(f"{name} has {len(value)} entries for {n} ids", path=path, line=lineno)


def read_negatives(path: str | os.PathLike) -> tuple[list[Example], bool]:
    """Read a negatives JSONL; returns (examples, has_teacher_scores).

    Teacher scores count as such only when the file says which teacher made them (``teacher``) and
    gives the positives' scores too; retrieval scores (BM25 etc.) are not a distillation target.

    A negative that is also one of its query's positives (a file from a tool with another relevance
    threshold, or edited by hand) is dropped with its score, and one warning counts them: trained
    as a negative, the passage would be pushed away from the query it answers. ``retriever mine``
    never writes one.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("negatives file does not exist", path=path)
    out, teacher_lines = [], 0
    seen: set[str] = set()
    dropped, dropped_queries = 0, []  # negatives that are positives of their own query
    for lineno, obj in read_jsonl(path):
        if "qid" not in obj or "pos" not in obj or "neg" not in obj:
            raise DataError('expected an object with "qid", "pos" and "neg"', path=path, line=lineno)
        qid = record_id({"id": obj["qid"]}, "query", path, lineno)
        if qid in seen:
            raise DataError(f"query {qid!r} appears twice", path=path, line=lineno)
        seen.add(qid)
        pos, neg = (_ids(obj[key], key, path, lineno) for key in ("pos", "neg"))
        if not pos:
            raise DataError(f"query {qid!r} has no positive", path=path, line=lineno)
        neg_scores, pos_scores = obj.get("neg_scores"), obj.get("pos_scores")
        for name, scores, ids in (("neg_scores", neg_scores, neg), ("pos_scores", pos_scores, pos)):
            if scores is not None:
                _scores(scores, name, len(ids), path, lineno)
        teacher = obj.get("teacher") is not None and pos_scores is not None and neg_scores is not None
        teacher_lines += teacher
        positives = set(pos)
        keep = [i for i, d in enumerate(neg) if d not in positives]
        if len(keep) < len(neg):
            dropped += len(neg) - len(keep)
            dropped_queries.append(qid)
            neg = [neg[i] for i in keep]
            if neg_scores is not None:
                neg_scores = [neg_scores[i] for i in keep]
        out.append(Example(qid, pos, neg, [float(s) for s in neg_scores] if teacher else None,
                           [float(s) for s in pos_scores] if teacher else None))
    if not out:
        raise DataError("no queries in the negatives file", path=path)
    if dropped:
        log.warning("%s: dropped %d negatives that are positives of their own query (%d queries, e.g. %r)",
                    path, dropped, len(dropped_queries), dropped_queries[0])
    return out, teacher_lines == len(out)


def split_dev(examples: list[Example], ds: BeirDataset, *, dev_split: str | None = None, dev_fraction: float = 0.2,
              keep=None) -> tuple[list[Example], list[Example]]:
    """(train, dev): dev is the dataset's ``dev_split`` (its queries with a positive; ``keep(doc)``
    limits the positives counted) or ``dev_fraction`` of ``examples`` carved by
    ``eval.beir.carve_dev`` (seed 0), or nothing when the fraction is 0; train is the rest."""
    if dev_split:
        queries = ds.queries()
        dev = [Example(q, sorted(d for d, r in j.items() if r > 0 and (keep is None or keep(d))), [])
               for q, j in ds.qrels(dev_split).items() if q in queries]
        dev = [e for e in dev if e.pos]
        dev_ids = {e.qid for e in dev}
        return [e for e in examples if e.qid not in dev_ids], dev
    if dev_fraction > 0:
        _, carved = carve_dev({e.qid: {d: 1 for d in e.pos} for e in examples}, dev_fraction, seed=0)
        return [e for e in examples if e.qid not in carved], [e for e in examples if e.qid in carved]
    return examples, []


@dataclass
class TrainingData:
    """Examples split into train and dev, the texts they need, and a dev document pool."""

    train: list[Example]
    dev: list[Example]
    queries: dict[str, str]
    docs: dict[str, str]
    dev_pool: list[str] = field(default_factory=list)  # doc ids the dev evaluation ranks
    has_teacher: bool = False

    @classmethod
    def load(cls, dataset: str | os.PathLike, negatives: str | os.PathLike, *, dev_fraction: float = 0.2,
             dev_split: str | None = None, dev_docs: int = 10_000, seed: int = 0) -> TrainingData:
        """Dev queries: the dataset's ``dev_split`` if given, else ``dev_fraction`` of the file's
        queries (carved by ``eval.beir.carve_dev``; 0 disables the dev evaluation).

        The dev pool holds every dev positive, the dev queries' mined negatives, and random
        documents up to ``dev_docs`` in all (0: the whole corpus).
        """
        ds = BeirDataset(dataset)
        examples, has_teacher = read_negatives(negatives)
        queries = ds.queries()
        missing = [e.qid for e in examples if e.qid not in queries]
        if missing:
            raise DataError(f"{len(missing)} queries of {negatives} are not in the dataset, e.g. "
                            f"{missing[0]!r}", path=ds.queries_path)
        train, dev = split_dev(examples, ds, dev_split=dev_split, dev_fraction=dev_fraction)
        if not train:
            raise DataError("no training queries left after carving the dev split", path=negatives)
        dev_needed = {d for e in dev for d in e.pos + e.neg}
        wanted = {d for e in train for d in e.pos + e.neg} | dev_needed
        docs: dict[str, str] = {}
        pool_rng = np.random.default_rng(seed)
        reservoir: list[tuple[str, str]] = []  # a uniform sample of the other documents fills the dev pool
        need_fill = max(dev_docs - len(dev_needed), 0) if dev else 0
        full_corpus = bool(dev) and dev_docs == 0
        all_ids: list[str] = []
        seen_other = 0
        for doc in iter_corpus(ds.corpus_path):
            all_ids.append(doc.docid)
            if doc.docid in wanted or full_corpus:
                docs[doc.docid] = doc_text(doc)
            if need_fill and not full_corpus and doc.docid not in dev_needed:
                if len(reservoir) < need_fill:
                    reservoir.append((doc.docid, doc_text(doc)))
                else:
                    j = int(pool_rng.integers(0, seen_other + 1))
                    if j < need_fill:
                        reservoir[j] = (doc.docid, doc_text(doc))
                seen_other += 1
        absent = sorted(wanted - set(all_ids))
        if absent:
            raise DataError(f"{len(absent)} documents named in {negatives} are not in the corpus, e.g. "
                            f"{absent[0]!r}", path=ds.corpus_path)
        pool: list[str] = []
        if dev:
            if full_corpus:
                pool = all_ids
            else:
                pool = sorted(dev_needed) + sorted(d for d, _ in reservoir)
                docs.update(reservoir)
        texts = {e.qid: queries[e.qid] for e in train + dev}
        return cls(train, dev, texts, docs, pool, has_teacher)


@dataclass
class Group:
    """One query of a batch: its text, its passages (target positive first) and teacher scores."""

    qid: str
    query: str
    doc_ids: list[str]
    teacher: list[float] | None


class BatchPlan:
    """Global batches as a function of the step: ``batch(step)`` -> list of Group.

    ``clusters`` (one label per training query) turns on topic-aware sampling: within an epoch,
    each cluster is shuffled and cut into whole batches, so such a batch holds queries of one
    topic; the remainders of all clusters are pooled and cut into mixed batches.

    A query without mined negatives gets random ones: documents of ``data.docs`` that are not
    its positives. One with no such document is refused here, before any training (naming
    ``source``, the negatives file, when given).
    """

    def __init__(self, data: TrainingData, batch_size: int, group_size: int, seed: int = 0,
                 clusters: np.ndarray | None = None, source: str | os.PathLike | None = None) -> None:
        if group_size < 1:
            raise ValueError("group size must be at least 1 (the positive)")
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if batch_size > len(data.train):
            raise ValueError(f"batch size {batch_size} exceeds the {len(data.train)} training queries")
        self.data, self.batch_size, self.group_size, self.seed = data, batch_size, group_size, seed
        self.clusters = None if clusters is None else np.asarray(clusters)
        if self.clusters is not None and len(self.clusters) != len(data.train):
            raise ValueError("one cluster label per training query is needed")
        self.steps_per_epoch = len(data.train) // batch_size
        self._doc_ids = sorted(data.docs)
        if group_size > 1:
            for ex in data.train:
                if not ex.neg and not self._free(ex)[1]:
                    message = (f"query {ex.qid!r} has no negatives, and the documents random negatives are "
                               f"drawn from (the {len(self._doc_ids)} the training loaded) are all its positives; "
                               "give it negatives (retriever mine) or train with --group-size 1")
                    raise DataError(message, path=source) if source is not None else ValueError(message)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        n, b = len(self.data.train), self.batch_size
        if self.clusters is None:
            order = rng.permutation(n)
            batches = [order[i * b:(i + 1) * b] for i in range(n // b)]
        else:
            whole, rest = [], []
            for c in np.unique(self.clusters):
                members = rng.permutation(np.flatnonzero(self.clusters == c))
                k = len(members) // b
                whole += [members[i * b:(i + 1) * b] for i in range(k)]
                rest.append(members[k * b:])
            rest_all = rng.permutation(np.concatenate(rest)) if rest else np.empty(0, int)
            whole += [rest_all[i * b:(i + 1) * b] for i in range(len(rest_all) // b)]
            batches = [whole[i] for i in rng.permutation(len(whole))]
        return batches

    def batch(self, step: int) -> list[Group]:
        epoch, index = divmod(step, self.steps_per_epoch)
        rows = self.epoch_batches(epoch)[index]
        return [self._group(self.data.train[int(r)], epoch, int(r)) for r in rows]

    def _group(self, ex: Example, epoch: int, row: int) -> Group:
        rng = np.random.default_rng([self.seed, epoch, row, 7])
        p = int(rng.integers(len(ex.pos)))
        n = self.group_size - 1
        if ex.neg:
            picks = rng.choice(len(ex.neg), size=n, replace=len(ex.neg) < n) if n else np.empty(0, int)
            negs = [ex.neg[i] for i in picks]
        else:  # no mined negative: random documents that are not positives
            negs, tries = [], 0
            while len(negs) < n and tries < 64 * (n + 1):  # (the draw of earlier versions, bit for bit)
                d = self._doc_ids[int(rng.integers(len(self._doc_ids)))]
                tries += 1
                if d not in ex.pos:
                    negs.append(d)
            if len(negs) < n:  # nearly every document a positive: drawn among the others directly (bounded)
                taken, free = self._free(ex)
                negs += [self._doc_ids[_skip(int(r), taken)] for r in rng.integers(free, size=n - len(negs))]
            picks = None
        teacher = None
        if ex.pos_scores is not None and ex.neg_scores is not None and picks is not None:
            teacher = [ex.pos_scores[p]] + [ex.neg_scores[i] for i in picks]
        return Group(ex.qid, self.data.queries[ex.qid], [ex.pos[p]] + negs, teacher)

    def _free(self, ex: Example) -> tuple[list[int], int]:
        """(positions of ``ex``'s positives in the sorted doc ids, ascending; how many documents are not
        positives)."""
        taken = []
        for d in set(ex.pos):
            i = bisect.bisect_left(self._doc_ids, d)
            if i < len(self._doc_ids) and self._doc_ids[i] == d:
                taken.append(i)
        taken.sort()
        return taken, len(self._doc_ids) - len(taken)


def _skip(r: int, taken: list[int]) -> int:
    """The position of the ``r``-th (from 0) document whose position is not in ``taken`` (ascending)."""
    for t in taken:
        if t > r:
            break
        r += 1
    return r
