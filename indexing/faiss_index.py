"""Dense-vector index over FAISS: vectors in, row ids out (no model code).

Every index uses inner product (``faiss.METRIC_INNER_PRODUCT``); normalise the vectors first for
cosine. Row ``i`` of the vectors given to :meth:`DenseIndex.build` gets id ``i``; a missing result
(fewer hits than ``k``) is id ``-1`` with score ``-inf``; searchers drop those.

Accepted specs (faiss factory strings, validated by :func:`resolve_spec`)::

    Flat                        exact search
    IVF{nlist},Flat             inverted lists of raw vectors
    IVF{nlist},PQ{m}[x{bits}]   inverted lists of product-quantised codes (default 8 bits)
    OPQ{m},IVF{nlist},PQ{m}[x{bits}]  the same after a learned rotation
    HNSW{M}[,Flat]              graph over raw vectors
    auto                        chosen from corpus size and dimension (see resolve_spec)

faiss is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from indexing.cpus import usable_cpus
from indexing.io import load_npy, save_npy, saving

log = logging.getLogger("retriever")

INDEX_FILE = "faiss.index"
REFINE_FILE = "vectors_f16.npy"
ACCEPTED_SPECS = ("Flat, IVF{nlist},Flat, IVF{nlist},PQ{m}[x{bits}], OPQ{m},IVF{nlist},PQ{m}[x{bits}], "
                  "HNSW{M}[,Flat], auto")

DEFAULT_NPROBE = 32          # lists scanned per query, capped at nlist
DEFAULT_EF_SEARCH = 128      # HNSW candidate list; raised to the number of results asked for
DEFAULT_REFINE_FACTOR = 16   # refine re-scores refine_factor * k candidates (4 left IVF-PQ at 0.89 recall@10 on 1M)
AUTO_FLAT_MAX = 100_000      # auto: exact search up to this many vectors
AUTO_GRAPH_MAX = 1_000_000   # auto: HNSW (IVF-Flat on GPU) up to this many, OPQ + IVF-PQ above
AUTO_HNSW_M = 32
ADD_CHUNK = 65_536           # vectors converted and added per faiss call
GPU_MAX_K = 2048             # faiss GPU k-selection limit (results and nprobe per query)
# Code sizes (bytes per vector, 8-bit codes) that faiss's GPU IVF-PQ implements.
GPU_PQ_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
_RERANK_BLOCK = 1 << 24      # floats materialised at once while re-scoring candidates


def _faiss():
    import faiss

    return faiss


# -- specs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Spec:
    kind: str                 # flat | ivf_flat | ivf_pq | hnsw
    nlist: int = 0
    m: int = 0                # PQ sub-quantizers (= bytes per code at 8 bits)
    bits: int = 8
    opq: bool = False
    hnsw_m: int = 0

    @property
    def factory(self) -> str:
        if self.kind == "flat":
            return "Flat"
        if self.kind == "hnsw":
            return f"HNSW{self.hnsw_m}"
        if self.kind == "ivf_flat":
            return f"IVF{self.nlist},Flat"
        pq = f"PQ{self.m}" + ("" if self.bits == 8 else f"x{self.bits}")
        return (f"OPQ{self.m}," if self.opq else "") + f"IVF{self.nlist},{pq}"

    @property
    def is_ivf(self) -> bool:
        return self.kind in ("ivf_flat", "ivf_pq")

    def min_train(self) -> int:
        """Fewest training vectors faiss accepts: one per IVF centroid and per PQ centroid."""
        need = self.nlist if self.is_ivf else 0
        return max(need, 2 ** self.bits) if self.kind == "ivf_pq" else need

    def default_train_size(self) -> int:
        """40 points per IVF centroid (faiss asks for 39), 256 per PQ centroid (faiss's cap)."""
        if not self.is_ivf:
            return 0
        size = 40 * self.nlist
        return max(size, 256 * 2 ** self.bits) if self.kind == "ivf_pq" else size


_FLAT = re.compile(r"Flat")
_IVF_FLAT = re.compile(r"IVF(\d+),Flat")
_IVF_PQ = re.compile(r"(?:OPQ(\d+),)?IVF(\d+),PQ(\d+)(?:x(\d+))?")
_HNSW = re.compile(r"HNSW(\d+)(?:,Flat)?")


def _bad(spec: str, problem: str) -> ValueError:
    return ValueError(f"dense index spec {spec!r}: {problem}. Accepted forms: {ACCEPTED_SPECS}")


def _divisors(dim: int) -> list[int]:
    return [d for d in range(1, dim + 1) if dim % d == 0]


def _parse(spec: str, n: int | None, dim: int) -> _Spec:
    """Parse and validate an explicit spec; ``n=None`` skips the corpus-size checks."""
    text = spec.replace(" ", "")
    if _FLAT.fullmatch(text):
        return _Spec("flat")
    if match := _HNSW.fullmatch(text):
        hnsw_m = int(match[1])
        if not 2 <= hnsw_m <= 256:
            raise _bad(spec, f"HNSW M must be between 2 and 256, got {hnsw_m}")
        return _Spec("hnsw", hnsw_m=hnsw_m)
    if match := _IVF_FLAT.fullmatch(text):
        parsed = _Spec("ivf_flat", nlist=int(match[1]))
    elif match := _IVF_PQ.fullmatch(text):
        opq_m, nlist, m, bits = match.groups()
        parsed = _Spec("ivf_pq", nlist=int(nlist), m=int(m), bits=int(bits or 8), opq=opq_m is not None)
        if parsed.m < 1 or dim % parsed.m:
            raise _bad(spec, f"PQ m = {parsed.m} must divide the dimension {dim} "
                             f"(divisors: {', '.join(map(str, _divisors(dim)))})")
        if opq_m is not None and int(opq_m) != parsed.m:
            raise _bad(spec, f"OPQ{opq_m} and PQ{parsed.m} must use the same m")
        if not 1 <= parsed.bits <= 16:
            raise _bad(spec, f"PQ bits must be between 1 and 16, got {parsed.bits}")
        if n is not None and n < 2 ** parsed.bits:
            raise _bad(spec, f"PQ with {parsed.bits} bits trains {2 ** parsed.bits} centroids per "
                             f"sub-quantizer and needs at least that many vectors, got {n}")
    else:
        raise _bad(spec, "unknown form")
    if parsed.nlist < 1 or (n is not None and parsed.nlist > n):
        raise _bad(spec, f"IVF nlist = {parsed.nlist} must be between 1 and the number of "
                         f"vectors ({n})")
    return parsed


def _resolve(spec: str, n: int, dim: int, gpu: bool) -> _Spec:
    if n < 0 or dim < 1:
        raise ValueError(f"need n >= 0 and dim >= 1, got n={n}, dim={dim}")
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string, not {type(spec).__name__}")
    return _auto(n, dim, gpu) if spec.strip() == "auto" else _parse(spec, n, dim)


def _auto(n: int, dim: int, gpu: bool) -> _Spec:
    if n <= AUTO_FLAT_MAX:
        return _Spec("flat")
    nlist = max(1, min(n, round(4 * math.sqrt(n))))
    if n <= AUTO_GRAPH_MAX:
        return _Spec("ivf_flat", nlist=nlist) if gpu else _Spec("hnsw", hnsw_m=AUTO_HNSW_M)
    allowed = [m for m in _divisors(dim) if m <= max(1, dim // 4) and (not gpu or m in GPU_PQ_BYTES)]
    return _Spec("ivf_pq", nlist=nlist, m=max(allowed, default=1), bits=8, opq=True)


def resolve_spec(spec: str, n: int, dim: int, *, gpu: bool = False) -> str:
    """Validate ``spec`` for ``n`` vectors of dimension ``dim``; return the faiss factory string.

    Explicit specs must be one of :data:`ACCEPTED_SPECS`: PQ ``m`` must divide ``dim`` (and
    OPQ's ``m`` equal PQ's), IVF ``nlist`` must be at most ``n``, and a PQ with ``b`` bits needs
    at least ``2**b`` vectors to train. Anything else is a ValueError naming the problem.
    ``HNSW{M},Flat`` resolves to ``HNSW{M}`` and ``PQ{m}x8`` to ``PQ{m}`` (same faiss index).

    ``auto`` picks by corpus size:

    * ``n <= 100,000``: ``Flat``. Exact, nothing to train; 4*dim bytes/vector (300 MB for 100k
      768-d vectors) and a full scan costs a few ms per query at that size.
    * ``n <= 1,000,000``: ``HNSW32``: recall@10 around 0.95+ at efSearch 128 with no training,
      for ~4*dim + 260 bytes/vector. With ``gpu=True``, ``IVF{nlist},Flat`` instead, since
      faiss has no GPU HNSW.
    * above: ``OPQ{m},IVF{nlist},PQ{m}``. ``nlist = round(4*sqrt(n))``, the low end of faiss's
      4-16*sqrt(n) guideline, which keeps k-means training (40*nlist points) affordable.
      ``m`` is the largest divisor of ``dim`` that is at most ``dim/4``: sub-vectors of 4+
      dimensions, ``m`` bytes of code per vector (+8 for the id), i.e. about dim/4 bytes, within
      the dim/2 budget and 16x smaller than float32 (768-d: 192 bytes). On GPU ``m`` is also
      limited to the code sizes faiss's GPU IVF-PQ implements (768-d: 96).
    """
    return _resolve(spec, n, dim, gpu).factory


def check_spec(spec: str, dim: int) -> None:
    """Check the form of ``spec`` and its fit to vectors of dimension ``dim`` (PQ ``m`` divides
    ``dim``) before any vector exists, e.g. before a corpus is encoded at a truncated dimension;
    the corpus-size checks wait for :func:`resolve_spec`. ``auto`` always fits."""
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string, not {type(spec).__name__}")
    if spec.strip() != "auto":
        _parse(spec, None, dim)


# -- devices and threads ---------------------------------------------------------------------

def _gpu_ids(device: str) -> tuple[list[int], str | None]:
    """GPU ordinals to use for ``device`` (empty for CPU) and why a requested GPU is not used."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device == "cpu":
        return [], None
    if device != "auto" and match is None:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', not {device!r}")
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources"):
        return [], (None if device == "auto" else
                    "this faiss build has no GPU support (faiss-cpu); install a faiss GPU build, "
                    "e.g. faiss-gpu-cu12, in its place")
    count = faiss.get_num_gpus()
    if count == 0:
        return [], None if device == "auto" else "faiss sees no GPU"
    if device in ("auto", "cuda"):
        return list(range(count)), None
    ordinal = int(match[1])
    if ordinal >= count:
        raise ValueError(f"device {device!r} requested but faiss sees only {count} GPU(s)")
    return [ordinal], None


def _fallback(device: str, reason: str) -> None:
    """The one line saying why a GPU is not used: a warning when asked for, info for auto."""
    level = logging.INFO if device == "auto" else logging.WARNING
    log.log(level, "dense index: device %r requested but %s; using CPU", device, reason)


@contextmanager
def _omp_threads(threads: int | None) -> Iterator[None]:
    """Run faiss with ``threads`` OpenMP threads (at most the usable CPUs: more only oversubscribe
    them) for the duration; no change when None."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(min(int(threads), usable_cpus()))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# -- results ---------------------------------------------------------------------------------

def _tidy(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Missing results get score -inf; rows holding equal scores are ordered by lower id."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    scores[ids < 0] = -np.inf
    if scores.shape[1] > 1:
        tied = np.flatnonzero((scores[:, 1:] == scores[:, :-1]).any(axis=1))
        if tied.size:
            key = np.where(ids[tied] < 0, np.iinfo(np.int64).max, ids[tied])
            order = np.lexsort((key, -scores[tied]), axis=-1)
            ids[tied] = np.take_along_axis(ids[tied], order, axis=1)
            scores[tied] = np.take_along_axis(scores[tied], order, axis=1)
    return ids, scores


def _top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each row by (score descending, id ascending); missing ids last."""
    key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key, -scores), axis=-1)[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


# -- the index -------------------------------------------------------------------------------

class DenseIndex:
    """A faiss index over ``ntotal`` vectors plus its search defaults.

    Make one with :meth:`build` or :meth:`load`. ``refine`` keeps a float16 copy of the vectors
    (2*dim bytes/vector) and re-scores ``refine_factor * k`` candidates exactly against it.
    """

    def __init__(self, index, *, spec: str, parsed: _Spec, dim: int, nprobe: int | None,
                 ef_search: int | None, refine_vectors: np.ndarray | None, refine_factor: int,
                 gpus: list[int], device: str, train_size: int = 0, seed: int = 0,
                 mmapped: bool = False, source: Path | None = None):
        self.index = index
        self.spec = spec
        self._parsed = parsed
        self.dim = dim
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.refine_vectors = refine_vectors
        self.refine_factor = refine_factor
        self.gpus = gpus
        self.device = device
        self.train_size = train_size
        self.seed = seed
        self.mmapped = mmapped
        self._source = source

    @property
    def factory(self) -> str:
        return self._parsed.factory

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def refine(self) -> bool:
        return self.refine_vectors is not None

    def __repr__(self) -> str:
        return (f"DenseIndex({self.factory!r}, dim={self.dim}, ntotal={self.ntotal}, "
                f"device={self.device!r}, refine={self.refine})")

    # -- build ---------------------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, spec: str = "auto", *, nprobe: int | None = None,
              ef_search: int | None = None, refine: bool = False,
              refine_factor: int = DEFAULT_REFINE_FACTOR, train_size: int | None = None,
              device: str = "cpu", seed: int = 0, threads: int | None = None,
              chunk_size: int = ADD_CHUNK, trained=None) -> DenseIndex:
        """Index ``vectors`` (n, dim); row i gets id i.

        Trains (IVF, PQ, OPQ) on ``train_size`` rows drawn with ``seed`` (default: 40 per IVF
        list, at least 256 per PQ centroid, at most n), then adds all rows ``chunk_size`` at a
        time, converting each chunk to float32, so a memory-mapped array is never copied whole.
        Defaults: ``nprobe = min(nlist, 32)``, ``ef_search = 128``; both can be overridden per
        search, and each is ignored (stored as None) by specs without it.

        ``device`` is cpu, cuda (all visible GPUs; IVF lists and flat vectors sharded across
        them), cuda:N or auto. A GPU that cannot be used (CPU-only faiss, none visible, HNSW, or
        a PQ that faiss's GPU code lacks) means CPU, with one line on the "retriever" logger
        saying why (WARNING; INFO for auto). ``threads`` sets faiss's OpenMP threads for this
        call only; without it the global setting is left alone.

        ``trained``: a trained empty index of the same spec (:func:`train_empty`, e.g. shared by
        the shards of one collection); a copy of it is filled and nothing is trained.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
            raise ValueError(f"vectors must be a 2-d float array (n, dim), got {vectors.dtype} "
                             f"{vectors.shape}")
        n, dim = vectors.shape
        if dim < 1:
            raise ValueError("vectors have dimension 0")
        refine_factor = _positive("refine_factor", refine_factor)
        chunk_size = _positive("chunk_size", chunk_size)
        gpus, reason = _gpu_ids(device)
        # with a trained index, a part of a collection may hold fewer vectors than lists
        parsed = _resolve(spec, n, dim, bool(gpus)) if trained is None else _parse(spec, None, dim)
        if gpus and parsed.kind == "hnsw":
            gpus, reason = [], "faiss has no GPU HNSW"
        nprobe, ef_search = cls._defaults(parsed, nprobe, ef_search)
        if trained is not None:
            if not parsed.is_ivf or trained.d != dim or not trained.is_trained or trained.ntotal != 0 \
                    or _faiss().extract_index_ivf(trained).nlist != parsed.nlist:
                raise ValueError(f"the trained index given is not a trained empty {parsed.factory} "
                                 f"of dimension {dim}")
            size = 0  # nothing to train here
        elif parsed.is_ivf:
            size = min(n, parsed.default_train_size()) if train_size is None else min(
                n, _positive("train_size", train_size))
            if size < parsed.min_train():
                raise ValueError(f"{parsed.factory} needs at least {parsed.min_train()} training "
                                 f"vectors, train_size gives {size}")
        else:
            size = 0

        with _omp_threads(threads):
            index = _new_index(parsed, dim) if trained is None else _faiss().clone_index(trained)
            if gpus:
                try:
                    index = cls._build_gpu(index, vectors, parsed, size, seed, gpus, chunk_size)
                except RuntimeError as error:
                    gpus, reason = [], f"faiss's GPU code cannot run {parsed.factory} ({error})"
                    index = _new_index(parsed, dim) if trained is None else _faiss().clone_index(trained)
            if not gpus:
                if size:
                    index.train(_sample(vectors, size, seed))
                for start in range(0, n, chunk_size):
                    index.add(np.ascontiguousarray(vectors[start:start + chunk_size], np.float32))
            cls._set_defaults(index, parsed, nprobe, ef_search, on_gpu=bool(gpus))
        if reason:
            _fallback(device, reason)
        refine_vectors = None
        if refine:
            refine_vectors = np.empty((n, dim), dtype=np.float16)
            for start in range(0, n, chunk_size):
                refine_vectors[start:start + chunk_size] = vectors[start:start + chunk_size]
        return cls(index, spec=spec, parsed=parsed, dim=dim, nprobe=nprobe, ef_search=ef_search,
                   refine_vectors=refine_vectors, refine_factor=refine_factor, gpus=gpus,
                   device=_device_name(gpus, device),
                   train_size=size if trained is None else int(train_size or 0), seed=seed)

    @staticmethod
    def _defaults(parsed: _Spec, nprobe, ef_search) -> tuple[int | None, int | None]:
        if parsed.is_ivf:
            nprobe = min(parsed.nlist, DEFAULT_NPROBE if nprobe is None else _positive("nprobe", nprobe))
        else:
            nprobe = None
        if parsed.kind == "hnsw":
            ef_search = DEFAULT_EF_SEARCH if ef_search is None else _positive("ef_search", ef_search)
        else:
            ef_search = None
        return nprobe, ef_search

    @staticmethod
    def _set_defaults(index, parsed: _Spec, nprobe, ef_search, on_gpu: bool) -> None:
        """Store the defaults in the faiss object too, so faiss.index alone searches the same."""
        faiss = _faiss()
        if parsed.is_ivf and not on_gpu:
            faiss.extract_index_ivf(index).nprobe = nprobe
        if parsed.kind == "hnsw":
            faiss.downcast_index(index).hnsw.efSearch = ef_search

    @staticmethod
    def _build_gpu(index, vectors, parsed: _Spec, size: int, seed: int, gpus: list[int],
                   chunk_size: int):
        """Train on the first GPU, then add through a copy sharded over ``gpus``.

        Raises RuntimeError (from faiss) when the GPU code does not implement the index.
        """
        faiss = _faiss()
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        options.useFloat16 = parsed.kind == "ivf_pq"   # fp16 lookup tables: needed for m > 48
        if size:
            trainer = faiss.index_cpu_to_gpus_list(index, co=options, gpus=gpus[:1])
            trainer.train(_sample(vectors, size, seed))
            index = faiss.index_gpu_to_cpu(trainer)
            del trainer
        n = vectors.shape[0]
        if parsed.kind == "flat":
            # sharded flat indexes take one add() only: fill on CPU, then copy over
            for start in range(0, n, chunk_size):
                index.add(np.ascontiguousarray(vectors[start:start + chunk_size], np.float32))
            return faiss.index_cpu_to_gpus_list(index, co=options, gpus=gpus)
        sharded = faiss.index_cpu_to_gpus_list(index, co=options, gpus=gpus)
        for start in range(0, n, chunk_size):
            sharded.add(np.ascontiguousarray(vectors[start:start + chunk_size], np.float32))
        return sharded

    # -- search --------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               ef_search: int | None = None, threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ids (int64) and inner-product scores (float32) per query row, best first.

        ``nprobe`` / ``ef_search`` override the defaults for this call only (passed to faiss as
        search parameters, nothing on the index changes); each is ignored by index kinds that do
        not have it. HNSW searches with ``max(ef_search, candidates)``, since faiss 1.15 returns
        fewer than k results when efSearch < k. ``k`` is clamped to ``ntotal`` before anything
        is allocated, so rows have ``min(k, ntotal)`` columns; a row an IVF probe could not fill
        ends in id -1 / score -inf. Equal scores are ordered by lower id.
        """
        k = min(_positive("k", k), self.ntotal)
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (q, {self.dim}), got {queries.shape}")
        q = queries.shape[0]
        ids = np.full((q, k), -1, dtype=np.int64)
        scores = np.full((q, k), -np.inf, dtype=np.float32)
        if q == 0 or self.ntotal == 0:
            return ids, scores
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        kk = min(k, self.ntotal)
        wanted = min(self.ntotal, self.refine_factor * kk) if self.refine else kk
        if self.gpus:
            if kk > GPU_MAX_K:
                raise ValueError(f"faiss GPU search returns at most {GPU_MAX_K} results per query, "
                                 f"asked for {kk}")
            wanted = min(wanted, GPU_MAX_K)
        with _omp_threads(threads):
            if self.refine and wanted == self.ntotal:
                found_ids, found = self._exact(queries, kk)      # small index: score everything
            else:
                params = self._params(nprobe, ef_search, wanted)
                found, found_ids = self.index.search(queries, wanted, params=params)
                if found_ids.size and int(found_ids.max()) >= self.ntotal:  # (a damaged index's ids)
                    from indexing.manifest import IndexFormatError

                    raise IndexFormatError(f"{self._source or 'dense index'}: FAISS returned id "
                                           f"{int(found_ids.max())} of {self.ntotal} vectors; the index "
                                           "is corrupt (run `retriever info INDEX --verify`)")
                if self.refine:
                    found_ids, found = self._rerank(queries, found_ids, kk)
        found_ids, found = _tidy(found_ids, found)
        ids[:, :kk] = found_ids[:, :kk]
        scores[:, :kk] = found[:, :kk]
        return ids, scores

    def _params(self, nprobe, ef_search, wanted: int):
        faiss = _faiss()
        parsed = self._parsed
        if parsed.is_ivf:
            probe = self.nprobe if nprobe is None else _positive("nprobe", nprobe)
            limit = min(parsed.nlist, GPU_MAX_K) if self.gpus else parsed.nlist
            return faiss.SearchParametersIVF(nprobe=min(probe, limit))
        if parsed.kind == "hnsw":
            ef = self.ef_search if ef_search is None else _positive("ef_search", ef_search)
            return faiss.SearchParametersHNSW(efSearch=max(ef, wanted))
        return None

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """Exact float32 inner products of the candidates (from the float16 copy); best ``k``."""
        q, width = candidates.shape
        scores = np.empty((q, width), dtype=np.float32)
        step = max(1, _RERANK_BLOCK // max(1, width * self.dim))
        for start in range(0, q, step):
            block = candidates[start:start + step]
            rows = self.refine_vectors[np.maximum(block, 0)].astype(np.float32)
            scores[start:start + step] = np.matmul(rows, queries[start:start + step, :, None])[:, :, 0]
        scores[candidates < 0] = -np.inf
        return _top_k(candidates, scores, k)

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the float16 copy (used when the candidate pool would be everything)."""
        vectors = np.asarray(self.refine_vectors, dtype=np.float32)
        every = np.arange(self.ntotal, dtype=np.int64)
        ids = np.empty((queries.shape[0], k), dtype=np.int64)
        scores = np.empty((queries.shape[0], k), dtype=np.float32)
        step = max(1, _RERANK_BLOCK // self.ntotal)
        for start in range(0, queries.shape[0], step):
            block = queries[start:start + step] @ vectors.T
            ids[start:start + step], scores[start:start + step] = _top_k(
                np.broadcast_to(every, block.shape), block, k)
        return ids, scores

    # -- persistence ---------------------------------------------------------------------------

    def save(self, directory: Path) -> dict:
        """Write ``faiss.index`` (and ``vectors_f16.npy`` when refining) into ``directory``.

        Returns the settings for the manifest; :meth:`load` takes them back. ``bytes_per_vector``
        is the size of faiss.index over ntotal (the float16 copy adds ``refine_bytes_per_vector``).
        Save into a fresh directory: overwriting the files a loaded index maps is refused.
        """
        faiss = _faiss()
        directory = Path(directory)
        if self._source is not None and directory.resolve() == self._source:
            raise ValueError(f"{directory} holds the files this index was loaded from (and may "
                             "map); save into a new directory")
        directory.mkdir(parents=True, exist_ok=True)
        cpu_index = faiss.index_gpu_to_cpu(self.index) if self.gpus else self.index
        if self.gpus:
            self._set_defaults(cpu_index, self._parsed, self.nprobe, self.ef_search, on_gpu=False)
        path = directory / INDEX_FILE
        write_faiss(cpu_index, path)
        if self.refine:
            save_npy(directory / REFINE_FILE, np.asarray(self.refine_vectors))
        ntotal = self.ntotal
        return {
            "spec": self.spec,
            "factory": self.factory,
            "metric": "inner_product",
            "dim": self.dim,
            "ntotal": ntotal,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "refine": self.refine,
            "refine_factor": self.refine_factor,
            "train_size": self.train_size,
            "seed": self.seed,
            "bytes_per_vector": round(path.stat().st_size / ntotal, 2) if ntotal else None,
            "refine_bytes_per_vector": 2 * self.dim if self.refine else 0,
        }

    @classmethod
    def load(cls, directory: Path, settings: dict, device: str = "cpu",
             mmap: bool = True) -> DenseIndex:
        """Open an index written by :meth:`save`, checking it against ``settings``.

        With ``mmap`` (and a CPU device) faiss.index is read with ``IO_FLAG_MMAP_IFC``: in
        faiss 1.15 every accepted spec (Flat, IVF-Flat, IVF-PQ, OPQ+IVF-PQ, HNSW) maps its
        vector/code storage from the file instead of copying it (HNSW still reads its graph
        into memory; the older ``IO_FLAG_MMAP`` maps only IVF lists). If faiss refuses, it
        falls back to a normal read (``mmapped`` says which happened). The float16 copy is
        mapped with ``np.load(mmap_mode="r")``. Mapped files must not be rewritten in place.
        """
        faiss = _faiss()
        directory = Path(directory)
        for key in ("factory", "dim", "ntotal", "refine"):
            if key not in settings:
                raise ValueError(f"dense index settings lack {key!r}")
        dim, ntotal = int(settings["dim"]), int(settings["ntotal"])
        parsed = _parse(settings["factory"], None, dim)
        path = directory / INDEX_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {INDEX_FILE} in {directory}")
        gpus, reason = _gpu_ids(device)
        if gpus and parsed.kind == "hnsw":
            gpus, reason = [], "faiss has no GPU HNSW"
        mmapped = False
        index = None
        if mmap and not gpus:
            flag = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP)
            try:
                index = faiss.read_index(str(path), flag)
                mmapped = True
            except RuntimeError as error:
                log.debug("faiss cannot mmap %s (%s); reading it", path, error)
        if index is None:
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as error:  # faiss's C++ reader refuses a damaged file
                from indexing.manifest import IndexFormatError

                reason = str(error).strip().rsplit(": ", 1)[-1] or "unreadable"
                raise IndexFormatError(f"{path}: not a readable FAISS index ({reason}); the index is "
                                       "corrupt (run `retriever info INDEX --verify`)") from None
        held = type(faiss.downcast_index(index)).__name__
        if held not in _CLASSES[parsed.kind]:  # (a manifest that lies about the stored index)
            raise ValueError(f"{path} holds a faiss {held}; the settings say {settings['factory']!r} "
                             f"({' or '.join(_CLASSES[parsed.kind])})")
        if index.d != dim or index.ntotal != ntotal:
            raise ValueError(f"{path} holds {index.ntotal} vectors of dimension {index.d}; the "
                             f"settings say {ntotal} of dimension {dim}")
        refine_vectors = None
        if settings["refine"]:
            refine_path = directory / REFINE_FILE
            if not refine_path.is_file():
                raise FileNotFoundError(f"settings ask for refine but {refine_path} is missing")
            refine_vectors = load_npy(refine_path, "r" if mmap else None)
            if refine_vectors.shape != (ntotal, dim) or refine_vectors.dtype != np.float16:
                raise ValueError(f"{refine_path} is {refine_vectors.dtype} {refine_vectors.shape}, "
                                 f"expected float16 {(ntotal, dim)}")
        nprobe, ef_search = cls._defaults(parsed, settings.get("nprobe"), settings.get("ef_search"))
        if gpus:
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True
            options.useFloat16 = parsed.kind == "ivf_pq"
            try:
                index = faiss.index_cpu_to_gpus_list(index, co=options, gpus=gpus)
            except RuntimeError as error:
                gpus, reason = [], f"faiss's GPU code cannot run {parsed.factory} ({error})"
        if reason:
            _fallback(device, reason)
        return cls(index, spec=settings.get("spec", settings["factory"]), parsed=parsed, dim=dim,
                   nprobe=nprobe, ef_search=ef_search, refine_vectors=refine_vectors,
                   refine_factor=_positive("refine_factor",
                                           settings.get("refine_factor", DEFAULT_REFINE_FACTOR)),
                   gpus=gpus, device=_device_name(gpus, device),
                   train_size=int(settings.get("train_size", 0)), seed=int(settings.get("seed", 0)),
                   mmapped=mmapped, source=directory.resolve())


# the faiss classes each kind of spec builds (OPQ wraps its IVF-PQ in an IndexPreTransform)
_CLASSES = {"flat": ("IndexFlatIP", "IndexFlat"), "ivf_flat": ("IndexIVFFlat",),
            "ivf_pq": ("IndexIVFPQ", "IndexPreTransform"), "hnsw": ("IndexHNSWFlat",)}


def _new_index(parsed: _Spec, dim: int):
    faiss = _faiss()
    index = faiss.index_factory(dim, parsed.factory, faiss.METRIC_INNER_PRODUCT)
    if parsed.kind == "ivf_pq":
        # Polysemous training reorders PQ centroids for Hamming filtering, which we never use;
        # the factory turns it on, and in faiss 1.15 it costs ~15x the PQ training itself.
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    return index


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """The rows :meth:`DenseIndex.build` trains on: ``size`` distinct rows of ``n`` drawn with
    ``seed``, ascending (all rows when ``size >= n``)."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` distinct rows drawn with ``seed`` (in row order), as contiguous float32."""
    n = vectors.shape[0]
    if size >= n:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    return np.ascontiguousarray(vectors[sample_rows(n, size, seed)], dtype=np.float32)


# -- one trained quantizer for many indexes (shards) ----------------------------------------------

def training_plan(spec: str, n: int, dim: int, train_size: int | None = None) -> tuple[str, int]:
    """(factory, rows to train on) for ``n`` vectors of dimension ``dim``, as :meth:`DenseIndex.build`
    resolves them (``auto`` by ``n``); 0 rows for specs that need no training."""
    parsed = _resolve(spec, n, dim, False)
    if not parsed.is_ivf:
        return parsed.factory, 0
    size = min(n, parsed.default_train_size()) if train_size is None else min(n, _positive("train_size", train_size))
    if size < parsed.min_train():
        raise ValueError(f"{parsed.factory} needs at least {parsed.min_train()} training vectors, "
                         f"train_size gives {size}")
    return parsed.factory, size


def train_empty(sample: np.ndarray, factory: str, threads: int | None = None):
    """A trained, empty faiss index (coarse quantizer, PQ codebook, OPQ rotation) for ``factory``,
    trained on ``sample`` (CPU). Shards built from copies of it (``DenseIndex.build(trained=)``)
    assign every vector to the same lists with the same codes as one index would."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    parsed = _parse(factory, None, sample.shape[1])
    if not parsed.is_ivf:
        raise ValueError(f"{factory} has nothing to train")
    with _omp_threads(threads):
        index = _new_index(parsed, sample.shape[1])
        index.train(sample)
    return index


def write_trained(index, path: Path) -> None:
    """Save a trained empty index (faiss's own format)."""
    write_faiss(index, path)


def write_faiss(index, path: str | os.PathLike) -> None:
    """``faiss.write_index`` through a Python file, whose writes raise: faiss's own file writer
    only prints "close error" when its last flush fails on a full disk, leaving a short file that
    an index's manifest would checksum. A failed write is an OSError naming ``path``."""
    faiss = _faiss()
    with saving(path), open(path, "wb") as f:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))


def read_trained(path: Path, factory: str, dim: int):
    """A trained empty index written by :func:`write_trained`, checked against ``factory``/``dim``."""
    faiss = _faiss()
    index = faiss.read_index(str(path))
    parsed = _parse(factory, None, dim)
    ivf = faiss.extract_index_ivf(index) if parsed.is_ivf else None
    if index.d != dim or index.ntotal != 0 or not index.is_trained or ivf is None or ivf.nlist != parsed.nlist:
        raise ValueError(f"{path} is not a trained empty {factory} index of dimension {dim}")
    return index


def _device_name(gpus: list[int], requested: str) -> str:
    if not gpus:
        return "cpu"
    return requested if requested.startswith("cuda:") else "cuda"
