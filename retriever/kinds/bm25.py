"""The ``bm25`` index kind (native backend): Lucene-equal BM25 impacts in our inverted index."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from indexing.analysis import Analyzer, tables_note, unicode_tables
from indexing.bm25 import Analysed, BM25Params, CollectionStats, build_bm25_index, weigh
from indexing.corpus import Doc
from indexing.inverted import InvertedIndex
from indexing.manifest import IndexFormatError, IndexWriter, read_docid_order
from indexing.searcher import ImpactSearcher
from retriever.encoders.bm25 import BM25QueryEncoder
from retriever.kinds import REORDER_HELP, Kind, check_settings, option, register, reorder


@dataclass(frozen=True)
class Settings:
    fields: Literal["flat", "multifield"] = option(
        "flat", "title + text in one field (flat), or title and text scored as separate fields")
    k1: float = option(0.9, "BM25 k1 (Anserini's default)", min=0)
    b: float = option(0.4, "BM25 b (Anserini's default)", min=0, max=1)
    stopwords: Literal["lucene", "none"] = option("lucene", "Lucene's 33 English stop words, or none")
    stemmer: Literal["porter", "none"] = option("porter", "Porter stemming (Lucene's), or none")
    reorder: Literal["auto", "none", "bp"] = option("auto", REORDER_HELP)

    def __post_init__(self) -> None:
        check_settings(self)

    def params(self) -> BM25Params:
        return BM25Params(k1=self.k1, b=self.b, fields=self.fields)

    def analyzer(self) -> Analyzer:
        return Analyzer(stopwords=self.stopwords, stemmer=self.stemmer)


def write(docs: Iterator[Doc], writer: IndexWriter, settings: Settings,
          collection: CollectionStats | None = None, analysed: Path | None = None) -> dict:
    """Analyse the documents into BM25 impacts; returns the manifest entries searching needs.
    ``collection``: statistics of the whole collection when these documents are one shard of it;
    ``analysed``: where these documents were already analysed (``indexing.bm25.Analysed``; the
    documents are then read for their ids, which must be the analysed ones, and not analysed)."""
    analyzer = settings.analyzer()
    if analysed is None:
        index, _, info = build_bm25_index(docs, analyzer, settings.params(), writer.tmp, collection=collection)
    else:
        state = Analysed.load(analysed)
        n = 0
        for n, doc in enumerate(docs, 1):
            if n > len(state.docids) or doc.docid != state.docids[n - 1]:
                raise ValueError(f"{analysed}: document {n} ({doc.docid!r}) is not the one analysed there "
                                 "(the corpus changed since?)")
        if n != len(state.docids):
            raise ValueError(f"{analysed}: {len(state.docids)} documents analysed, {n} read")
        index, _, info = weigh(state, settings.params(), writer.tmp, collection, keep=True)
    index, entries = reorder(index, writer, settings.reorder)
    layout = index.save(writer)
    return {**entries, "analyzer": analyzer.config(), "unicode_tables": unicode_tables(), **info,
            "postings": {"terms": len(index.terms), "postings": index.num_postings, "impacts": "float32", **layout}}


_noted: set[str] = set()


def query_encoder(root, manifest: dict) -> BM25QueryEncoder:
    """Queries analysed as the index's documents were: with the analyzer (and analysis version)
    its manifest records; one it cannot build is an IndexFormatError naming the manifest."""
    try:
        encoder = BM25QueryEncoder(Analyzer.from_config(manifest["analyzer"]))
    except (ValueError, TypeError) as e:
        raise IndexFormatError(f"{Path(root) / 'manifest.json'}: analyzer: {e}") from None
    note = tables_note(manifest.get("unicode_tables"))
    if note is not None and note not in _noted:
        _noted.add(note)  # once a process, not once a shard
        logging.getLogger("retriever").warning("%s: %s", root, note)
    return encoder


def open_index(root, manifest: dict, docids: list[str], strategy: str = "pruned",
               approx: float = 1.0, heads_depth: int | None = None, candidates: int | None = None,
               verify: bool = True) -> ImpactSearcher:
    """Search a BM25 index; queries are analysed with the analyzer its manifest records.
    ``strategy``: pruned (exact, default), exhaustive, approx (with factor ``approx``), or heads
    (``heads_depth``, ``candidates``; ``indexing.heads``). ``verify``: the heads' files are
    checked against their checksums when first opened, as the index's were."""
    index = InvertedIndex.load(root, num_docs=len(docids), layout=InvertedIndex.layout_of(manifest))
    index.verify_heads = verify
    index.set_tie_order(read_docid_order(root, docids))
    return ImpactSearcher(index, docids, query_encoder(root, manifest).encode_queries, strategy, approx, heads_depth, candidates)


KIND = register(Kind(
    "bm25", "native", Settings, write, open_index,
    schema=(("analyzer", "dict"), ("analyzer.stopwords", "str"), ("analyzer.stemmer", "str"),
            ("analyzer.lowercase", "bool"), ("analyzer.possessive", "bool"), ("bm25", "dict"),
            ("bm25.k1", "number"), ("bm25.b", "number"), ("bm25.fields", "str")),
    help="BM25 over our own inverted index (scores equal Lucene's)"))
