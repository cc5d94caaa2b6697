"""BEIR data: queries, qrels (BEIR TSV or TREC), splits, dataset layout checks (the corpus is
read by ``indexing.corpus``)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Collection, Iterator, Mapping, Set
from dataclasses import dataclass
from pathlib import Path

from indexing.corpus import Doc, iter_corpus
from indexing.errors import DataError
from indexing.records import id_problem, read_jsonl, read_lines, record_id, string_field

PathLike = str | os.PathLike[str]
Qrels = dict[str, dict[str, int]]

_INT = re.compile(r"[+-]?\d+")
_SPACE = re.compile(r"\s")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # only from JSON \u escapes; such strings cannot be encoded
_SPLIT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

# Score-column names that mark the first qrels line as a header (compared lowercased);
# BEIR writes "query-id<TAB>corpus-id<TAB>score".
QRELS_HEADER_SCORES = frozenset({"score", "relevance", "rel", "label", "grade", "judgment", "judgement"})
# Largest |relevance| accepted: pytrec_eval's nDCG slows down with the size of the largest grade
# (minutes at 10**6) and crashes the interpreter at 2**31 - 1.
QRELS_MAX_RELEVANCE = 1000


def load_queries(path: PathLike) -> dict[str, str]:
    """Read queries.jsonl ({"_id"|"id", "text"}) into {qid: text}, in file order."""
    file = Path(path)
    queries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for lineno, obj in read_jsonl(file):
        qid = record_id(obj, "query", file, lineno)
        if "text" not in obj:
            raise DataError(f"query {qid!r} has no 'text'", path=file, line=lineno)
        text = string_field(obj, "text", file, lineno)
        if qid in lines:
            raise DataError(f"duplicate query id {qid!r} (first on line {lines[qid]})", path=file, line=lineno)
        lines[qid] = lineno
        queries[qid] = text
    return queries


def load_query_file(path: PathLike) -> dict[str, str]:
    """Queries from a BEIR queries.jsonl (.jsonl, .json, .jsonl.gz) or a TSV of ``qid<TAB>text`` lines.

    TSV: blank lines are skipped; a UTF-8 BOM and CR/LF line ends are dropped; the text is
    everything after the first TAB. A line without a TAB, an empty qid, a qid with whitespace
    and a repeated qid are DataErrors.
    """
    file = Path(path)
    if file.suffix in (".jsonl", ".json") or file.name.endswith(".jsonl.gz"):
        return load_queries(file)
    queries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for lineno, line in read_lines(file):
        if not line.strip():
            continue
        qid, sep, text = line.partition("\t")
        if not sep:
            raise DataError("expected 'qid<TAB>text'", path=file, line=lineno)
        problem = id_problem(qid)
        if problem:
            raise DataError(f"query id {qid!r} {problem}", path=file, line=lineno)
        if qid in lines:
            raise DataError(f"duplicate query id {qid!r} (first on line {lines[qid]})", path=file, line=lineno)
        lines[qid] = lineno
        queries[qid] = text
    return queries


def load_qrels(path: PathLike) -> Qrels:
    """Read qrels into {qid: {docid: relevance}}.

    BEIR TSV (`query-id  corpus-id  score`, optional header) or TREC (`qid iter docid rel`).
    The first non-blank line is a header only when its score column, lowercased, is one of
    QRELS_HEADER_SCORES ("score", "relevance", ...); any other non-integer score is an error.
    A repeated (qid, docid) keeps the last value, as BEIR's loader does.
    """
    file = Path(path)
    qrels: Qrels = {}
    first = True
    for lineno, line in read_lines(file):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) != 3:  # not a BEIR TSV row: split TREC-style on any whitespace
            cols = line.split()
        if len(cols) == 3:
            qid, docid, score = cols
        elif len(cols) == 4:
            qid, _, docid, score = cols
        else:
            raise DataError(f"expected 3 (BEIR) or 4 (TREC) columns, got {len(cols)}", path=file, line=lineno)
        if first:
            first = False
            if score.lower() in QRELS_HEADER_SCORES:
                continue  # header, e.g. "query-id  corpus-id  score"
        if not _INT.fullmatch(score):
            raise DataError(f"relevance {score!r} is not an integer", path=file, line=lineno)
        rel = int(score) if len(score) <= 12 else None  # int() refuses over 4300 digits
        if rel is None or abs(rel) > QRELS_MAX_RELEVANCE:
            shown = score if len(score) <= 20 else f"{score[:12]}... ({len(score)} characters)"
            raise DataError(f"relevance {shown} is out of range (at most {QRELS_MAX_RELEVANCE} either way)",
                            path=file, line=lineno)
        if not qid or not docid:
            raise DataError("empty query or doc id", path=file, line=lineno)
        for what, ident in (("query", qid), ("doc", docid)):
            problem = id_problem(ident, whitespace_ok=True)
            if problem:
                raise DataError(f"{what} id {ident!r} {problem}", path=file, line=lineno)
        qrels.setdefault(qid, {})[docid] = rel
    return qrels


@dataclass(frozen=True, slots=True)
class QrelsReport:
    """How qrels relate to the queries and corpus; unknown ids are reported, never fatal."""

    queries: int  # distinct query ids in the qrels
    docs: int  # distinct judged doc ids
    judgements: int  # (query, doc) pairs
    unknown_queries: int  # qrels query ids not among the queries
    unknown_docs: int  # judged doc ids not in the corpus
    example_queries: tuple[str, ...] = ()
    example_docs: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.unknown_queries or self.unknown_docs)

    def __str__(self) -> str:
        parts = []
        if self.unknown_queries:
            parts.append(f"{self.unknown_queries}/{self.queries} qrels queries not in the queries "
                         f"(e.g. {', '.join(self.example_queries)})")
        if self.unknown_docs:
            parts.append(f"{self.unknown_docs}/{self.docs} judged docs not in the corpus "
                         f"(e.g. {', '.join(self.example_docs)})")
        return "; ".join(parts)


def _as_set(ids: Collection[str]) -> Collection[str]:
    return ids if isinstance(ids, (Set, Mapping)) else set(ids)


def check_qrels(qrels: Qrels, query_ids: Collection[str], doc_ids: Collection[str],
                examples: int = 3) -> QrelsReport:
    """Count qrels query ids missing from `query_ids` and judged doc ids missing from `doc_ids`."""
    qset, dset = _as_set(query_ids), _as_set(doc_ids)
    bad_q = [q for q in qrels if q not in qset]
    judged: dict[str, None] = {}
    for docs in qrels.values():
        judged.update(dict.fromkeys(docs))
    bad_d = [d for d in judged if d not in dset]
    return QrelsReport(
        queries=len(qrels), docs=len(judged), judgements=sum(len(d) for d in qrels.values()),
        unknown_queries=len(bad_q), unknown_docs=len(bad_d),
        example_queries=tuple(bad_q[:examples]), example_docs=tuple(bad_d[:examples]),
    )


def check_split_name(split: str) -> str:
    """Return `split` if it is a plain name (``test``, ``dev``, ``train-2``); else raise ValueError.

    A plain name is ASCII letters, digits, '_', '-' and '.', and does not start with '.', so
    ``qrels/{split}.tsv`` cannot leave the qrels directory (``../qrels/test``) or name test.tsv
    another way (``./test``), which would get past the guards that compare the name with "test".
    """
    if not isinstance(split, str) or not _SPLIT.fullmatch(split):
        raise ValueError(f"bad split name {split!r}: expected a plain name like 'test' or 'dev' "
                         "(letters, digits, '_', '-', '.'; not starting with '.')")
    return split


def is_test_split(split: str) -> bool:
    """Whether `split` names the test split (checked with check_split_name, compared case-insensitively)."""
    return check_split_name(split).lower() == "test"


class BeirDataset:
    """A BEIR dataset directory: corpus.jsonl, queries.jsonl, qrels/{split}.tsv."""

    def __init__(self, root: PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError("not a BEIR dataset directory (does not exist or is not a directory)",
                            path=self.root)
        missing = [n for n in ("corpus.jsonl", "queries.jsonl") if not (self.root / n).is_file()]
        if missing:
            raise DataError(f"not a BEIR dataset: missing {', '.join(missing)}", path=self.root)
        self._queries: dict[str, str] | None = None
        self._qrels: dict[str, Qrels] = {}

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"

    @property
    def queries_path(self) -> Path:
        return self.root / "queries.jsonl"

    def iter_corpus(self) -> Iterator[Doc]:
        return iter_corpus(self.corpus_path)

    def queries(self) -> dict[str, str]:
        """All queries (read once, then cached)."""
        if self._queries is None:
            self._queries = load_queries(self.queries_path)
        return self._queries

    def splits(self) -> list[str]:
        """Split names with a qrels/{split}.tsv, sorted."""
        qdir = self.root / "qrels"
        if not qdir.is_dir():
            return []
        return sorted(p.stem for p in qdir.glob("*.tsv") if p.is_file() and _SPLIT.fullmatch(p.stem))

    def qrels(self, split: str) -> Qrels:
        """qrels/{split}.tsv (cached); a missing split names the available ones."""
        if split not in self._qrels:
            try:
                check_split_name(split)
            except ValueError as e:
                raise DataError(str(e), path=self.root / "qrels") from None
            file = self.root / "qrels" / f"{split}.tsv"
            if not file.is_file():
                avail = ", ".join(self.splits()) or "none"
                raise DataError(f"no qrels for split {split!r}; available splits: {avail}", path=file)
            self._qrels[split] = load_qrels(file)
        return self._qrels[split]

    def split_queries(self, split: str) -> dict[str, str]:
        """{qid: text} for the qrels queries of `split` that exist in queries.jsonl, in qrels order."""
        queries = self.queries()
        return {q: queries[q] for q in self.qrels(split) if q in queries}


def carve_dev(qrels: Qrels, fraction: float = 0.2, seed: int = 0) -> tuple[Qrels, Qrels]:
    """Split qrels by query into (rest, dev), deterministically from the query id and seed.

    For tuning on data that has no dev split: carve it out of train, never out of test.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"dev fraction must be between 0 and 1, got {fraction}")
    rest: Qrels = {}
    dev: Qrels = {}
    for qid, judged in qrels.items():
        h = int.from_bytes(hashlib.sha256(f"{seed}:{qid}".encode()).digest()[:8], "big")
        (dev if h / 2**64 < fraction else rest)[qid] = judged
    return rest, dev
