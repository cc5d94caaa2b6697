"""A native in-process impact index: for each term, the documents that contain it and a weight.

BM25 and SPLADE indexes are both impact indexes: the score of a document for a query is
``sum(query_weight[t] * impact[t, d])`` over the query's terms. Postings are stored in CSR
layout by term (``offsets``, ``postings_docs``, ``postings_impacts``) as ``.npy`` files that are
memory-mapped on load. Impacts are float32, or integers (uint8/uint16) with a ``scale`` such
that ``impact ~= value / scale``. Search is exact: every posting of every query term is scored
(compiled kernel in ``indexing.kernels``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from indexing import kernels
from indexing.manifest import IndexWriter, load_array

TERMS = "terms.json"
OFFSETS = "offsets.npy"
POSTINGS_DOCS = "postings_docs.npy"
POSTINGS_IMPACTS = "postings_impacts.npy"


class InvertedIndex:
    def __init__(self, terms: list[str], offsets: np.ndarray, docs: np.ndarray,
                 impacts: np.ndarray, num_docs: int, scale: float | None = None) -> None:
        self.terms = terms
        self.term_ids = {t: i for i, t in enumerate(terms)}
        self.offsets = offsets
        self.docs = docs
        self.impacts = impacts
        self.num_docs = num_docs
        self.scale = scale
        self._local = threading.local()

    @classmethod
    def from_postings(cls, terms: list[str], term_ids: np.ndarray, doc_ids: np.ndarray,
                      impacts: np.ndarray, num_docs: int, scale: float | None = None) -> "InvertedIndex":
        """Build in memory from unordered (term, doc, impact) triples; repeated pairs are summed."""
        key = term_ids.astype(np.int64) * num_docs + doc_ids.astype(np.int64)
        order = np.argsort(key, kind="stable")
        key, impacts = key[order], impacts[order]
        starts = np.flatnonzero(np.diff(key, prepend=-1))
        if len(starts) != len(key):
            impacts = np.add.reduceat(impacts.astype(np.float64), starts).astype(impacts.dtype)
            key = key[starts]
        keep = impacts > 0
        key, impacts = key[keep], impacts[keep]
        t = key // num_docs
        d = (key % num_docs).astype(np.int32)
        offsets = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(t, minlength=len(terms)), out=offsets[1:])
        return cls(terms, offsets, d, impacts, num_docs, scale)

    def save(self, writer: IndexWriter) -> None:
        """Write terms and offsets (and the postings, unless already written into ``writer``)."""
        writer.write_json(TERMS, self.terms)
        writer.save_array(OFFSETS, self.offsets)
        if not isinstance(self.docs, np.memmap) or Path(self.docs.filename).parent != writer.tmp:
            writer.save_array(POSTINGS_DOCS, self.docs)
            writer.save_array(POSTINGS_IMPACTS, self.impacts)

    @classmethod
    def load(cls, root: str | Path, num_docs: int, scale: float | None = None,
             mmap: bool = True) -> "InvertedIndex":
        root = Path(root)
        terms = json.loads((root / TERMS).read_text(encoding="utf-8"))
        return cls(terms, load_array(root, OFFSETS, mmap), load_array(root, POSTINGS_DOCS, mmap),
                   load_array(root, POSTINGS_IMPACTS, mmap), num_docs, scale)

    @property
    def num_postings(self) -> int:
        return int(self.offsets[-1])

    def encode(self, query: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and float32 weights of the query terms this index knows (weights > 0)."""
        ids, weights = [], []
        for term, w in query.items():
            tid = self.term_ids.get(term)
            if tid is not None and w > 0:
                ids.append(tid)
                weights.append(w)
        return np.array(ids, dtype=np.int32), np.array(weights, dtype=np.float32)

    def _scratch(self):
        local = self._local
        if getattr(local, "acc", None) is None:
            local.acc = np.zeros(self.num_docs, dtype=np.float32)
            local.touched = np.empty(self.num_docs, dtype=np.int32)
            local.keys = np.empty(self.num_docs, dtype=np.uint64)
        return local

    def top_k(self, query: dict[str, float], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids and scores of the k best matching documents.

        Order is score descending, then internal id ascending (Lucene's tie order). Documents
        that match no query term are never returned, so fewer than k may come back.
        """
        return self.top_k_ids(*self.encode(query), k)

    def top_k_ids(self, terms: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``top_k`` for a query given as term ids and weights (weights <= 0 are ignored)."""
        terms = np.asarray(terms, dtype=np.int32)
        weights = np.asarray(weights, dtype=np.float32)
        if len(weights) and not (weights > 0).all():
            terms, weights = terms[weights > 0], weights[weights > 0]
        s = self._scratch()
        n = kernels.accumulate(self.offsets, self.docs, self.impacts, terms, weights,
                               s.acc, s.touched, s.keys)
        ids, scores = kernels.top_keys(s.keys[:n], min(k, n))
        if self.scale:
            scores = scores / np.float32(self.scale)
        return ids, scores

    def scores(self, query: dict[str, float]) -> np.ndarray:
        """Dense float32 score of every document (for tests and re-ranking; not the search path)."""
        acc = np.zeros(self.num_docs, dtype=np.float32)
        terms, weights = self.encode(query)
        for t, w in zip(terms.tolist(), weights.tolist()):
            s, e = self.offsets[t], self.offsets[t + 1]
            acc[self.docs[s:e]] += np.float32(w) * self.impacts[s:e].astype(np.float32)
        return acc / np.float32(self.scale) if self.scale else acc
