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

from indexing.io import NPY_HEADER_LOCK, load_npy, save_npy


def by_term(terms: np.ndarray, then: np.ndarray | None = None) -> np.ndarray:
    """The order of postings by term, then by ``then`` (distinct within a term: doc ids), or,
    without it, stably (docs stay ascending within a term): an argsort of ``term << 32 | then``
    (or ``| position``), keys that are all distinct, which numpy sorts ~4x faster than a stable
    sort of the terms alone and ~15x faster than a two-key lexsort (20M postings: 0.26 s against
    1.2 s and 4.0 s). ``terms`` and ``then`` must be below 2**32."""
    n = len(terms)
    if then is None and n >= 1 << 32:  # (positions would not fit the low half)
        return np.argsort(terms, kind="stable")
    key = terms.astype(np.uint64) << np.uint64(32)
    key |= np.arange(n, dtype=np.uint64) if then is None else then.astype(np.uint64)
    return np.argsort(key)


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
        order = by_term(terms)
        i = len(self._chunks)
        save_npy(self._dir / f"t{i}.npy", terms[order])
        save_npy(self._dir / f"d{i}.npy", np.concatenate(self._docs)[order])
        save_npy(self._dir / f"v{i}.npy", np.concatenate(self._values)[order])
        self._chunks.append((self._dir, len(order)))
        self.total += len(order)
        self._reset()

    def finish(self, num_terms: int, out_dir: Path, docs_name: str, values_name: str,
               range_postings: int = 20_000_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Write docs and values CSR arrays into ``out_dir``; returns (offsets, docs, values).

        Terms are laid out a range at a time: each chunk contributes the (contiguous) slice of
        its postings for the range, scattered into a bounded buffer in term-major order, which is
        appended to the output files. Nothing is memory-mapped while writing, so resident memory
        is the buffer and one chunk's per-term starts, however large the index. The returned
        arrays are read-only memory maps of the written files.
        """
        self._spill()
        chunk_starts = []  # per chunk: where each term's postings begin inside the chunk
        for i in range(len(self._chunks)):
            c = np.bincount(load_npy(self._dir / f"t{i}.npy"), minlength=num_terms)
            starts = np.zeros(num_terms + 1, dtype=np.int64)
            np.cumsum(c, out=starts[1:])
            chunk_starts.append(starts)
        counts = sum((st[1:] - st[:-1] for st in chunk_starts), np.zeros(num_terms, dtype=np.int64))
        offsets = np.zeros(num_terms + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        docs_out = NpyAppender(out_dir / docs_name, np.int32, (total,))
        shape = (total,) if self.columns == 1 else (total, self.columns)
        values_out = NpyAppender(out_dir / values_name, self.dtype, shape)
        t0 = 0
        while t0 < num_terms:
            # the largest term range whose postings fit the buffer (at least one term)
            t1 = int(np.searchsorted(offsets, offsets[t0] + range_postings, side="right")) - 1
            t1 = min(max(t1, t0 + 1), num_terms)
            base = offsets[t0]
            buf_docs = np.empty(int(offsets[t1] - base), dtype=np.int32)
            buf_vals = np.empty((len(buf_docs), self.columns), dtype=self.dtype)
            written = offsets[t0:t1] - base  # next free slot of each term in the buffer
            for i, starts in enumerate(chunk_starts):
                a, b = int(starts[t0]), int(starts[t1])
                if a == b:
                    continue
                t = read_rows(self._dir / f"t{i}.npy", a, b)
                local = t - t0
                dest = written[local] + (np.arange(a, b, dtype=np.int64) - starts[t])
                buf_docs[dest] = read_rows(self._dir / f"d{i}.npy", a, b)
                buf_vals[dest] = read_rows(self._dir / f"v{i}.npy", a, b)
                written += np.bincount(local, minlength=t1 - t0)
            docs_out.append(buf_docs)
            values_out.append(buf_vals[:, 0] if self.columns == 1 else buf_vals)
            del buf_docs, buf_vals
            t0 = t1
        docs_out.close()
        values_out.close()
        self.close()
        return offsets, load_npy(out_dir / docs_name, "r"), load_npy(out_dir / values_name, "r")

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self) -> None:
        self.close()


class NpyAppender:
    """Write a .npy file of known shape by appending rows, without memory-mapping it."""

    def __init__(self, path: Path, dtype, shape: tuple) -> None:
        self._f = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                  "shape": shape}
        np.lib.format.write_array_header_1_0(self._f, header)
        self._dtype = np.dtype(dtype)

    def append(self, rows: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(rows, dtype=self._dtype).tobytes())

    def close(self) -> None:
        self._f.close()


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a .npy file, read with a seek (no memory map stays behind)."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        with NPY_HEADER_LOCK:
            shape, _, dtype = read_header(f)
        row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        f.seek(f.tell() + start * row * dtype.itemsize)
        out = np.fromfile(f, dtype=dtype, count=(stop - start) * row)
    return out.reshape((stop - start, *shape[1:])) if len(shape) > 1 else out
