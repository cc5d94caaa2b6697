"""A native in-process impact index: for each term, the documents that contain it and a weight.

BM25 and SPLADE indexes are both impact indexes: the score of a document for a query is
``sum(query_weight[t] * impact[t, d])`` over the query's terms. Postings are stored in CSR
layout by term (``offsets``, ``postings_docs``, ``postings_impacts``) as ``.npy`` files that are
memory-mapped on load. Impacts are float32, or integers (uint8/uint16) with a ``scale`` such
that ``impact ~= value / scale``. Search is exact: every posting of every query term is scored
(compiled kernel in ``indexing.kernels``).

Opening an index checks its arrays' shapes, types and offsets (cheap: one pass over the
vocabulary); :meth:`InvertedIndex.verify` also scans every posting (doc ids in range and
ascending within each term, impacts finite and non-negative). The kernel bounds-checks doc ids
as it reads them, so even a corrupt index that skipped ``verify`` cannot make it write outside
its buffers: the query fails with :class:`IndexFormatError` instead.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from indexing import kernels
from indexing.manifest import IndexFormatError, IndexWriter, load_array

TERMS = "terms.json"
OFFSETS = "offsets.npy"
POSTINGS_DOCS = "postings_docs.npy"
POSTINGS_IMPACTS = "postings_impacts.npy"


def _finite_float32(weights) -> np.ndarray:
    """Weights as float32, refused (ValueError) unless each is a number finite in float32."""
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("query weights must be numbers") from None
    with np.errstate(over="ignore", invalid="ignore"):
        w32 = w.astype(np.float32)
    if not np.isfinite(w32).all():
        bad = np.flatnonzero(~np.isfinite(w32))[0]
        raise ValueError(f"query weight {w[bad]!r} is not a finite float32 number")
    return w32


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
        self.set_tie_order(None)

    def set_tie_order(self, order: np.ndarray | None) -> None:
        """How equal scores are ordered: ``order`` lists internal ids from first to last (the ids
        sorted by their external doc id string, :func:`indexing.manifest.read_docid_order`);
        None: by internal id."""
        if order is None:
            self.tie_order = np.arange(self.num_docs, dtype=np.int32)
            self.tie_rank = self.tie_order
            return
        order = np.asarray(order, dtype=np.int32)
        rank = np.empty(self.num_docs, dtype=np.int32)
        rank[order] = np.arange(self.num_docs, dtype=np.int32)
        self.tie_order, self.tie_rank = order, rank

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
        try:
            terms = json.loads((root / TERMS).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexFormatError(f"{root / TERMS}: not a JSON list of terms ({e})") from None
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise IndexFormatError(f"{root / TERMS}: expected a JSON list of strings")
        index = cls(terms, load_array(root, OFFSETS, mmap), load_array(root, POSTINGS_DOCS, mmap),
                    load_array(root, POSTINGS_IMPACTS, mmap), num_docs, scale)
        index.check(root)
        return index

    def check(self, where: str | Path = "index") -> None:
        """Cheap structural checks (O(vocabulary)): shapes, dtypes, offsets from 0, non-decreasing,
        ending at the number of postings. Raises IndexFormatError naming ``where``."""
        def bad(msg: str) -> IndexFormatError:
            return IndexFormatError(f"{where}: corrupt postings: {msg}")

        off, docs, imp = self.offsets, self.docs, self.impacts
        if not isinstance(self.num_docs, int) or self.num_docs < 0:
            raise bad(f"document count {self.num_docs!r}")
        if off.ndim != 1 or off.dtype.kind not in "iu" or len(off) != len(self.terms) + 1:
            raise bad(f"{OFFSETS} must be {len(self.terms) + 1} integers (terms + 1), "
                      f"got shape {off.shape} {off.dtype}")
        if docs.ndim != 1 or docs.dtype != np.int32:
            raise bad(f"{POSTINGS_DOCS} must be int32 of one dimension, got shape {docs.shape} {docs.dtype}")
        if imp.ndim != 1 or imp.dtype not in (np.float32, np.uint8, np.uint16):
            raise bad(f"{POSTINGS_IMPACTS} must be float32, uint8 or uint16 of one dimension, "
                      f"got shape {imp.shape} {imp.dtype}")
        if len(imp) != len(docs):
            raise bad(f"{len(docs)} doc ids but {len(imp)} impacts")
        if int(off[0]) != 0 or int(off[-1]) != len(docs):
            raise bad(f"offsets run from {int(off[0])} to {int(off[-1])}, expected 0 to {len(docs)}")
        if len(off) > 1 and not (np.diff(off) >= 0).all():
            raise bad("offsets decrease")
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise bad(f"impact scale {self.scale!r} must be a positive finite number")

    def verify(self, where: str | Path = "index", step: int = 1 << 24) -> None:
        """Full scan (O(postings)): every doc id in [0, num_docs) and strictly ascending within
        its term, every impact finite and non-negative. Raises IndexFormatError."""
        self.check(where)
        starts = np.zeros(len(self.docs), dtype=bool)
        starts[self.offsets[:-1][np.diff(self.offsets) > 0]] = True  # first posting of each term
        for p0 in range(0, len(self.docs), step):
            p1 = min(len(self.docs), p0 + step)
            d = np.asarray(self.docs[p0:p1])
            if len(d) and (d.min() < 0 or d.max() >= self.num_docs):
                raise IndexFormatError(f"{where}: corrupt postings: doc ids outside [0, {self.num_docs}) "
                                       f"among postings {p0}..{p1 - 1}")
            prev = np.asarray(self.docs[p0 - 1:p1 - 1]) if p0 else np.concatenate([[-1], d[:-1]])
            if not ((d > prev) | starts[p0:p1]).all():
                raise IndexFormatError(f"{where}: corrupt postings: doc ids not ascending within a "
                                       f"term among postings {p0}..{p1 - 1}")
            v = np.asarray(self.impacts[p0:p1])
            if v.dtype.kind == "f" and not (np.isfinite(v) & (v >= 0)).all():
                raise IndexFormatError(f"{where}: corrupt postings: impacts negative or not finite "
                                       f"among postings {p0}..{p1 - 1}")

    @property
    def num_postings(self) -> int:
        return int(self.offsets[-1])

    def encode(self, query: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and float32 weights of the query terms this index knows.

        The one rule for query weights: every weight must be a number finite in float32 (else
        ValueError, whether or not the index knows its term); weights <= 0 are ignored (a term
        cannot lower a score), as are unknown terms.
        """
        w = _finite_float32(list(query.values()))
        ids = np.fromiter((self.term_ids.get(t, -1) for t in query), dtype=np.int32, count=len(query))
        keep = (ids >= 0) & (w > 0)
        return ids[keep], w[keep]

    def _checked(self, terms, weights) -> tuple[np.ndarray, np.ndarray]:
        """(term ids, weights) validated: ids in range, weights finite; weights <= 0 dropped."""
        terms = np.asarray(terms)
        w = _finite_float32(weights)
        if terms.ndim != 1 or w.ndim != 1 or len(terms) != len(w):
            raise ValueError(f"term ids and weights must be two 1-D arrays of one length, "
                             f"got shapes {terms.shape} and {w.shape}")
        if len(terms) and (terms.dtype.kind not in "iu" or terms.min() < 0 or terms.max() >= len(self.terms)):
            raise ValueError(f"query term ids must be integers in [0, {len(self.terms)})")
        keep = w > 0
        return terms[keep].astype(np.int32), w[keep]

    def _scratch(self):
        local = self._local
        if getattr(local, "acc", None) is None:
            local.acc = np.zeros(self.num_docs, dtype=np.float32)
            local.seen = np.zeros(self.num_docs, dtype=np.uint8)
            local.touched = np.empty(self.num_docs, dtype=np.int32)
            local.keys = np.empty(self.num_docs, dtype=np.uint64)
        return local

    def top_k(self, query: dict[str, float], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids and scores of the k best matching documents.

        Order is score descending, then the tie order (:meth:`set_tie_order`: the external doc
        id ascending in a loaded index, the internal id by default). Documents that match no
        query term are never returned, so fewer than k may come back.
        """
        return self._top(*self.encode(query), k)

    def top_k_ids(self, terms: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``top_k`` for a query given as term ids and weights (same weight rule as ``encode``)."""
        return self._top(*self._checked(terms, weights), k)

    def _top(self, terms: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The kernel call: ``terms`` int32 in range, ``weights`` float32 finite and > 0."""
        s = self._scratch()
        n = kernels.accumulate(self.offsets, self.docs, self.impacts, terms, weights, self.tie_rank,
                               s.acc, s.seen, s.touched, s.keys)
        if n < 0:
            raise IndexFormatError("corrupt postings: a doc id outside the collection "
                                   "(run `retriever info INDEX --verify`)")
        ranks, scores = kernels.top_keys(s.keys[:n], min(k, n))
        ids = self.tie_order[ranks]
        if self.scale:
            scores = scores / np.float32(self.scale)
        return ids, scores
