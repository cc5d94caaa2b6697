"""BEIR data: streamed corpus, queries, qrels (BEIR TSV or TREC), dataset layout checks."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import math
import os
import re
import zlib
from collections.abc import Collection, Iterator, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.errors import DataError

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


@dataclass(frozen=True, slots=True)
class Doc:
    docid: str
    title: str
    text: str


class CorpusFingerprint:
    """sha256 over every document's id, title and text, fed one document at a time."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, doc: Doc) -> None:
        for part in (doc.docid, doc.title, doc.text):
            self._h.update(part.encode("utf-8"))
            self._h.update(b"\x00")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def doc_text(doc: Doc) -> str:
    """What a neural encoder reads: title and text joined by a space (BEIR's convention)."""
    return f"{doc.title} {doc.text}".strip() if doc.title else doc.text


def _id_problem(ident: str, *, whitespace_ok: bool = False) -> str | None:
    """Why `ident` cannot be an id, or None: empty, whitespace, control characters, lone surrogates.

    Control characters and lone surrogates would reach pytrec_eval, which cuts ids at a NUL and
    crashes on surrogates.
    """
    if ident and ident.isprintable() and (whitespace_ok or " " not in ident):
        return None  # fast path: whitespace other than " ", controls and surrogates are unprintable
    if not ident or (not whitespace_ok and _SPACE.search(ident)):
        return "is empty or contains whitespace"
    if _CONTROL.search(ident):
        return "contains a control character"
    if _SURROGATE.search(ident):
        return "contains a lone surrogate (an unpaired \\u escape)"
    return None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its CR/LF); strips a UTF-8 BOM; reads .gz too.

    Every failure is a DataError: a directory, an unreadable file, invalid UTF-8, a read error,
    and for .gz files a corrupt or truncated stream (found only as it is read).
    """
    if path.is_dir():
        raise DataError("is a directory, expected a file", path=path)
    gz = path.suffix == ".gz"
    opener: Any = gzip.open if gz else open
    try:
        f = opener(path, "rb")
    except OSError as e:
        raise DataError(f"cannot open: {e.strerror or e}", path=path) from None
    except ValueError as e:  # e.g. a NUL byte in the path
        raise DataError(f"cannot open: {e}", path=path) from None
    lineno = 0
    with f:
        try:
            for raw in f:
                lineno += 1
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"invalid UTF-8 at byte {e.start}", path=path, line=lineno) from None
                yield lineno, line.rstrip("\r\n")
        except (OSError, EOFError, zlib.error) as e:  # raised by the read, not by the consumer
            if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile):
                message = f"read error after line {lineno}: {e.strerror or e}"
            else:  # BadGzipFile (not gzip, bad CRC), EOFError (truncated), zlib.error (bad data)
                message = f"corrupt or truncated gzip data after line {lineno}: {e}"
            raise DataError(message, path=path) from None


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank JSONL line."""
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg} (column {e.colno})", path=path, line=lineno) from None
        except ValueError as e:  # an integer over Python's digit limit
            raise DataError(f"malformed JSON: {str(e).split(';')[0]}", path=path, line=lineno) from None
        except RecursionError:
            raise DataError("malformed JSON: nested too deeply", path=path, line=lineno) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=lineno)
        yield lineno, obj


def _record_id(obj: dict[str, Any], what: str, path: Path, lineno: int) -> str:
    key = "_id" if "_id" in obj else "id" if "id" in obj else None
    if key is None:
        raise DataError(f"missing {what} id ('_id' or 'id')", path=path, line=lineno)
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{what} id {key!r} must be a string or integer, got {type(value).__name__}",
                        path=path, line=lineno)
    ident = str(value)
    problem = _id_problem(ident)
    if problem:
        raise DataError(f"{what} id {ident!r} {problem}", path=path, line=lineno)
    return ident


def _string_field(obj: dict[str, Any], key: str, path: Path, lineno: int) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"field {key!r} must be a string, got {type(value).__name__}", path=path, line=lineno)
    if not value.isascii() and _SURROGATE.search(value):
        raise DataError(f"field {key!r} contains a lone surrogate (an unpaired \\u escape)",
                        path=path, line=lineno)
    return value


def _first_line(path: Path, what: str, ident: str) -> int:
    """Line of the first record with this id (only used to report a duplicate)."""
    for lineno, obj in _json_records(path):
        if _record_id(obj, what, path, lineno) == ident:
            return lineno
    raise AssertionError("unreachable: duplicate id not found on rescan")


def corpus_file(path: PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "corpus.jsonl"
    if not p.is_file():
        raise DataError("no such corpus file", path=p)
    return p


def iter_corpus(path: PathLike) -> Iterator[Doc]:
    """Stream docs from a JSONL corpus (or a BEIR dir's corpus.jsonl), validating each line.

    Records: {"_id"|"id", "title"?, "text"|"contents"}; a missing title is "".
    """
    file = corpus_file(path)
    seen: set[str] = set()
    for lineno, obj in _json_records(file):
        docid = _record_id(obj, "doc", file, lineno)
        key = "text" if "text" in obj else "contents" if "contents" in obj else None
        if key is None:
            raise DataError(f"doc {docid!r} has no 'text' (or 'contents')", path=file, line=lineno)
        text = _string_field(obj, key, file, lineno)
        title = _string_field(obj, "title", file, lineno) if "title" in obj else ""
        if docid in seen:
            first = _first_line(file, "doc", docid)
            raise DataError(f"duplicate doc id {docid!r} (first on line {first})", path=file, line=lineno)
        seen.add(docid)
        yield Doc(docid, title, text)


def iter_vector_collection(path: PathLike) -> Iterator[tuple[Doc, dict[str, float]]]:
    """Stream Anserini JsonVectorCollection records: {"id", "contents"?, "vector": {term: weight}}."""
    file = corpus_file(path)
    seen: set[str] = set()
    for lineno, obj in _json_records(file):
        docid = _record_id(obj, "doc", file, lineno)
        vector = obj.get("vector")
        if not isinstance(vector, dict):
            raise DataError(f"doc {docid!r} has no 'vector' object of term weights", path=file, line=lineno)
        for term, weight in vector.items():
            try:
                finite = (not isinstance(weight, bool) and isinstance(weight, (int, float))
                          and math.isfinite(weight))
            except OverflowError:  # an integer too large for a float
                finite = False
            if not finite:
                shown = repr(weight)
                shown = shown if len(shown) <= 40 else f"{shown[:20]}... ({len(shown)} characters)"
                raise DataError(f"doc {docid!r}: weight of term {term!r} must be a finite number, got {shown}",
                                path=file, line=lineno)
            if not term.isascii() and _SURROGATE.search(term):
                raise DataError(f"doc {docid!r}: term {term!r} contains a lone surrogate (an unpaired \\u escape)",
                                path=file, line=lineno)
            if weight < 0:
                raise DataError(f"doc {docid!r}: weight of term {term!r} is negative ({weight})",
                                path=file, line=lineno)
        key = "contents" if "contents" in obj else "text" if "text" in obj else None
        text = _string_field(obj, key, file, lineno) if key else ""
        title = _string_field(obj, "title", file, lineno) if "title" in obj else ""
        if docid in seen:
            first = _first_line(file, "doc", docid)
            raise DataError(f"duplicate doc id {docid!r} (first on line {first})", path=file, line=lineno)
        seen.add(docid)
        yield Doc(docid, title, text), vector


def load_queries(path: PathLike) -> dict[str, str]:
    """Read queries.jsonl ({"_id"|"id", "text"}) into {qid: text}, in file order."""
    file = Path(path)
    queries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for lineno, obj in _json_records(file):
        qid = _record_id(obj, "query", file, lineno)
        if "text" not in obj:
            raise DataError(f"query {qid!r} has no 'text'", path=file, line=lineno)
        text = _string_field(obj, "text", file, lineno)
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
    for lineno, line in _lines(file):
        if not line.strip():
            continue
        qid, sep, text = line.partition("\t")
        if not sep:
            raise DataError("expected 'qid<TAB>text'", path=file, line=lineno)
        problem = _id_problem(qid)
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
    for lineno, line in _lines(file):
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
            problem = _id_problem(ident, whitespace_ok=True)
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
