"""The ``dense`` index kind: a transformer encoder's document vectors in a FAISS index.

Documents are encoded in blocks, each block saved under ``OUT.encoding/`` as it completes; an
interrupted build run again with the same settings reuses the saved blocks whose documents (ids
and texts) are unchanged and encodes only the rest. The cache is removed once the index is written. The manifest records every setting that
changes the vectors and the model's fingerprint; a query encoder that does not match is refused.

``dim`` (``--dim D``) truncates every vector to its first D components (a Matryoshka prefix),
re-normalised when the model normalises: the encoder does it, for documents at build time and
for queries at search time, so the sharded and hybrid kinds that open shards and components
through this kind search truncated indexes unchanged. The manifest's ``encoder.dim`` and
``faiss.dim`` are D (``encoder.model_dim`` the model's own size when D is smaller); an index
written before ``dim`` existed records the model's size there and opens at full dimension.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator, Literal, Mapping

import numpy as np

from indexing.corpus import Doc, doc_text
from indexing.faiss_index import DenseIndex, check_spec
from indexing.io import load_npy, save_npy
from indexing.manifest import IndexWriter, read_docid_order
from indexing.results import Hit, Run
from retriever.encoders.dense import DenseEncoder, DenseSettings, resolve_settings
from retriever.encoders.models import index_query_model, resolve_model
from retriever.kinds import Kind, check_settings, option, register

log = logging.getLogger("retriever")


@dataclass(frozen=True)
class Settings:
    model: str | None = option(None, "encoder: a directory, a pulled pack name, or a hub id")
    dim: int | None = option(None, "keep the first D components of each vector (Matryoshka), "
                                   "re-normalised when the model normalises (default: all)", min=1)
    pooling: Literal["cls", "mean", "last"] | None = option(
        None, "pooling (default: the model's sentence-transformers config, else mean)")
    normalize: bool | None = option(None, "L2-normalise vectors (default: the model's config)")
    query_prefix: str | None = option(None, "text put before every query (default: the model's prompt)")
    doc_prefix: str | None = option(None, "text put before every document (default: the model's prompt)")
    doc_max_length: int | None = option(None, f"tokens per document (default: the model's, else "
                                              f"{DenseSettings.doc_max_length})", min=2)
    query_max_length: int | None = option(None, f"tokens per query (default: the model's, else "
                                                f"{DenseSettings.query_max_length})", min=2)
    faiss: str = option("auto", "FAISS spec: Flat, IVF{n},Flat, IVF{n},PQ{m}[x{b}], OPQ{m},IVF{n},PQ{m}, "
                                "HNSW{M}, auto")
    nprobe: int | None = option(None, "IVF lists probed per query (stored default)", min=1)
    train_size: int | None = option(None, "vectors sampled to train IVF/PQ (default: 40 per list, "
                                          "256 per PQ centroid)", min=1)
    ef_search: int | None = option(None, "HNSW efSearch (stored default)", min=1)
    refine: bool = option(False, "keep float16 vectors and re-rank candidates exactly")
    int8: bool = option(False, "int8 dynamic quantisation of the model (CPU)")
    batch_size: int = option(32, "encoding batch size", min=1)
    device: str = option("auto", "auto | cpu | cuda[:N]")
    encode_block: int = option(4096, "documents per resumable encoding block (a sharded build cuts shards "
                                     "at whole blocks)", min=1)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.model is None:
            raise ValueError("a dense index needs --model")
        if self.dim is not None:  # a PQ that cannot split D is refused before the model loads
            _check_spec_for_dim(self.faiss, self.dim)


def _check_spec_for_dim(spec: str, dim: int, truncated: bool = True) -> None:
    """Refuse a FAISS spec that cannot index vectors of ``dim`` (``truncated``: a ``--dim`` choice)."""
    try:
        check_spec(spec, dim)
    except ValueError as e:
        if not truncated:
            raise
        raise ValueError(f"--faiss {spec} does not fit vectors of --dim {dim}: {e}") from None


class EncodingCache:
    """Completed blocks of document vectors for one (corpus, encoder settings) pair."""

    def __init__(self, out: Path, key: dict) -> None:
        self.dir = out.with_name(out.name + ".encoding")
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        meta = self.dir / "meta.json"
        if self.dir.is_dir() and _cache_key(meta) != self.key:
            shutil.rmtree(self.dir)  # left by a build with other settings: useless
        self.dir.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"key": self.key}))

    def _paths(self, block: int) -> tuple[Path, Path]:
        return self.dir / f"block-{block:06d}.npy", self.dir / f"block-{block:06d}.ids"

    def load(self, block: int, docs: list[Doc]) -> np.ndarray | None:
        vec_path, ids_path = self._paths(block)
        if not (vec_path.is_file() and ids_path.is_file()):
            return None
        try:
            if ids_path.read_text(encoding="utf-8") != _block_key(docs):
                return None  # the corpus changed under this block
            vectors = load_npy(vec_path)
        except (OSError, ValueError):
            return None  # damaged: encode again
        return vectors if vectors.shape[0] == len(docs) else None

    def save(self, block: int, docs: list[Doc], vectors: np.ndarray) -> None:
        vec_path, ids_path = self._paths(block)
        tmp = vec_path.with_suffix(".tmp.npy")
        try:
            save_npy(tmp, vectors)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a part of a block: nothing to resume from, only space taken
            raise
        ids_path.write_text(_block_key(docs), encoding="utf-8")
        os.replace(tmp, vec_path)  # the vectors file appears last: its presence means complete

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _cache_key(meta: Path) -> str | None:
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _block_key(docs: list[Doc]) -> str:
    """The ids of a block's documents and a digest of their texts."""
    h = hashlib.sha256()
    for d in docs:
        h.update(doc_text(d).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest() + "\n" + "\n".join(d.docid for d in docs)


def make_encoder(settings: Settings) -> DenseEncoder:
    path = resolve_model(settings.model)
    resolved = resolve_settings(path, pooling=settings.pooling, normalize=settings.normalize,
                                query_prefix=settings.query_prefix, doc_prefix=settings.doc_prefix,
                                doc_max_length=settings.doc_max_length, query_max_length=settings.query_max_length)
    return DenseEncoder(path, settings=resolved, batch_size=settings.batch_size, device=settings.device,
                        quantize_int8=settings.int8, dim=settings.dim)


def write(docs: Iterator[Doc], writer: IndexWriter, settings: Settings, encoder: DenseEncoder | None = None,
          trained=None) -> dict:
    """Encode the documents and index their vectors with FAISS (``faiss`` is a factory string or auto).

    ``encoder``: one already loaded for these settings (a shard worker's); ``trained``: a trained
    empty faiss index of the ``faiss`` spec shared by every shard of a collection (nothing is
    trained here then)."""
    encoder = encoder if encoder is not None else make_encoder(settings)
    if trained is None:  # checked before the corpus is encoded (a shared quantizer was checked when trained)
        _check_spec_for_dim(settings.faiss, encoder.dim, encoder.truncated)
    cache = EncodingCache(writer.out, {"encoder": encoder.config(), "block": settings.encode_block})
    blocks: list[np.ndarray] = []
    try:
        while chunk := list(islice(docs, settings.encode_block)):
            vectors = cache.load(len(blocks), chunk)
            if vectors is None:
                vectors = encoder.encode_documents([doc_text(d) for d in chunk])
                cache.save(len(blocks), chunk, vectors)
            blocks.append(vectors)
        if not blocks:
            cache.remove()
            return {}
        faiss_device = "cuda" if encoder.device.startswith("cuda") else "cpu"
        index = DenseIndex.build(np.concatenate(blocks), settings.faiss, nprobe=settings.nprobe,
                                 ef_search=settings.ef_search, refine=settings.refine, device=faiss_device,
                                 train_size=settings.train_size, trained=trained)
        faiss_settings = index.save(writer.tmp)
    except BaseException:
        _note_kept(cache, len(blocks))
        raise
    cache.remove()
    return {"encoder": encoder.config(), "faiss": faiss_settings}


def _note_kept(cache: EncodingCache, blocks: int) -> None:
    """Say where the encoded blocks of a failed build wait (they hold space a full disk lacks)."""
    if blocks:
        log.warning("the build failed after encoding %s of documents; %s kept in %s, and building the "
                    "same index again resumes from %s (remove it to free its space)",
                    f"{blocks} block{'s' if blocks > 1 else ''}", "they are" if blocks > 1 else "it is",
                    cache.dir, "them" if blocks > 1 else "it")


class DenseSearcher:
    """Dense search; equal scores are ordered by external doc id (``tie_order``, internal ids
    sorted by doc id), like every other searcher."""

    def __init__(self, index: DenseIndex, docids: list[str], encoder: DenseEncoder,
                 tie_order: np.ndarray | None = None) -> None:
        self.index = index
        self.docids = docids
        self._docids = np.array(docids, dtype=object)
        self.encoder = encoder
        order = np.arange(len(docids)) if tie_order is None else np.asarray(tie_order)
        self._rank = np.empty(len(docids), dtype=np.int64)
        self._rank[order] = np.arange(len(docids))

    def search_vectors(self, vectors: np.ndarray, k: int, **params) -> list[tuple[list[str], list[float]]]:
        """Top k per row, ties by doc id. FAISS breaks ties its own way, so a few more than k
        are fetched and re-sorted; when ties run past them, more are fetched."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = self.index.ntotal
        want, extra = min(k, n), 16
        while True:
            fetch = min(n, want + extra)
            ids, scores = self.index.search(vectors, fetch, **params)
            out, open_ties = [], False
            for row_ids, row_scores in zip(ids, scores):
                keep = row_ids >= 0
                row_ids, row_scores = row_ids[keep], row_scores[keep]
                order = np.lexsort((self._rank[row_ids], -row_scores))
                row_ids, row_scores = row_ids[order], row_scores[order]
                if fetch < n and len(row_scores) > want and row_scores[want - 1] == row_scores[-1]:
                    open_ties = True  # the tie at the cut may go on beyond what was fetched
                out.append((self._docids[row_ids[:want]].tolist(), row_scores[:want].tolist()))
            if not open_ties or fetch == n:
                return out
            extra *= 8

    def search(self, text: str, k: int = 10, **params) -> list[Hit]:
        docs, scores = self.search_vectors(self.encoder.encode_queries([text]), k, **params)[0]
        return [Hit(d, s) for d, s in zip(docs, scores)]

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1, **params) -> Run:
        qids = list(queries)
        if not qids:
            return {}
        vectors = self.encoder.encode_queries([queries[q] for q in qids])
        found = self.search_vectors(vectors, k, threads=threads, **params)  # FAISS's own threads
        return {q: dict(zip(*hits)) for q, hits in zip(qids, found)}


def query_encoder(root, manifest: dict, model: str | None = None, device: str = "cpu") -> DenseEncoder:
    """The query encoder a dense index's manifest describes (its model must match the fingerprint);
    queries are truncated to the index's ``dim`` like its documents (full size for older indexes).

    An index written by ``retriever train query`` holds its own trained query model
    (``encoder.query_model``, a directory inside the index, with ``encoder.query_fingerprint``):
    queries are encoded with it, and a ``model`` given must match that fingerprint."""
    enc = manifest["encoder"]
    path = index_query_model(root, enc, model)
    settings = DenseSettings(**{k: enc[k] for k in DenseSettings.__dataclass_fields__})
    return DenseEncoder(path, settings=settings, device=device, quantize_int8=enc.get("int8", False),
                        dim=enc.get("dim"))


def open_index(root, manifest: dict, docids: list[str], model: str | None = None,
               device: str = "cpu", nprobe: int | None = None, ef_search: int | None = None,
               encoder: DenseEncoder | None = None) -> DenseSearcher:
    """Open a dense index; ``encoder``: a query encoder already loaded for an index of the same
    encoder settings (the shards of one index share one)."""
    if encoder is None:
        encoder = query_encoder(root, manifest, model, device)
    else:
        enc = manifest["encoder"]
        given = {"dim": encoder.dim, **{k: getattr(encoder.settings, k) for k in DenseSettings.__dataclass_fields__}}
        if any(enc.get(k) != v for k, v in given.items()):
            raise ValueError(f"{root}: the query encoder given has other settings than this index's")
    faiss_settings = dict(manifest["faiss"])
    if nprobe is not None:
        faiss_settings["nprobe"] = nprobe
    if ef_search is not None:
        faiss_settings["ef_search"] = ef_search
    index = DenseIndex.load(Path(root), faiss_settings, device=device)
    return DenseSearcher(index, docids, encoder, read_docid_order(root, docids))


KIND = register(Kind(
    "dense", "native", Settings, write, open_index,
    schema=(("encoder", "dict"), ("encoder.model", "str"), ("faiss", "dict"), ("faiss.factory", "str"),
            ("faiss.dim", "int"), ("faiss.ntotal", "int"), ("faiss.refine", "bool")),
    help="a transformer encoder's vectors in a FAISS index (Flat, IVF, PQ, HNSW)"))
