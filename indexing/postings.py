"""Building CSR postings from a stream of documents in bounded memory.

Documents arrive in order as (term ids, value columns). Every ``chunk_postings`` postings the
buffered chunk is sorted by term and spilled to disk; ``finish`` lays all chunks into one CSR
(per term, documents ascending) written straight into memory-mapped ``.npy`` files. Peak memory
is one chunk plus the per-term counters, whatever the corpus size.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np


class PostingsBuilder:
    def __init__(self, columns: int = 1, dtype=np.int32, chunk_postings: int = 10_000_000,
                 tmp_dir: str | Path | None = None) -> None:
        self.columns = columns
        self.dtype = np.dtype(dtype)
        self.chunk_postings = chunk_postings
        self._dir = Path(tempfile.mkdtemp(prefix="postings-", dir=tmp_dir))
        self._chunks: list[tuple[Path, int]] = []
        self._reset()
        self.num_docs = 0
        self.total = 0

    def _reset(self) -> None:
        self._terms: list[np.ndarray] = []
        self._docs: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._buffered = 0

    def add(self, doc: int, term_ids: np.ndarray, values: np.ndarray) -> None:
        """Postings of one document; ``values`` has shape (n,) or (n, columns). Docs in order."""
        n = len(term_ids)
        self.num_docs = max(self.num_docs, doc + 1)
        if n == 0:
            return
        self._terms.append(np.asarray(term_ids, dtype=np.int32))
        self._docs.append(np.full(n, doc, dtype=np.int32))
        self._values.append(np.asarray(values, dtype=self.dtype).reshape(n, self.columns))
        self._buffered += n
        if self._buffered >= self.chunk_postings:
            self._spill()

    def _spill(self) -> None:
        if not self._buffered:
            return
        terms = np.concatenate(self._terms)
        order = np.argsort(terms, kind="stable")  # stable: docs stay ascending within a term
        i = len(self._chunks)
        np.save(self._dir / f"t{i}.npy", terms[order])
        np.save(self._dir / f"d{i}.npy", np.concatenate(self._docs)[order])
        np.save(self._dir / f"v{i}.npy", np.concatenate(self._values)[order])
        self._chunks.append((self._dir, len(order)))
        self.total += len(order)
        self._reset()

    def finish(self, num_terms: int, out_dir: Path, docs_name: str, values_name: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Write docs and values CSR arrays into ``out_dir``; returns (offsets, docs, values)."""
        self._spill()
        counts = np.zeros(num_terms, dtype=np.int64)
        for i in range(len(self._chunks)):
            counts += np.bincount(np.load(self._dir / f"t{i}.npy"), minlength=num_terms)
        offsets = np.zeros(num_terms + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        shape = (total,) if self.columns == 1 else (total, self.columns)
        docs = np.lib.format.open_memmap(out_dir / docs_name, mode="w+", dtype=np.int32, shape=(total,))
        values = np.lib.format.open_memmap(out_dir / values_name, mode="w+", dtype=self.dtype, shape=shape)
        written = offsets[:-1].copy()
        for i in range(len(self._chunks)):
            t = np.load(self._dir / f"t{i}.npy")
            chunk_counts = np.bincount(t, minlength=num_terms)
            chunk_starts = np.concatenate([[0], np.cumsum(chunk_counts)[:-1]])
            dest = written[t] + (np.arange(len(t), dtype=np.int64) - chunk_starts[t])
            docs[dest] = np.load(self._dir / f"d{i}.npy")
            v = np.load(self._dir / f"v{i}.npy")
            values[dest] = v[:, 0] if self.columns == 1 else v
            written += chunk_counts
            del t, dest, v
        docs.flush()
        values.flush()
        self.close()
        return offsets, docs, values

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self) -> None:
        self.close()
