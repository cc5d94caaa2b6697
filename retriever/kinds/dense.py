"""The ``dense`` index kind: a transformer encoder's document vectors in a FAISS index.

Documents are encoded in blocks, each block saved under ``OUT.encoding/`` as it completes; an
interrupted build run again with the same settings reuses the saved blocks and encodes only the
rest. The cache is removed once the index is written. The manifest records every setting that
changes the vectors and the model's fingerprint; a query encoder that does not match is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from itertools import islice
from pathlib import Path
from typing import Mapping

import numpy as np

from indexing.corpus import doc_text, iter_corpus
from indexing.faiss_index import DenseIndex
from indexing.manifest import IndexWriter
from indexing.searcher import Hit, Run
from retriever.encoders.dense import DenseEncoder, DenseSettings, resolve_settings
from retriever.encoders.models import matching_model, resolve_model



class EncodingCache:
    """Completed blocks of document vectors for one (corpus, encoder settings) pair."""

    def __init__(self, out: Path, key: dict) -> None:
        self.dir = out.with_name(out.name + ".encoding")
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        meta = self.dir / "meta.json"
        if self.dir.is_dir() and (not meta.is_file() or json.loads(meta.read_text())["key"] != self.key):
            shutil.rmtree(self.dir)  # left by a build with other settings: useless
        self.dir.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"key": self.key}))

    def _paths(self, block: int) -> tuple[Path, Path]:
        return self.dir / f"block-{block:06d}.npy", self.dir / f"block-{block:06d}.ids"

    def load(self, block: int, docids: list[str]) -> np.ndarray | None:
        vec_path, ids_path = self._paths(block)
        if not (vec_path.is_file() and ids_path.is_file()):
            return None
        if ids_path.read_text(encoding="utf-8").split("\n") != docids:
            return None  # the corpus changed under this block
        return np.load(vec_path)

    def save(self, block: int, docids: list[str], vectors: np.ndarray) -> None:
        vec_path, ids_path = self._paths(block)
        tmp = vec_path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        ids_path.write_text("\n".join(docids), encoding="utf-8")
        os.replace(tmp, vec_path)  # the vectors file appears last: its presence means complete

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def write_index(corpus, writer: IndexWriter, *, model: str, pooling: str | None = None,
                normalize: bool | None = None, query_prefix: str | None = None,
                doc_prefix: str | None = None, doc_max_length: int | None = None,
                query_max_length: int | None = None, faiss: str = "auto", nprobe: int | None = None,
                ef_search: int | None = None, refine: bool = False, int8: bool = False,
                batch_size: int = 32, device: str = "auto", encode_block: int = 4096,
                on_doc=None) -> dict:
    """Encode a corpus and index its vectors with FAISS (``faiss`` is a factory string or auto)."""
    path = resolve_model(model)
    settings = resolve_settings(path, pooling=pooling, normalize=normalize, query_prefix=query_prefix,
                                doc_prefix=doc_prefix, doc_max_length=doc_max_length,
                                query_max_length=query_max_length)
    encoder = DenseEncoder(path, settings=settings, batch_size=batch_size, device=device,
                           quantize_int8=int8)
    cache = EncodingCache(writer.out, {"encoder": encoder.config(), "block": encode_block,
                                       "corpus": os.fspath(Path(corpus).absolute())})
    docids: list[str] = []
    blocks: list[np.ndarray] = []
    docs = iter_corpus(corpus)
    while chunk := list(islice(docs, encode_block)):
        ids = [d.docid for d in chunk]
        vectors = cache.load(len(blocks), ids)
        if vectors is None:
            vectors = encoder.encode_documents([doc_text(d) for d in chunk])
            cache.save(len(blocks), ids, vectors)
        blocks.append(vectors)
        docids.extend(ids)
        if on_doc is not None:
            for d in chunk:
                on_doc(d)
    if not docids:
        cache.remove()
        return {"kind": "dense", "backend": "native", "doc_count": 0}
    vectors = np.concatenate(blocks)
    faiss_device = "cuda" if encoder.device.startswith("cuda") else "cpu"
    index = DenseIndex.build(vectors, faiss, nprobe=nprobe, ef_search=ef_search, refine=refine,
                             device=faiss_device)
    faiss_settings = index.save(writer.tmp)
    writer.write_docids(docids)
    cache.remove()
    return {"kind": "dense", "backend": "native", "doc_count": len(docids),
            "encoder": encoder.config(), "faiss": faiss_settings}


class DenseSearcher:
    def __init__(self, index: DenseIndex, docids: list[str], encoder: DenseEncoder) -> None:
        self.index = index
        self.docids = docids
        self._docids = np.array(docids, dtype=object)
        self.encoder = encoder

    def search_vectors(self, vectors: np.ndarray, k: int, **params) -> list[tuple[list[str], list[float]]]:
        ids, scores = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k, **params)
        out = []
        for row_ids, row_scores in zip(ids, scores):
            keep = row_ids >= 0
            out.append((self._docids[row_ids[keep]].tolist(), row_scores[keep].tolist()))
        return out

    def search(self, text: str, k: int = 10, **params) -> list[Hit]:
        docs, scores = self.search_vectors(self.encoder.encode_queries([text]), k, **params)[0]
        return [Hit(d, s) for d, s in zip(docs, scores)]

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1, **params) -> Run:
        qids = list(queries)
        if not qids:
            return {}
        vectors = self.encoder.encode_queries([queries[q] for q in qids])
        return {q: dict(zip(*hits)) for q, hits in zip(qids, self.search_vectors(vectors, k, **params))}


def open_index(root, manifest: dict, docids: list[str], model: str | None = None,
               device: str = "cpu", nprobe: int | None = None, ef_search: int | None = None) -> DenseSearcher:
    enc = manifest["encoder"]
    path = matching_model(root, enc, model)
    settings = DenseSettings(**{k: enc[k] for k in DenseSettings.__dataclass_fields__})
    encoder = DenseEncoder(path, settings=settings, device=device, quantize_int8=enc.get("int8", False))
    faiss_settings = dict(manifest["faiss"])
    if nprobe is not None:
        faiss_settings["nprobe"] = nprobe
    if ef_search is not None:
        faiss_settings["ef_search"] = ef_search
    index = DenseIndex.load(Path(root), faiss_settings, device=device)
    return DenseSearcher(index, docids, encoder)
