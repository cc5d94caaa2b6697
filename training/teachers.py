"""Teachers for mining: what scores given (query, document) pairs, alone or as an ensemble.

A teacher scores *groups*: ``(qid, positives, candidates)``, every document in the corpus, and
returns, per group, the scores of its positives and of its candidates, in order. Three teachers,
each exact for what it stands for:

- :class:`EncoderTeacher`: a dense encoder (a model, or the encoder a dense index was built
  with): the inner product of the query's and the document's vectors, each text encoded once.
  For a dense index this is the model's score of the document, not the FAISS approximation of
  it (IVF/PQ); for a Flat index the two are the same.
- :class:`SearchTeacher`: any index whose search returns exact scores (bm25, sparse, their sharded
  and Lucene forms): the score the index gives the document for the query, read from its own
  ranked list. The query is searched with ``k`` = 1000, then 8 times deeper until every document
  of its group is in the list; one still missing at ``k`` = the collection size is not in the list
  at all (for an impact index: it shares no term with the query) and scores 0, the impact score of
  a document that matches nothing.
- :class:`HybridTeacher`: a hybrid index: its own fusion (method, weights, depth, RRF constant)
  of its components' ranked lists, i.e. the score the hybrid gives each document it returns; a
  document in neither component's list gets what fusion gives a missing document (each
  component's floor; 0 for RRF).

:class:`Ensemble` combines teachers: per query, each teacher's scores of the group's documents
(positives and candidates together) are normalised — z-score (default), min-max, or none, with
``eval.fusion.normalise`` — and summed with weights (default equal, 1/n each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from eval.fusion import Method, check_weights, normalise, ranked
from indexing.corpus import Doc, doc_text

Group = tuple[str, list[str], list[str]]          # (qid, positives, candidates)
Scores = tuple[list[float], list[float]]          # (positives' scores, candidates' scores)

NORMS = {"zscore": Method.ZSCORE, "minmax": Method.MINMAX, "none": Method.SUM}


class Scorer(Protocol):
    name: str   # what a negatives record names as its teacher when this teacher is alone
    info: dict  # what the record of an ensemble says of this member (kind, path, fingerprint)

    def score(self, queries: Mapping[str, str], groups: Sequence[Group], docs: Mapping[str, Doc]) -> list[Scores]: ...


class EncoderTeacher:
    """Scores with a dense encoder (``encode_queries`` / ``encode_documents`` -> float vectors)."""

    def __init__(self, encoder, name: str | None = None, info: dict | None = None) -> None:
        self.encoder = encoder
        self.name = name if name is not None else getattr(encoder, "model_name", "teacher")
        self.info = info if info is not None else _encoder_info(encoder, self.name)

    def score(self, queries: Mapping[str, str], groups: Sequence[Group], docs: Mapping[str, Doc]) -> list[Scores]:
        needed = sorted({d for _, pos, cands in groups for d in (*pos, *cands)})
        row = {d: i for i, d in enumerate(needed)}
        doc_vecs = self.encoder.encode_documents([doc_text(docs[d]) for d in needed]) if needed else None
        q_vecs = self.encoder.encode_queries([queries[qid] for qid, *_ in groups]) if groups else []
        out = []
        for (_, pos, cands), q in zip(groups, q_vecs):
            # positives as one product, candidates one by one: the arithmetic mining always used
            pos_scores = [float(s) for s in doc_vecs[[row[d] for d in pos]] @ q] if pos else []
            out.append((pos_scores, [float(doc_vecs[row[d]] @ q) for d in cands]))
        return out


def _encoder_info(encoder, name: str) -> dict:
    info = {"kind": "model", "model": name}
    path = getattr(encoder, "path", None)
    if path is not None:
        from retriever.encoders.models import fingerprint

        info["fingerprint"] = fingerprint(path)
    return info


class SearchTeacher:
    """Scores with an index's own ranked lists, searched deeper until they hold every document
    asked about (see the module notes). ``index``: anything with ``search_batch({qid: text}, k)``
    returning exact scores and ``len()`` its number of documents (a loaded ``Retriever``)."""

    def __init__(self, index, name: str, info: dict, start_k: int = 1000, deeper: int = 8,
                 batch: int = 256) -> None:
        if start_k < 1 or deeper < 2 or batch < 1:
            raise ValueError("start_k >= 1, deeper >= 2 and batch >= 1")
        self.index, self.name, self.info = index, name, info
        self.start_k, self.deeper, self.batch = start_k, deeper, batch

    def score(self, queries: Mapping[str, str], groups: Sequence[Group], docs: Mapping[str, Doc]) -> list[Scores]:
        n = len(self.index)
        found: dict[str, dict[str, float]] = {}
        for lo in range(0, len(groups), self.batch):
            want = {qid: {*pos, *cands} for qid, pos, cands in groups[lo:lo + self.batch]}
            pending = [q for q in want if want[q]]
            k = self.start_k
            while pending:
                k = min(k, n)
                run = self.index.search_batch({q: queries[q] for q in pending}, k=k)
                still = []
                for q in pending:
                    hits = run.get(q, {})
                    if k >= n or want[q] <= hits.keys():
                        found[q] = {d: float(hits[d]) for d in want[q] if d in hits}  # the rest: 0
                    else:
                        still.append(q)
                pending, k = still, k * self.deeper
        return [_read(found.get(qid, {}), pos, cands) for qid, pos, cands in groups]


def _read(scores: Mapping[str, float], pos: list[str], cands: list[str]) -> Scores:
    return [scores.get(d, 0.0) for d in pos], [scores.get(d, 0.0) for d in cands]


class HybridTeacher:
    """Scores with a hybrid index's fusion of its components' lists. ``searcher``: the hybrid's
    searcher (``component_runs({qid: text})`` and ``fusion`` with method, weights, depth, rrf_k)."""

    def __init__(self, searcher, name: str, info: dict, batch: int = 256) -> None:
        self.searcher, self.name, self.info, self.batch = searcher, name, info, batch

    def score(self, queries: Mapping[str, str], groups: Sequence[Group], docs: Mapping[str, Doc]) -> list[Scores]:
        f = self.searcher.fusion
        method = Method(f.method)
        out = []
        for lo in range(0, len(groups), self.batch):
            part = groups[lo:lo + self.batch]
            runs = self.searcher.component_runs({qid: queries[qid] for qid, *_ in part})
            for qid, pos, cands in part:
                lists = [normalise(ranked(run.get(qid, {}), f.depth), method, f.rrf_k) for run in runs]

                def fused(d: str) -> float:
                    return sum(w * scores.get(d, floor) for w, (scores, floor) in zip(f.weights, lists))

                out.append(([fused(d) for d in pos], [fused(d) for d in cands]))
        return out


def check_mix(n: int, weights: Sequence[float] | None, norm: str) -> list[float]:
    """The weights of an ``n``-teacher mix (default equal, 1/n each); ValueError for a count that
    is not ``n``, weights ``eval.fusion.check_weights`` refuses, or an unknown norm."""
    if norm not in NORMS:
        raise ValueError(f"unknown teacher normalisation {norm!r}; one of {', '.join(NORMS)}")
    if n < 1:
        raise ValueError("an ensemble needs at least one teacher")
    if weights is None:
        return [1.0 / n] * n
    weights = list(weights)
    if len(weights) != n:
        raise ValueError(f"{len(weights)} teacher weights for {n} teachers; give one weight per --teacher")
    return check_weights(weights, what="teacher weights")


class Ensemble:
    """A weighted sum of teachers' per-query normalised scores (see the module notes).

    Its scores have no fixed zero (z-scores are centred on each query's documents), so mining
    measures its false-negative margin from the query's lowest score (``relative_margin``)."""

    relative_margin = True

    def __init__(self, teachers: Sequence, weights: Sequence[float] | None = None,
                 norm: str = "zscore") -> None:
        self.teachers = [as_scorer(t) for t in teachers]
        self.weights = check_mix(len(self.teachers), weights, norm)
        self.norm = norm
        self.name = " + ".join(f"{w:g} {norm}({t.name})" for w, t in zip(self.weights, self.teachers))
        self.info = {"teachers": [t.info for t in self.teachers], "weights": self.weights, "norm": norm}

    @property
    def record(self) -> dict:
        """What each negatives record says of its teacher: the mix."""
        return self.info

    def score(self, queries: Mapping[str, str], groups: Sequence[Group], docs: Mapping[str, Doc]) -> list[Scores]:
        method = NORMS[self.norm]
        each = [t.score(queries, groups, docs) for t in self.teachers]
        out = []
        for i, (_, pos, cands) in enumerate(groups):
            ids = [*pos, *cands]
            parts = [normalise(list(zip(ids, [*ps, *cs])), method)[0] for ps, cs in (e[i] for e in each)]
            combined = [sum(w * part[d] for w, part in zip(self.weights, parts)) for d in ids]
            out.append((combined[:len(pos)], combined[len(pos):]))
        return out


def as_scorer(teacher) -> Scorer:
    """A teacher as a scorer: scorers as they are, an encoder wrapped in :class:`EncoderTeacher`."""
    return teacher if hasattr(teacher, "score") else EncoderTeacher(teacher)


def record_of(teacher: Scorer):
    """What a negatives record's ``teacher`` field holds: the mix of an ensemble, else the name."""
    return getattr(teacher, "record", teacher.name)
