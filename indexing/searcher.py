"""The one search protocol every index kind offers: ``search`` and ``search_batch``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping, NamedTuple, Protocol

from indexing.inverted import InvertedIndex

Run = dict[str, dict[str, float]]


class Hit(NamedTuple):
    docid: str
    score: float


class Searcher(Protocol):
    def search(self, text: str, k: int = 10) -> list[Hit]: ...

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run: ...


def batch_with_threads(search: Callable[[str, int], list[Hit]], queries: Mapping[str, str],
                       k: int, threads: int) -> Run:
    """Run ``search`` over many queries, in a thread pool when ``threads > 1``."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    qids = list(queries)

    def one(qid: str) -> dict[str, float]:
        return {h.docid: h.score for h in search(queries[qid], k)}

    if threads == 1:
        return {qid: one(qid) for qid in qids}
    with ThreadPoolExecutor(threads) as pool:
        return dict(zip(qids, pool.map(one, qids)))


class ImpactSearcher:
    """Exact search over an impact index with a query encoder (text -> weighted terms)."""

    def __init__(self, index: InvertedIndex, docids: list[str],
                 encode_query: Callable[[str], dict[str, float]]) -> None:
        self.index = index
        self.docids = docids
        self.encode_query = encode_query

    def search(self, text: str, k: int = 10) -> list[Hit]:
        ids, scores = self.index.top_k(self.encode_query(text), k)
        docids = self.docids
        return [Hit(docids[i], float(s)) for i, s in zip(ids.tolist(), scores.tolist())]

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        return batch_with_threads(self.search, queries, k, threads)
