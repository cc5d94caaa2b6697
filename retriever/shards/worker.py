"""The work of a sharded build, done where a worker runs: in the driver, a local process, or a
Ray actor. A :class:`ShardWorker` loads its encoder once (in ``__init__``) and then serves calls:

- ``count(range)``: documents in a byte range of the corpus;
- ``analyse(shard, range)``: the range analysed into BM25 term frequencies, kept in
  ``WORK/analysed/NNN`` (each document is analysed once: ``build`` weighs these), and its
  collection statistics (merged by the driver);
- ``sample_texts(range, rows)`` / ``encode(texts)``: the training sample of a dense IVF/PQ index;
- ``build(shard, range, overrides)``: shard ``NNN`` of the range, written (atomic, checksummed,
  through ``IndexWriter``) into ``WORK/shards/NNN`` on the filesystem every worker shares.

Everything a worker needs is in its spec (JSON-able) or in files under WORK; results are small
(counts, statistics, a sample's vectors).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from indexing.corpus import doc_text
from indexing.corpus_ranges import count_range, iter_range
from indexing.manifest import IndexFormatError, IndexWriter, load_array, read_manifest
from retriever import kinds

SHARED = "shared"
SHARDS = "shards"
ANALYSED = "analysed"
BM25_TERMS = "bm25_terms.json"
BM25_DF = "bm25_df.npy"
QUANTIZER = "quantizer.faiss"


def shard_dir(work: Path, shard: int) -> Path:
    return Path(work) / SHARDS / f"{shard:03d}"


def analysed_dir(work: Path, shard: int) -> Path:
    return Path(work) / ANALYSED / f"{shard:03d}"


def finished_shard(work: Path, shard: int) -> dict | None:
    """The manifest of shard ``shard`` if it was completely written and its files still match their
    checksums, else None. One written whole but damaged since (a resumed build's shard, waiting in
    ``OUT.partial``) is removed, to be built again: kept, it was assembled and swapped in over the
    good index, and only the load after the swap found it."""
    path = shard_dir(work, shard)
    if not path.is_dir():
        return None
    try:
        return read_manifest(path, verify=True)
    except IndexFormatError:
        if (path / "manifest.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
        return None


def read_collection(shared: Path):
    """The BM25 collection statistics written by the driver into ``shared``."""
    from indexing.bm25 import CollectionStats

    m = read_manifest(shared, verify=False)["collection"]
    terms = json.loads((Path(shared) / BM25_TERMS).read_text(encoding="utf-8"))
    df = load_array(shared, BM25_DF, mmap=False)
    return CollectionStats(tuple(m["fields"]), terms, df, m["doc_count"], m["total"], m["num_docs"])


class ShardWorker:
    """One worker of a sharded build (see the module docstring). ``progress(n)`` is called as
    documents are indexed (every few hundred)."""

    def __init__(self, spec: dict, progress: Callable[[int], None] | None = None) -> None:
        self.spec = spec
        self.kind = kinds.get(spec["kind"], "native")
        self.settings = self.kind.settings(**spec["settings"])
        self.corpus = spec["corpus"]
        self.work = Path(spec["work"])
        self.progress = progress
        if spec.get("threads"):
            import torch

            torch.set_num_threads(int(spec["threads"]))
        self.encoder = self._load_encoder()
        self._collection = None

    def _load_encoder(self):
        if self.kind.name == "dense":
            from retriever.kinds import dense

            return dense.make_encoder(self.settings)
        if self.kind.name == "sparse":
            from retriever.kinds import sparse

            return sparse.make_encoder(self.settings)
        return None

    @property
    def vectors(self) -> bool:
        return bool(getattr(self.settings, "vectors", False))

    def call(self, method: str, args: tuple):
        """Dispatch by name (what the process pool and Ray actors send)."""
        return getattr(self, method)(*args)

    def dim(self) -> int:
        return int(self.encoder.dim)

    def count(self, rng) -> int:
        return count_range(self.corpus, tuple(rng))

    def analyse(self, shard: int, rng):
        """Analyse the range into ``WORK/analysed/NNN`` (kept from an earlier call when complete);
        returns its BM25 collection statistics."""
        from indexing import bm25

        out = analysed_dir(self.work, shard)
        if not (out / bm25.ANALYSED).is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
            try:
                bm25.analyse(iter_range(self.corpus, tuple(rng)), self.settings.analyzer(), self.settings.params(),
                             tmp).save()
                shutil.rmtree(out, ignore_errors=True)
                tmp.rename(out)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return bm25.Analysed.load(out).stats()

    def sample_texts(self, rng, rows: list[int]) -> list[str]:
        """The texts an encoder reads of the documents at ``rows`` (ascending) of a range."""
        want, out = set(rows), []
        for i, doc in enumerate(iter_range(self.corpus, tuple(rng))):
            if i in want:
                out.append(doc_text(doc))
                if len(out) == len(want):
                    break
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_documents(texts)

    def _write_options(self, shard: int, rng, overrides: dict) -> dict:
        if self.kind.name == "bm25":
            from indexing.bm25 import ANALYSED as COMPLETE

            if self._collection is None:
                self._collection = read_collection(self.work / SHARED)
            if not (analysed_dir(self.work, shard) / COMPLETE).is_file():  # removed since the shared phase
                self.analyse(shard, rng)
            return {"collection": self._collection, "analysed": analysed_dir(self.work, shard)}
        options = {"encoder": self.encoder} if self.encoder is not None else {}
        quantizer = self.work / SHARED / QUANTIZER
        if self.kind.name == "dense" and quantizer.is_file():
            from indexing.faiss_index import read_trained

            options["trained"] = read_trained(quantizer, overrides["faiss"], self.encoder.dim)
        return options

    def build(self, shard: int, rng, overrides: dict | None = None) -> dict:
        """Write shard ``shard`` (the documents of byte range ``rng``); returns its doc count.
        A shard already complete (a retried call) is left as it is."""
        overrides = overrides or {}
        done = finished_shard(self.work, shard)
        if done is not None:
            return {"shard": shard, "doc_count": done["doc_count"]}
        settings = dataclasses.replace(self.settings, **overrides)
        pending = [0]

        def tick(_doc) -> None:
            pending[0] += 1
            if pending[0] >= 256 and self.progress is not None:
                self.progress(pending[0])
                pending[0] = 0

        out = shard_dir(self.work, shard)
        with IndexWriter(out) as writer:
            entries = kinds.write_kind(self.kind, iter_range(self.corpus, tuple(rng), vectors=self.vectors),
                                       writer, settings, store_docs=self.spec["store_docs"], on_doc=tick,
                                       write_options=self._write_options(shard, rng, overrides))
            writer.finish(entries)
        if pending[0] and self.progress is not None:
            self.progress(pending[0])
        return {"shard": shard, "doc_count": entries["doc_count"]}
