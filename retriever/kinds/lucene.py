"""The ``bm25`` and ``sparse`` index kinds on the Lucene backend (Anserini via pyserini; the
``lucene`` extra).

The index directory is ours (manifest, ``docids.txt`` in corpus order, checksums); the Lucene
index lives in its ``lucene/`` subdirectory and the corpus is converted to an Anserini collection
in a temporary directory that is deleted once Lucene has read it.

bm25: ``flat`` indexes ``title + "\\n" + text`` as ``contents``; ``multifield`` indexes the text as
``contents`` and the title as a ``title`` field, and queries score both with weight 1 (a sum of
per-field BM25). Anserini's default English analyzer (Porter stemmer, Lucene's stopwords).

sparse: documents are encoded exactly as the native sparse kind encodes them (same encoder, same
settings) or read from a JsonVectorCollection (``vectors``), and quantised the same way, to
``round(weight * scale)``; the terms are the model's vocabulary tokens (or the collection's
terms), indexed as they are. Queries are encoded the same way and their weights quantised with
the same scale, so Lucene computes an integer dot product; scores are reported divided by
``scale ** 2``, which approximates the float SPLADE score (the native backend keeps float query
weights and divides by ``scale`` once, so the two differ only by the query rounding).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from indexing.corpus import Doc
from indexing.impacts import QUANTIZE, quantize_weights, warn_clipped
from indexing.lucene import LuceneBM25Searcher, LuceneImpactSearcher, build_index, ensure_lucene, versions
from indexing.manifest import IndexFormatError, IndexWriter
from indexing.results import Hit, Run
from retriever.encoders.splade import SparseVector
from retriever.kinds import Kind, register
from retriever.kinds import bm25 as native_bm25
from retriever.kinds import sparse as native_sparse
from retriever.kinds.sparse import QUERY_WEIGHTS, encode_docs, make_encoder, manifest_entries, query_encoder, query_weight_table

LUCENE_DIR = "lucene"
ANALYZER = {"name": "lucene-default", "stopwords": "lucene", "stemmer": "porter"}
MULTIFIELD = {"contents": 1.0, "title": 1.0}


def _jsonl(path: Path, records: Iterator[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False))
            f.write("\n")


MAX_ID_BYTES = 32766  # Lucene's longest indexed term (the id is one)
MAX_TERM_CHARS = 255  # Anserini's impact analyzer cuts longer tokens in pieces


def _check_docid(docid: str, n: int) -> str:
    """``docid`` (document ``n`` of the corpus, from 1), refused where Lucene cannot give it back
    as it is: longer than its longest term (the build failed with a Java stack trace), or led by
    U+FEFF (dropped on its way back from Java: another id, not in the index)."""
    if len(docid.encode("utf-8")) > MAX_ID_BYTES:
        raise ValueError(f"document {n}: its id is {len(docid.encode('utf-8')):,} bytes; the Lucene backend "
                         f"takes ids of at most {MAX_ID_BYTES:,} (the native backend takes any)")
    if docid.startswith("\ufeff"):
        raise ValueError(f"document {n}: id {docid[:40]!r} begins with U+FEFF, which does not come back "
                         "from Lucene; the native backend takes it")
    return docid


def _check_counts(counts: dict[str, int], num_docs: int) -> None:
    seen = counts["indexed"] + counts["empty"] + counts["skipped"]
    if seen != num_docs:
        raise RuntimeError(f"Lucene read {seen} documents of {num_docs} ({counts})")


# -- bm25 -------------------------------------------------------------------------------------

def write_bm25(docs: Iterator[Doc], writer: IndexWriter, settings: native_bm25.Settings) -> dict:
    """Build a Lucene BM25 index of the documents under ``writer``; returns its manifest entries."""
    if settings.reorder == "bp":  # (auto: the corpus order, as none)
        raise ValueError("--reorder renumbers our own index; the Lucene backend keeps the corpus order")
    if (settings.stopwords, settings.stemmer) != (ANALYZER["stopwords"], ANALYZER["stemmer"]):
        raise ValueError("the Lucene backend analyses with Lucene's English analyzer: stopwords "
                         f"{ANALYZER['stopwords']}, stemmer {ANALYZER['stemmer']}")
    ensure_lucene()  # fail before reading the corpus when the extra is missing
    seen = 0

    def records() -> Iterator[dict]:
        nonlocal seen
        for doc in docs:
            seen += 1
            docid = _check_docid(doc.docid, seen)
            if settings.fields == "flat":
                yield {"id": docid, "contents": f"{doc.title}\n{doc.text}"}
            else:
                yield {"id": docid, "contents": doc.text, "title": doc.title}

    with tempfile.TemporaryDirectory(prefix="collection-", dir=writer.tmp) as tmp:
        _jsonl(Path(tmp) / "docs.jsonl", records())
        counts = build_index(tmp, writer.tmp / LUCENE_DIR, collection="JsonCollection",
                             fields=("title",) if settings.fields == "multifield" else ())
    _check_counts(counts, seen)
    return {"analyzer": dict(ANALYZER), "bm25": asdict(settings.params()), "lucene": {**versions(), **counts}}


def open_bm25(root, manifest: dict, docids: list[str]) -> LuceneBM25Searcher:
    """Search a Lucene BM25 index with the parameters and fields its manifest records."""
    if manifest.get("analyzer", {}).get("name") != ANALYZER["name"]:
        raise IndexFormatError(f"{root}: unknown Lucene analyzer {manifest.get('analyzer')!r}")
    params = manifest["bm25"]
    return LuceneBM25Searcher(Path(root) / LUCENE_DIR, params["k1"], params["b"],
                              MULTIFIELD if params["fields"] == "multifield" else None)


# -- sparse -----------------------------------------------------------------------------------

def _check_term(term: str) -> None:
    if not term or any(c.isspace() for c in term):
        raise ValueError(f"term {term!r} cannot be a Lucene impact term (empty, or contains whitespace)")
    if len(term) > MAX_TERM_CHARS:  # (cut in pieces, it never matched itself: silently)
        raise ValueError(f"term {term[:40]!r}... has {len(term):,} characters; a Lucene impact term has at most "
                         f"{MAX_TERM_CHARS} (the native backend takes any)")


def write_sparse(docs: Iterator[Doc], writer: IndexWriter, settings: native_sparse.Settings) -> dict:
    """Encode (or read) sparse document vectors, quantise them, and build a Lucene impact index.
    ``settings`` come resolved by ``retriever.kinds.sparse.prepare``, as for the native backend."""
    if settings.reorder == "bp":  # (auto: the corpus order, as none)
        raise ValueError("--reorder renumbers our own index; the Lucene backend keeps the corpus order")
    if settings.quantize == "float":
        raise ValueError("the Lucene backend stores integer impacts: quantize uint8 or uint16 (with a scale)")
    ensure_lucene()
    encoder = make_encoder(settings)
    quantize, scale = settings.quantize, settings.scale
    top = np.iinfo(QUANTIZE[quantize]).max
    seen_terms: set[str] = set()
    df = None
    totals = {"docs": 0, "postings": 0, "clipped": 0}

    def weighted() -> Iterator[tuple[Doc, np.ndarray, np.ndarray]]:
        """(doc, terms, float weights) in corpus order."""
        nonlocal df
        if settings.vectors:
            for doc in docs:
                vec = doc.vector
                for term in vec:
                    if term not in seen_terms:
                        _check_term(term)
                        seen_terms.add(term)
                yield doc, np.array(list(vec), dtype=object), np.fromiter(vec.values(), np.float64, len(vec))
            return
        vocab = np.array(encoder.vocab, dtype=object)
        if len(set(encoder.vocab)) != len(vocab):
            raise ValueError(f"model {settings.model}: two token ids share a token string; a Lucene index "
                             "keys terms by string")
        for term in encoder.vocab:
            _check_term(term)
        df = np.zeros(len(vocab), dtype=np.int64)
        for doc, (ids, weights) in encode_docs(docs, encoder):
            kept = ids[quantize_weights(weights, quantize, scale) > 0]
            df[kept] += 1
            yield doc, vocab[ids], weights

    def records() -> Iterator[dict]:
        for doc, terms, weights in weighted():
            totals["docs"] += 1
            _check_docid(doc.docid, totals["docs"])
            q = quantize_weights(weights, quantize, scale)
            totals["clipped"] += int(np.count_nonzero(np.rint(np.asarray(weights, np.float64) * scale) > top))
            keep = q > 0
            totals["postings"] += int(keep.sum())
            yield {"id": doc.docid, "contents": "", "vector": dict(zip(terms[keep].tolist(), q[keep].tolist()))}

    with tempfile.TemporaryDirectory(prefix="collection-", dir=writer.tmp) as tmp:
        _jsonl(Path(tmp) / "vectors.jsonl", records())
        counts = build_index(tmp, writer.tmp / LUCENE_DIR, collection="JsonVectorCollection", impact=True)
    num_docs = totals["docs"]
    _check_counts(counts, num_docs)
    warn_clipped(totals["clipped"], totals["postings"], quantize, scale)
    if settings.query_mode != "model":
        writer.save_array(QUERY_WEIGHTS, query_weight_table(settings, encoder, df, num_docs))
    stats = {"quantize": quantize, "scale": float(scale),
             "terms": len(seen_terms) if settings.vectors else len(encoder.vocab), "postings": totals["postings"],
             "mean_doc_terms": totals["postings"] / max(num_docs, 1), "clipped_weights": totals["clipped"]}
    entries = manifest_entries(settings, encoder, stats)
    entries["lucene"] = {**versions(), **counts}
    return entries


class LuceneSparseSearcher:
    """Text and ``{term: weight}`` queries over a Lucene impact index.

    Query weights are quantised like the documents' (``round(weight * scale)``; terms that round
    to 0 are dropped); scores are the integer dot products divided by ``scale ** 2``.
    """

    def __init__(self, impacts: LuceneImpactSearcher, scale: float,
                 encoder: tuple[Callable[[list[str]], list[SparseVector]], list[str]] | None) -> None:
        self.impacts = impacts
        self.scale = float(scale)
        self._encoder = encoder

    def quantize(self, weights: Mapping[str, float]) -> dict[str, int]:
        out = {}
        for term, w in weights.items():
            if not np.isfinite(np.float32(w)):
                raise ValueError(f"query weight {w!r} of term {term!r} is not a finite float32 number")
            q = int(np.rint(float(w) * self.scale))
            if q > 0:
                out[term] = q
        return out

    def _encode(self, texts: list[str]) -> list[dict[str, int]]:
        if self._encoder is None:
            raise ValueError("this index has no query encoder (built from precomputed vectors "
                             "without --model); search it with search_weights({term: weight})")
        encode, vocab = self._encoder
        return [self.quantize({vocab[i]: w for i, w in zip(ids.tolist(), weights.tolist())})
                for ids, weights in encode(texts)]

    def search(self, text: str, k: int = 10) -> list[Hit]:
        return self.impacts.search(self._encode([text])[0], k)

    def search_weights(self, weights: Mapping[str, float], k: int = 10) -> list[Hit]:
        """Search with an explicit weighted bag of index terms (float weights, quantised here)."""
        return self.impacts.search(self.quantize(weights), k)

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        qids = list(queries)
        encoded = self._encode([queries[q] for q in qids])
        return self.impacts.search_batch(dict(zip(qids, encoded)), k, threads)

    def close(self) -> None:
        self.impacts.close()


def open_sparse(root, manifest: dict, docids: list[str], model: str | None = None) -> LuceneSparseSearcher:
    """Open a Lucene impact index and the query encoder its manifest describes."""
    scale = manifest["impacts"]["scale"]
    encoder = query_encoder(root, manifest, model)
    return LuceneSparseSearcher(LuceneImpactSearcher(Path(root) / LUCENE_DIR, divide_by=scale * scale),
                                scale, encoder)


register(Kind("bm25", "lucene", native_bm25.Settings, write_bm25, open_bm25,
              schema=(("analyzer", "dict"), ("analyzer.name", "str"), ("bm25", "dict"), ("bm25.k1", "number"),
                      ("bm25.b", "number"), ("bm25.fields", "str")),
              help="BM25 in Lucene through pyserini (pip extra 'lucene')"))
register(Kind("sparse", "lucene", native_sparse.Settings, write_sparse, open_sparse,
              schema=native_sparse.SCHEMA[:1] + (("impacts.scale", "number"),) + native_sparse.SCHEMA[2:],
              read=native_sparse.read, prepare=native_sparse.prepare,
              help="learned sparse impacts in Lucene through pyserini (pip extra 'lucene')"))
