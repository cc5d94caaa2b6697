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

import json
import math
from array import array
from pathlib import Path
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable, Literal

import numpy as np

from indexing.corpus import Doc
from indexing.analysis import Analyzer
from indexing.compress import Bm25Model, bm25_impact
from indexing.inverted import POSTINGS_DOCS, POSTINGS_IMPACTS, InvertedIndex
from indexing.io import load_npy, save_npy
from indexing.postings import NpyAppender, PostingsBuilder, read_rows

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
        for name in ("k1", "b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"BM25 {name} must be a finite number, got {value!r}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1={self.k1}, b={self.b})")


def _field_weights(df: np.ndarray, lengths: np.ndarray, k1: float, b: float,
                   collection: tuple[int, int] | None = None):
    """Per-term idf, per-document length byte (Lucene's) and the norm of each byte,
    ``1 / (k1 * (1 - b + b * dl / avgdl))``, for one field, float32: a document's norm is
    ``table[codes[d]]``.

    ``collection`` = (doc_count, sum of lengths) of the whole collection when these documents
    are a part of it (``df`` is then the collection's too); default: these documents'."""
    if collection is None:
        doc_count = int((lengths > 0).sum())
        total = int(lengths.sum(dtype=np.int64))
    else:
        doc_count, total = int(collection[0]), int(collection[1])
    stats = {"doc_count": doc_count, "sum_total_term_freq": total, "avgdl": 0.0}
    if doc_count == 0:
        return np.zeros(len(df), np.float32), np.zeros(len(lengths), np.uint8), np.zeros(256, np.float32), stats
    f32 = np.float32
    avgdl = f32(total / doc_count)
    stats["avgdl"] = float(avgdl)
    idf = np.log(1.0 + (doc_count - df + 0.5) / (df + 0.5)).astype(np.float32)
    table = f32(1) / (f32(k1) * ((f32(1) - f32(b)) + f32(b) * LENGTH_TABLE.astype(np.float32) / avgdl))
    return idf, quantize_lengths(lengths), table, stats


def _postings_slices(offsets: np.ndarray, step: int = 5_000_000):
    """(start, end, term of each posting) over the CSR in slices of ``step`` postings."""
    total = int(offsets[-1])
    for p0 in range(0, total, step):
        p1 = min(total, p0 + step)
        yield p0, p1, np.searchsorted(offsets, np.arange(p0, p1), side="right") - 1


ANALYSED = "analysed.json"
_TF = "tf.tmp.npy"
_LENGTHS = "lengths.npy"
_OFFSETS = "offsets.npy"
_DOCIDS = "docids.txt"


@dataclass
class Analysed:
    """A corpus analysed into term-frequency postings, before BM25 weights them: the first half
    of :func:`build_bm25_index`. ``directory`` holds the doc-id postings (``postings_docs.npy``)
    and the term frequencies (fields columns); ``lengths`` is (fields, documents).

    A sharded build analyses each shard once: the statistics of every part (:meth:`stats`) are
    merged, then each part is weighted with the merged ones (:func:`weigh`). :meth:`save` and
    :meth:`load` keep it between the two steps (the two may run in different processes)."""

    directory: Path
    names: tuple[str, ...]
    terms: list[str]
    offsets: np.ndarray
    docids: list[str]
    lengths: np.ndarray

    def stats(self) -> "CollectionStats":
        """This part's collection statistics (what :meth:`CollectionStats.merge` adds up)."""
        df = np.zeros((len(self.names), len(self.terms)), dtype=np.int64)
        for p0, p1, t in _postings_slices(self.offsets):
            tfs = read_rows(self.directory / _TF, p0, p1).reshape(p1 - p0, len(self.names))
            for f in range(len(self.names)):
                df[f] += np.bincount(t[tfs[:, f] > 0], minlength=len(self.terms))
        lengths = self.lengths.astype(np.int64)
        return CollectionStats(self.names, self.terms, df, [int((row > 0).sum()) for row in lengths],
                               [int(row.sum()) for row in lengths], len(self.docids))

    def save(self) -> None:
        """Record the state next to its postings; ``analysed.json`` is written last (atomically),
        so its presence means the directory is complete."""
        from indexing.io import atomic_open

        save_npy(self.directory / _OFFSETS, self.offsets)
        save_npy(self.directory / _LENGTHS, self.lengths)
        with atomic_open(self.directory / _DOCIDS) as f:
            f.write("".join(d + "\n" for d in self.docids))
        with atomic_open(self.directory / ANALYSED) as f:
            json.dump({"names": list(self.names), "terms": self.terms, "docs": len(self.docids)}, f,
                      ensure_ascii=False)

    @classmethod
    def load(cls, directory: Path) -> "Analysed":
        directory = Path(directory)
        meta = json.loads((directory / ANALYSED).read_text(encoding="utf-8"))
        docids = (directory / _DOCIDS).read_text(encoding="utf-8").split("\n")[:-1]
        if len(docids) != meta["docs"]:
            raise ValueError(f"{directory}: {len(docids)} doc ids for {meta['docs']} documents")
        return cls(directory, tuple(meta["names"]), meta["terms"], load_npy(directory / _OFFSETS),
                   docids, load_npy(directory / _LENGTHS))


def analyse(docs: Iterable[Doc], analyzer: Analyzer, params: BM25Params, out_dir: Path,
            chunk_postings: int = 10_000_000) -> Analysed:
    """Analyse a corpus into term-frequency postings in ``out_dir`` (bounded memory: postings
    stream through :class:`PostingsBuilder`)."""
    multifield = params.fields == "multifield"
    names = ("title", "text") if multifield else ("contents",)
    builder = PostingsBuilder(columns=len(names), dtype=np.int32, chunk_postings=chunk_postings,
                              tmp_dir=out_dir)
    lengths = [array("i") for _ in names]
    vocab: dict[str, int] = {}
    docids: list[str] = []

    def ids(counter: Counter) -> list[int]:
        out = []
        for term in counter:
            tid = vocab.get(term)
            if tid is None:
                tid = vocab[term] = len(vocab)
            out.append(tid)
        return out

    for i, doc in enumerate(docs):
        docids.append(doc.docid)
        if multifield:
            title, text = Counter(analyzer(doc.title)), Counter(analyzer(doc.text))
            lengths[0].append(sum(title.values()))
            lengths[1].append(sum(text.values()))
            union = title | text
            builder.add(i, ids(union), [(title.get(t, 0), text.get(t, 0)) for t in union])
        else:
            tokens = analyzer(f"{doc.title}\n{doc.text}")
            counts = Counter(tokens)
            lengths[0].append(len(tokens))
            builder.add(i, ids(counts), list(counts.values()))
    terms = list(vocab)
    offsets, _, _ = builder.finish(len(terms), out_dir, POSTINGS_DOCS, _TF)
    return Analysed(Path(out_dir), names, terms, np.asarray(offsets),
                    docids, np.array([np.frombuffer(x, dtype=np.int32) for x in lengths], dtype=np.int32))


def weigh(analysed: Analysed, params: BM25Params, out_dir: Path, collection: "CollectionStats | None" = None,
          keep: bool = False) -> tuple[InvertedIndex, list[str], dict]:
    """The second half of :func:`build_bm25_index`: the term frequencies of ``analysed`` turned
    into Lucene BM25 impacts (``postings_impacts.npy`` in ``out_dir``) with ``collection``'s
    statistics (default: the analysed documents' own). The term frequencies are deleted unless
    ``keep`` (a sharded build keeps them until the shard is written, for a retry)."""
    names, terms, offsets, docids = analysed.names, analysed.terms, analysed.offsets, analysed.docids
    tf_file = analysed.directory / _TF
    if collection is None:
        df = analysed.stats().df.astype(np.float64)
    else:
        df = collection.df_of(terms, names)
    weights, stats = [], {}
    for f, name in enumerate(names):
        idf, codes, table, stats[name] = _field_weights(
            df[f], analysed.lengths[f], params.k1, params.b, None if collection is None else collection.field(name))
        weights.append((idf, table[codes]))
    # one field: each impact is a function of the term's idf, its tf and the document's length
    # byte, which the compressed postings store instead of the impact (indexing.compress)
    model = None if len(names) > 1 else Bm25Model(idf, codes, table)
    out = NpyAppender(out_dir / POSTINGS_IMPACTS, np.float32, (int(offsets[-1]),))
    f32 = np.float32
    docs_file = analysed.directory / POSTINGS_DOCS
    for p0, p1, t in _postings_slices(offsets):
        d = read_rows(docs_file, p0, p1)
        tfs = read_rows(tf_file, p0, p1).reshape(p1 - p0, len(names))
        total = np.zeros(p1 - p0, dtype=np.float32)
        for f, (idf, doc_norm) in enumerate(weights):
            tf = tfs[:, f].astype(np.float32)
            w = idf[t]
            total += np.where(tf > 0, bm25_impact(w, tf, doc_norm[d]), f32(0))
        out.append(total)
    out.close()
    if not keep:
        tf_file.unlink()
    impacts = load_npy(out_dir / POSTINGS_IMPACTS, "r")
    index = InvertedIndex(terms, offsets, load_npy(docs_file, "r"), impacts, num_docs=len(docids),
                          model=model)
    info = {"bm25": asdict(params), "field_stats": stats}
    return index, docids, info


def build_bm25_index(docs: Iterable[Doc], analyzer: Analyzer, params: BM25Params, out_dir: Path,
                     chunk_postings: int = 10_000_000, collection: "CollectionStats | None" = None,
                     ) -> tuple[InvertedIndex, list[str], dict]:
    """Analyse a corpus into a BM25 impact index whose postings are written into ``out_dir``:
    :func:`analyse`, then :func:`weigh`. Returns the index, the doc ids in order, and
    ``{"bm25": params, "field_stats": ...}`` for the manifest.

    ``collection``: statistics of a whole collection these documents are one part of (a shard),
    merged from every part's :meth:`Analysed.stats`; the impacts are then exactly those an index
    of the whole collection holds for these documents. Every term of ``docs`` must be in it
    (ValueError otherwise).
    """
    return weigh(analyse(docs, analyzer, params, out_dir, chunk_postings), params, out_dir, collection)


@dataclass
class CollectionStats:
    """BM25 collection statistics: per field, the documents where it has tokens and the sum of
    its lengths, and per term its document frequency in each field.

    ``fields`` names the fields (``contents``; or ``title``, ``text``), ``df`` is (fields, terms)
    int64. Partial statistics of disjoint parts of a collection add up with :meth:`merge`.
    """

    fields: tuple[str, ...]
    terms: list[str]
    df: np.ndarray
    doc_count: list[int]
    total: list[int]
    num_docs: int = 0

    def field(self, name: str) -> tuple[int, int]:
        f = self.fields.index(name)
        return self.doc_count[f], self.total[f]

    def df_of(self, terms: list[str], names: tuple[str, ...]) -> np.ndarray:
        """Document frequencies (float64, fields x ``terms``) of the given terms."""
        if tuple(names) != self.fields:
            raise ValueError(f"collection statistics are for fields {self.fields}, not {tuple(names)}")
        where = {t: i for i, t in enumerate(self.terms)}
        try:
            rows = np.fromiter((where[t] for t in terms), dtype=np.int64, count=len(terms))
        except KeyError as e:
            raise ValueError(f"term {e.args[0]!r} is not in the collection statistics "
                             "(computed over other documents?)") from None
        return self.df[:, rows].astype(np.float64)

    @classmethod
    def merge(cls, parts: list["CollectionStats"]) -> "CollectionStats":
        """The statistics of the union of disjoint parts (terms in first-seen order)."""
        if not parts:
            raise ValueError("no statistics to merge")
        fields = parts[0].fields
        if any(p.fields != fields for p in parts):
            raise ValueError("statistics of different field layouts cannot be merged")
        where: dict[str, int] = {}
        for p in parts:
            for t in p.terms:
                where.setdefault(t, len(where))
        df = np.zeros((len(fields), len(where)), dtype=np.int64)
        for p in parts:
            if p.terms:
                rows = np.fromiter((where[t] for t in p.terms), dtype=np.int64, count=len(p.terms))
                df[:, rows] += p.df
        return cls(fields, list(where), df, [sum(p.doc_count[f] for p in parts) for f in range(len(fields))],
                   [sum(p.total[f] for p in parts) for f in range(len(fields))],
                   sum(p.num_docs for p in parts))


def query_weights(analyzer: Analyzer, text: str) -> dict[str, float]:
    """A query as Anserini builds it: each analysed term once, boosted by its count."""
    return {t: float(c) for t, c in Counter(analyzer(text)).items()}
