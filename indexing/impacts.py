"""Impact indexes from precomputed sparse vectors: quantisation and streaming construction."""

from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np

from indexing.inverted import POSTINGS_DOCS, POSTINGS_IMPACTS, InvertedIndex
from indexing.manifest import IndexWriter
from indexing.postings import PostingsBuilder

QUANTIZE = {"float": np.float32, "uint8": np.uint8, "uint16": np.uint16}
log = logging.getLogger("retriever")


def check_quantization(quantize: str, scale: float) -> None:
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}")
    if quantize != "float" and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                or not math.isfinite(scale) or not scale > 0):
        raise ValueError(f"a quantised index needs a positive finite scale, got {scale!r}")


def quantize_weights(weights: np.ndarray, quantize: str, scale: float) -> np.ndarray:
    """float32 as is; integers as round(weight * scale), clipped to the type's range."""
    if quantize == "float":
        return np.asarray(weights, dtype=np.float32)
    top = np.iinfo(QUANTIZE[quantize]).max
    return np.clip(np.rint(np.asarray(weights, dtype=np.float64) * scale), 0, top).astype(QUANTIZE[quantize])


def warn_clipped(clipped: int, postings: int, quantize: str, scale: float) -> None:
    """Say how many weights a quantised build stored as the type's largest value: they rank as
    equals, whatever they were (the count is also ``clipped_weights`` in the manifest)."""
    if clipped:
        top = np.iinfo(QUANTIZE[quantize]).max
        log.warning("%s of %s stored weights were above %g (%s holds %d / scale %g) and were stored as %d: "
                    "they now rank as equals; rebuild with a smaller --scale or --quantize float",
                    f"{clipped:,}", f"{postings:,}", top / scale, quantize, top, scale, top)


def build_impact_index(vectors: Iterable[tuple[np.ndarray, np.ndarray]], writer: IndexWriter,
                       terms, quantize: str = "uint16", scale: float = 100.0,
                       chunk_postings: int = 10_000_000) -> tuple[InvertedIndex, dict]:
    """Stream (term ids, weights) per document into a quantised impact index in ``writer``.

    ``terms`` is the vocabulary (list), or a callable returning it once the stream is consumed
    (for vocabularies discovered while reading). Zero weights are dropped.
    """
    check_quantization(quantize, scale)
    builder = PostingsBuilder(columns=1, dtype=QUANTIZE[quantize], chunk_postings=chunk_postings,
                              tmp_dir=writer.tmp)
    num_docs = nnz = clipped = 0
    top = None if quantize == "float" else np.iinfo(QUANTIZE[quantize]).max
    for i, (ids, weights) in enumerate(vectors):
        q = quantize_weights(weights, quantize, scale)
        if top is not None:
            clipped += int(np.count_nonzero(np.rint(np.asarray(weights, np.float64) * scale) > top))
        keep = q > 0
        builder.add(i, np.asarray(ids)[keep], q[keep])
        nnz += int(keep.sum())
        num_docs = i + 1
    warn_clipped(clipped, nnz, quantize, scale)  # (a float index clips nothing: says nothing)
    vocab = terms() if callable(terms) else terms
    offsets, docs, values = builder.finish(len(vocab), writer.tmp, POSTINGS_DOCS, POSTINGS_IMPACTS)
    index = InvertedIndex(list(vocab), offsets, docs, values, num_docs,
                          None if quantize == "float" else float(scale))
    stats = {"quantize": quantize, "scale": None if quantize == "float" else float(scale),
             "terms": len(vocab), "postings": int(offsets[-1]),
             "mean_doc_terms": nnz / max(num_docs, 1), "clipped_weights": clipped}
    return index, stats
