"""BM25 as Lucene computes it, stored as impacts in the native inverted index.

Lucene (and so Anserini/Pyserini) scores ``idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))`` with
``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``, but keeps each document's length ``dl`` in a single
byte (``SmallFloat.intToByte4``), so long documents are scored with a rounded-down length. We
reproduce that encoding, Lucene's float32 arithmetic, and its per-field statistics (``N`` and
``avgdl`` count only documents where the field has tokens), so our scores equal Lucene's.

``flat`` indexes ``title + "\\n" + text`` as one field; ``multifield`` scores title and text as
separate BM25 fields and adds them, which is a sum of impacts per (term, document).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable, Literal

import numpy as np

from eval.beir import Doc
from indexing.analysis import Analyzer
from indexing.inverted import InvertedIndex
from indexing.manifest import IndexWriter
from indexing.searcher import ImpactSearcher

Fields = Literal["flat", "multifield"]

# SmallFloat.intToByte4: values below NUM_FREE are stored exactly; above, a 4-bit float
# (3 mantissa bits and an implicit leading one). NUM_FREE = 255 - longToInt4(2**31 - 1) = 24.
_NUM_FREE = 24


def _long_to_int4(v: int) -> int:
    nbits = v.bit_length()
    if nbits < 4:
        return v
    shift = nbits - 4
    return ((v >> shift) & 0x07) | ((shift + 1) << 3)


def _int4_to_long(i: int) -> int:
    bits, shift = i & 0x07, (i >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


def length_to_byte(length: int) -> int:
    """Lucene's one-byte encoding of a field length (lossy above 23)."""
    if length < _NUM_FREE:
        return length
    return _NUM_FREE + _long_to_int4(length - _NUM_FREE)


def byte_to_length(b: int) -> int:
    return b if b < _NUM_FREE else _NUM_FREE + _int4_to_long(b - _NUM_FREE)


LENGTH_TABLE = np.array([byte_to_length(b) for b in range(256)], dtype=np.int64)


def quantize_lengths(lengths: np.ndarray) -> np.ndarray:
    """Byte codes for an array of field lengths (the largest table entry <= each length)."""
    return (np.searchsorted(LENGTH_TABLE, lengths, side="right") - 1).astype(np.uint8)


@dataclass(frozen=True)
class BM25Params:
    k1: float = 0.9
    b: float = 0.4
    fields: Fields = "flat"

    def __post_init__(self) -> None:
        if self.fields not in ("flat", "multifield"):
            raise ValueError(f"fields must be 'flat' or 'multifield', not {self.fields!r}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1={self.k1}, b={self.b})")


class _Field:
    """Term frequencies of one field, accumulated document by document."""

    def __init__(self) -> None:
        self.term_ids = array("i")
        self.doc_ids = array("i")
        self.tfs = array("i")
        self.lengths = array("i")

    def add(self, doc: int, tokens: list[str], vocab: dict[str, int]) -> None:
        self.lengths.append(len(tokens))
        for term, tf in Counter(tokens).items():
            tid = vocab.get(term)
            if tid is None:
                tid = vocab[term] = len(vocab)
            self.term_ids.append(tid)
            self.doc_ids.append(doc)
            self.tfs.append(tf)

    def impacts(self, num_terms: int, k1: float, b: float) -> tuple[np.ndarray, dict]:
        """Lucene BM25 score of each (term, doc) posting, in Lucene's float32 arithmetic."""
        lengths = np.frombuffer(self.lengths, dtype=np.int32)
        term_ids = np.frombuffer(self.term_ids, dtype=np.int32)
        doc_count = int((lengths > 0).sum())
        total = int(lengths.sum(dtype=np.int64))
        stats = {"doc_count": doc_count, "sum_total_term_freq": total}
        if doc_count == 0:
            return np.zeros(len(term_ids), dtype=np.float32), {**stats, "avgdl": 0.0}
        avgdl = np.float32(total / doc_count)
        df = np.bincount(term_ids, minlength=num_terms).astype(np.float64)
        idf = np.log(1.0 + (doc_count - df + 0.5) / (df + 0.5)).astype(np.float32)
        f32 = np.float32
        norm_inverse = f32(1) / (f32(k1) * ((f32(1) - f32(b)) + f32(b) * LENGTH_TABLE.astype(np.float32) / avgdl))
        doc_norm = norm_inverse[quantize_lengths(lengths)]
        tf = np.frombuffer(self.tfs, dtype=np.int32).astype(np.float32)
        w = idf[term_ids]
        ni = doc_norm[np.frombuffer(self.doc_ids, dtype=np.int32)]
        impacts = w - w / (f32(1) + tf * ni)
        return impacts.astype(np.float32), {**stats, "avgdl": float(avgdl)}


def build_bm25_index(docs: Iterable[Doc], analyzer: Analyzer, params: BM25Params,
                     on_doc=None) -> tuple[InvertedIndex, list[str], dict]:
    """Analyse a corpus and return its BM25 impact index, doc ids and build statistics.

    ``on_doc`` is called with each Doc after it is indexed (progress bars, doc stores).
    """
    field_names = ("contents",) if params.fields == "flat" else ("title", "text")
    fields = {name: _Field() for name in field_names}
    vocab: dict[str, int] = {}
    docids: list[str] = []
    fingerprint = hashlib.sha256()
    for i, doc in enumerate(docs):
        docids.append(doc.docid)
        for part in (doc.docid, doc.title, doc.text):
            fingerprint.update(part.encode("utf-8"))
            fingerprint.update(b"\x00")
        if params.fields == "flat":
            fields["contents"].add(i, analyzer(f"{doc.title}\n{doc.text}"), vocab)
        else:
            fields["title"].add(i, analyzer(doc.title), vocab)
            fields["text"].add(i, analyzer(doc.text), vocab)
        if on_doc is not None:
            on_doc(doc)
    terms = list(vocab)
    parts, stats = [], {}
    for name, field in fields.items():
        impacts, stats[name] = field.impacts(len(terms), params.k1, params.b)
        parts.append((np.frombuffer(field.term_ids, dtype=np.int32),
                      np.frombuffer(field.doc_ids, dtype=np.int32), impacts))
    index = InvertedIndex.from_postings(
        terms,
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        num_docs=len(docids),
    )
    info = {"bm25": asdict(params), "field_stats": stats, "corpus_fingerprint": fingerprint.hexdigest()}
    return index, docids, info


def query_weights(analyzer: Analyzer, text: str) -> dict[str, float]:
    """A query as Anserini builds it: each analysed term once, boosted by its count."""
    return {t: float(c) for t, c in Counter(analyzer(text)).items()}


def write_index(docs: Iterable[Doc], writer: IndexWriter, *, fields: Fields = "flat",
                k1: float = 0.9, b: float = 0.4, stopwords: str = "lucene",
                stemmer: str = "porter", on_doc=None) -> dict:
    """Build a BM25 index into ``writer``; returns the manifest entries it needs to be searched."""
    analyzer = Analyzer(stopwords=stopwords, stemmer=stemmer)
    index, docids, info = build_bm25_index(docs, analyzer, BM25Params(k1=k1, b=b, fields=fields), on_doc)
    index.save(writer)
    writer.write_docids(docids)
    return {
        "kind": "bm25",
        "backend": "native",
        "doc_count": len(docids),
        "analyzer": analyzer.config(),
        **info,
        "postings": {"terms": len(index.terms), "postings": index.num_postings, "impacts": "float32"},
    }


def open_index(root, manifest: dict, docids: list[str]) -> ImpactSearcher:
    analyzer = Analyzer.from_config(manifest["analyzer"])
    index = InvertedIndex.load(root, num_docs=len(docids))
    return ImpactSearcher(index, docids, lambda text: query_weights(analyzer, text))
