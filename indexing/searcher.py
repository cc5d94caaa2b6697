"""The one search protocol every index kind offers: ``search`` and ``search_batch``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping, Protocol

import numpy as np

from indexing.cpus import usable_cpus
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


def check_threads(threads) -> int:
    """The one rule for threads: an integer >= 1 (ValueError otherwise)."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    return int(threads)


def check_text(text, what: str = "a query") -> str:
    """A query text (or id) is a str that is valid Unicode: a lone surrogate (``"\\ud800"``,
    which JSON can carry) cannot be tokenised by a model's tokenizer nor written to a run file."""
    if not isinstance(text, str):
        raise ValueError(f"{what} is a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid Unicode text (a lone surrogate {text[e.start]!r} at "
                         f"character {e.start})") from None
    return text


def check_queries(queries) -> None:
    """A batch is a mapping of query ids to query texts, all strings of valid Unicode."""
    if not isinstance(queries, Mapping):
        raise ValueError(f"queries must be a mapping {{qid: text}}, got {type(queries).__name__}")
    for qid, text in queries.items():
        if not isinstance(qid, str) or not isinstance(text, str):
            raise ValueError(f"query ids and texts must be strings, got {qid!r}: {text!r}")
        check_text(qid, "a query id")
        check_text(text, f"query {qid!r}")


class Searcher(Protocol):
    def search(self, text: str, k: int = 10) -> list[Hit]: ...

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run: ...


def batch_with_threads(search: Callable[[str, int], dict[str, float]], queries: Mapping[str, str],
                       k: int, threads: int) -> Run:
    """Run ``search`` (text, k -> {docid: score}) over many queries, in threads if ``threads > 1``
    (at most the CPUs this process may use: ``indexing.cpus``)."""
    threads = min(check_threads(threads), usable_cpus())
    qids = list(queries)

    def one(qid: str) -> dict[str, float]:
        return search(queries[qid], k)

    if threads == 1:
        return {qid: one(qid) for qid in qids}
    with ThreadPoolExecutor(threads) as pool:
        return dict(zip(qids, pool.map(one, qids)))


Query = dict[str, float] | tuple[np.ndarray, np.ndarray]


class ImpactSearcher:
    """Search over an impact index (``strategy``: pruned, exact by default; ``exhaustive``;
    ``approx`` with its factor; ``heads`` with ``heads_depth`` and ``candidates``; see
    ``indexing.inverted``).

    ``encode_queries`` turns a list of texts into queries, each either ``{term: weight}`` or
    ``(term ids, weights)`` already in the index's term-id space; batches are encoded at once and
    searched by the compiled kernel in ``threads`` threads, results turned into dicts at the end.
    """

    def __init__(self, index: InvertedIndex, docids: list[str],
                 encode_queries: Callable[[list[str]], list[Query]] | None,
                 strategy: str = "pruned", approx: float = 1.0, heads_depth: int | None = None,
                 candidates: int | None = None) -> None:
        self.index = index
        self.docids = docids
        self._docids = np.array(docids, dtype=object)
        self.encode_queries = encode_queries
        self.strategy, self.approx = strategy, approx
        self.heads = {"heads_depth": heads_depth, "candidates": candidates}
        index.search_many([], 1, strategy, approx, **self.heads)  # checks the strategy and its knobs now

    def _encode(self, texts: list[str]) -> list[Query]:
        if self.encode_queries is None:
            raise ValueError("this index has no query encoder (built from precomputed vectors "
                             "without --model); search it with search_weights({term: weight})")
        return self.encode_queries(texts)

    def _ids(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        return self.index.encode(query) if isinstance(query, dict) else self.index._checked(*query)

    def _search(self, queries: list[Query], k: int, threads: int = 1,
                raw: bool = False) -> list[tuple[list[str], list[float]]]:
        found = self.index.search_many([self._ids(q) for q in queries], k, self.strategy, self.approx,
                                       threads=threads, checked=True, raw=raw, **self.heads)
        return [(self._docids[ids].tolist(), scores.tolist()) for ids, scores in found]

    def search_raw(self, queries: list[Query], k: int) -> list[tuple[list[str], list[float]]]:
        """(doc ids, scores before the division by the quantisation scale ``index.scale``) per
        query: the order the kernel gives, for merging the results of several indexes."""
        return self._search(queries, k, raw=True)

    def search(self, text: str, k: int = 10) -> list[Hit]:
        return [Hit(d, s) for d, s in zip(*self._search(self._encode([text]), k)[0])]

    def search_weights(self, weights: dict[str, float], k: int = 10) -> list[Hit]:
        """Search with an explicit weighted bag of index terms."""
        return [Hit(d, s) for d, s in zip(*self._search([weights], k)[0])]

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        threads = check_threads(threads)
        qids = list(queries)
        found = self._search(self._encode([queries[q] for q in qids]), k, threads)
        return {q: dict(zip(*hits)) for q, hits in zip(qids, found)}
