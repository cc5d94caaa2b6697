"""The BM25 query encoder: a query as Anserini builds it, each analysed term once, weighted by
its count (the documents' side, BM25 impacts, is computed at index time)."""

from __future__ import annotations

from typing import Sequence

from indexing.analysis import Analyzer
from indexing.bm25 import query_weights


class BM25QueryEncoder:
    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer

    def encode_queries(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [query_weights(self.analyzer, t) for t in texts]

    def config(self) -> dict:
        return {"analyzer": self.analyzer.config()}
