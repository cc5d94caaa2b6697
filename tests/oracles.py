"""Exact references the fast structures are checked against (plain numpy, no kernel)."""

from __future__ import annotations

import numpy as np


def dense_scores(index, query: dict[str, float]) -> np.ndarray:
    """float32 score of every document of an InvertedIndex for ``{term: weight}``, by numpy."""
    acc = np.zeros(index.num_docs, dtype=np.float32)
    terms, weights = index.encode(query)
    for t, w in zip(terms.tolist(), weights.tolist()):
        s, e = index.offsets[t], index.offsets[t + 1]
        acc[index.docs[s:e]] += np.float32(w) * index.impacts[s:e].astype(np.float32)
    return acc / np.float32(index.scale) if index.scale else acc


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """Ids of the k best positive scores: score descending, then id ascending (Lucene's order)."""
    hits = np.flatnonzero(scores > 0)
    return sorted(hits.tolist(), key=lambda i: (-scores[i], i))[:k]
