"""A native in-process impact index: for each term, the documents that contain it and a weight.

BM25 and SPLADE indexes are both impact indexes: the score of a document for a query is
``sum(query_weight[t] * impact[t, d])`` over the query's terms. Postings are stored in CSR
layout by term (``offsets``, ``postings_docs``, ``postings_impacts``) as ``.npy`` files that are
memory-mapped on load. Search is exact: every posting of every query term is scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from indexing.manifest import IndexWriter, load_array

TERMS = "terms.json"
OFFSETS = "offsets.npy"
POSTINGS_DOCS = "postings_docs.npy"
POSTINGS_IMPACTS = "postings_impacts.npy"


class InvertedIndex:
    def __init__(self, terms: list[str], offsets: np.ndarray, docs: np.ndarray,
                 impacts: np.ndarray, num_docs: int) -> None:
        self.terms = terms
        self.term_ids = {t: i for i, t in enumerate(terms)}
        self.offsets = offsets
        self.docs = docs
        self.impacts = impacts
        self.num_docs = num_docs

    @classmethod
    def from_postings(cls, terms: list[str], term_ids: np.ndarray, doc_ids: np.ndarray,
                      impacts: np.ndarray, num_docs: int) -> "InvertedIndex":
        """Build from unordered (term, doc, impact) triples; repeated pairs are summed."""
        key = term_ids.astype(np.int64) * num_docs + doc_ids.astype(np.int64)
        order = np.argsort(key, kind="stable")
        key, impacts = key[order], impacts[order]
        starts = np.flatnonzero(np.diff(key, prepend=-1))
        if len(starts) != len(key):
            impacts = np.add.reduceat(impacts.astype(np.float64), starts)
            key = key[starts]
        t = key // num_docs
        d = (key % num_docs).astype(np.int32)
        offsets = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(t, minlength=len(terms)), out=offsets[1:])
        return cls(terms, offsets, d, impacts.astype(np.float32, copy=False), num_docs)

    def save(self, writer: IndexWriter) -> None:
        writer.write_json(TERMS, self.terms)
        writer.save_array(OFFSETS, self.offsets)
        writer.save_array(POSTINGS_DOCS, self.docs)
        writer.save_array(POSTINGS_IMPACTS, self.impacts)

    @classmethod
    def load(cls, root: str | Path, num_docs: int, mmap: bool = True) -> "InvertedIndex":
        root = Path(root)
        terms = json.loads((root / TERMS).read_text(encoding="utf-8"))
        return cls(terms, load_array(root, OFFSETS, mmap), load_array(root, POSTINGS_DOCS, mmap),
                   load_array(root, POSTINGS_IMPACTS, mmap), num_docs)

    @property
    def num_postings(self) -> int:
        return int(self.offsets[-1])

    def scores(self, query: dict[str, float]) -> np.ndarray:
        """Dense float32 score per document for a weighted bag of query terms."""
        acc = np.zeros(self.num_docs, dtype=np.float32)
        for term, weight in query.items():
            tid = self.term_ids.get(term)
            if tid is None or weight == 0:
                continue
            s, e = self.offsets[tid], self.offsets[tid + 1]
            acc[self.docs[s:e]] += np.float32(weight) * self.impacts[s:e]
        return acc

    def top_k(self, query: dict[str, float], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids and scores of the k best matching documents.

        Order is score descending, then internal id ascending (Lucene's tie order). Documents
        that match no query term are never returned, so fewer than k may come back.
        """
        return top_k_dense(self.scores(query), k)


def top_k_dense(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of positive scores with ties broken by ascending index, even at the cutoff."""
    cand = np.flatnonzero(scores > 0)
    if k <= 0 or len(cand) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    vals = scores[cand]
    if len(cand) > k:
        kth = -np.partition(-vals, k - 1)[k - 1]
        above = vals > kth
        at = np.flatnonzero(vals == kth)[: k - int(above.sum())]
        keep = np.concatenate([np.flatnonzero(above), at])
        cand, vals = cand[keep], vals[keep]
    order = np.lexsort((cand, -vals))
    return cand[order], vals[order]
