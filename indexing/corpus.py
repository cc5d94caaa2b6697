"""Corpora: the documents we index, streamed from BEIR ``corpus.jsonl`` (or a plain JSONL of
``{"id", "contents"}``) and Anserini JsonVectorCollection files, with their fingerprint."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from indexing.errors import DataError
from indexing.records import _SURROGATE, first_line, read_jsonl, record_id, string_field

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Doc:
    docid: str
    title: str
    text: str
    vector: dict | None = field(default=None, compare=False, hash=False)  # precomputed {term: weight}


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


def corpus_file(path: PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "corpus.jsonl"
    if not p.is_file():
        if p.exists():  # a pipe (`<(...)`), a device: the builders read a corpus more than once, by offsets
            raise DataError("not a regular file (a pipe or device?); a corpus is read by byte offsets, "
                            "more than once: write it to a file first", path=p)
        raise DataError("no such corpus file", path=p)
    return p


def iter_corpus(path: PathLike) -> Iterator[Doc]:
    """Stream docs from a JSONL corpus (or a BEIR dir's corpus.jsonl), validating each line.

    Records: {"_id"|"id", "title"?, "text"|"contents"}; a missing title is "".
    """
    file = corpus_file(path)
    seen: set[str] = set()
    for lineno, obj in read_jsonl(file):
        doc = doc_from_record(obj, file, lineno)
        if doc.docid in seen:
            first = first_line(file, "doc", doc.docid)
            raise DataError(f"duplicate doc id {doc.docid!r} (first on line {first})", path=file, line=lineno)
        seen.add(doc.docid)
        yield doc


def doc_from_record(obj: dict, file: Path, lineno: int) -> Doc:
    """One corpus record as a Doc, checked (DataError naming ``file:lineno``)."""
    docid = record_id(obj, "doc", file, lineno)
    key = "text" if "text" in obj else "contents" if "contents" in obj else None
    if key is None:
        raise DataError(f"doc {docid!r} has no 'text' (or 'contents')", path=file, line=lineno)
    text = string_field(obj, key, file, lineno)
    title = string_field(obj, "title", file, lineno) if "title" in obj else ""
    return Doc(docid, title, text)


def iter_vector_collection(path: PathLike) -> Iterator[tuple[Doc, dict[str, float]]]:
    """Stream Anserini JsonVectorCollection records: {"id", "contents"?, "vector": {term: weight}}."""
    file = corpus_file(path)
    seen: set[str] = set()
    for lineno, obj in read_jsonl(file):
        doc, vector = vector_record(obj, file, lineno)
        if doc.docid in seen:
            first = first_line(file, "doc", doc.docid)
            raise DataError(f"duplicate doc id {doc.docid!r} (first on line {first})", path=file, line=lineno)
        seen.add(doc.docid)
        yield doc, vector


def vector_record(obj: dict, file: Path, lineno: int) -> tuple[Doc, dict[str, float]]:
    """One JsonVectorCollection record as (Doc, {term: weight}), checked (DataError naming ``file:lineno``)."""
    docid = record_id(obj, "doc", file, lineno)
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
    text = string_field(obj, key, file, lineno) if key else ""
    title = string_field(obj, "title", file, lineno) if "title" in obj else ""
    return Doc(docid, title, text), vector
