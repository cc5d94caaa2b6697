"""The one search protocol every index kind offers: ``search`` and ``search_batch``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping, Protocol

import numpy as np

from indexing.inverted import InvertedIndex
from indexing.results import Hit, Run


def check_k(k, num_docs: int | None = None, what: str = "k") -> int:
    """The one rule for k and depth everywhere: an integer >= 1, clamped to the collection size
    (so nothing is ever allocated for more hits than there are documents)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"{what} must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"{what} must be >= 1, got {k}")
    return int(k) if num_docs is None else int(min(k, max(num_docs, 1)))


def check_queries(queries) -> None:
    """A batch is a mapping of query ids to query texts, all strings."""
    if not isinstance(queries, Mapping):
        raise ValueError(f"queries must be a mapping {{qid: text}}, got {type(queries).__name__}")
    for qid, text in queries.items():
        if not isinstance(qid, str) or not isinstance(text, str):
            raise ValueError(f"query ids and texts must be strings, got {qid!r}: {text!r}")


class Searcher(Protocol):
    def search(self, text: str, k: int = 10) -> list[Hit]: ...

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run: ...


def batch_with_threads(search: Callable[[str, int], dict[str, float]], queries: Mapping[str, str],
                       k: int, threads: int) -> Run:
    """Run ``search`` (text, k -> {docid: score}) over many queries, in threads if ``threads > 1``."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    qids = list(queries)

    def one(qid: str) -> dict[str, float]:
        return search(queries[qid], k)

    if threads == 1:
        return {qid: one(qid) for qid in qids}
    with ThreadPoolExecutor(threads) as pool:
        return dict(zip(qids, pool.map(one, qids)))


Query = dict[str, float] | tuple[np.ndarray, np.ndarray]


class ImpactSearcher:
    """Exact search over an impact index.

    ``encode_queries`` turns a list of texts into queries, each either ``{term: weight}`` or
    ``(term ids, weights)`` already in the index's term-id space; batches are encoded at once.
    """

    def __init__(self, index: InvertedIndex, docids: list[str],
                 encode_queries: Callable[[list[str]], list[Query]] | None) -> None:
        self.index = index
        self.docids = docids
        self._docids = np.array(docids, dtype=object)
        self.encode_queries = encode_queries

    def _encode(self, texts: list[str]) -> list[Query]:
        if self.encode_queries is None:
            raise ValueError("this index has no query encoder (built from precomputed vectors "
                             "without --model); search it with search_weights({term: weight})")
        return self.encode_queries(texts)

    def _top(self, query: Query, k: int) -> tuple[list[str], list[float]]:
        if isinstance(query, tuple):
            ids, scores = self.index.top_k_ids(query[0], query[1], k)
        else:
            ids, scores = self.index.top_k(query, k)
        return self._docids[ids].tolist(), scores.tolist()

    def search(self, text: str, k: int = 10) -> list[Hit]:
        return [Hit(d, s) for d, s in zip(*self._top(self._encode([text])[0], k))]

    def search_weights(self, weights: dict[str, float], k: int = 10) -> list[Hit]:
        """Search with an explicit weighted bag of index terms."""
        return [Hit(d, s) for d, s in zip(*self._top(weights, k))]

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        qids = list(queries)
        encoded = dict(zip(qids, self._encode([queries[q] for q in qids])))
        return batch_with_threads(lambda qid, k: dict(zip(*self._top(encoded[qid], k))),
                                  {q: q for q in qids}, k, threads)
