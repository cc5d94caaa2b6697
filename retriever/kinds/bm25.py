"""The ``bm25`` index kind (native backend): Lucene-equal BM25 impacts in our inverted index."""

from __future__ import annotations

from indexing.analysis import Analyzer
from indexing.bm25 import BM25Params, Fields, build_bm25_index, query_weights
from indexing.corpus import iter_corpus
from indexing.inverted import InvertedIndex
from indexing.manifest import IndexWriter
from indexing.searcher import ImpactSearcher


def write_index(corpus, writer: IndexWriter, *, fields: Fields = "flat",
                k1: float = 0.9, b: float = 0.4, stopwords: str = "lucene",
                stemmer: str = "porter", on_doc=None) -> dict:
    """Build a BM25 index into ``writer``; returns the manifest entries it needs to be searched."""
    analyzer = Analyzer(stopwords=stopwords, stemmer=stemmer)
    params = BM25Params(k1=k1, b=b, fields=fields)
    index, docids, info = build_bm25_index(iter_corpus(corpus), analyzer, params, writer.tmp, on_doc)
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
    """Search a BM25 index; queries are analysed with the analyzer its manifest records."""
    analyzer = Analyzer.from_config(manifest["analyzer"])
    index = InvertedIndex.load(root, num_docs=len(docids))
    return ImpactSearcher(index, docids, lambda texts: [query_weights(analyzer, t) for t in texts])
