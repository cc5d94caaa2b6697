"""The Python search API: ``Retriever.build``, ``Retriever.load``, ``search``, ``search_batch``."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from indexing.corpus import corpus_file
from indexing.docstore import DocStore
from indexing.manifest import IndexFormatError, is_locked, read_docids, read_manifest
from indexing.searcher import Hit, Run, Searcher, check_k, check_queries, check_text, check_threads
from retriever import kinds as _kinds


def kinds() -> list[str]:
    """Index kinds ``Retriever.build`` knows."""
    return _kinds.names()


def backends(kind: str) -> list[str]:
    return _kinds.backends(kind)


def kind_options(kind: str, backend: str = "native") -> list[str]:
    """The options ``Retriever.build`` accepts for an index kind (its Settings fields)."""
    return [f.name for f in dataclasses.fields(_kinds.get(kind, backend).settings)]


_LOAD_ATTEMPTS = 20


def _identity(root: Path) -> tuple[int, int, int] | None:
    """Which directory ``root`` names right now (device, inode, inode change time: a rebuild
    swapped in later may reuse a deleted generation's inode number, never its ctime); None when
    there is none."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def verify_index(path: str | os.PathLike) -> list[str]:
    """The full check behind ``retriever info --verify``: every file's checksum, then each
    structure scanned whole (impact postings: doc ids in range and ascending, impacts finite).
    Needs no model. Returns what was checked; raises IndexFormatError at the first fault."""
    from indexing.inverted import InvertedIndex
    from indexing.manifest import safe_join

    root = Path(path)
    manifest = read_manifest(root, verify=True)
    checked = [f"{root}: {len(manifest['files'])} files match their checksums"]
    for entry in manifest.get("shards", []):  # a sharded index: each shard's postings too
        checked += verify_index(safe_join(root, entry["path"], "shard"))
    if manifest["backend"] == "native" and manifest["kind"] in ("bm25", "sparse"):
        scale = manifest["impacts"]["scale"] if manifest["kind"] == "sparse" else None
        index = InvertedIndex.load(root, num_docs=manifest["doc_count"], scale=scale)
        index.verify(root)
        checked.append(f"{root}: {index.num_postings} postings of {len(index.terms)} terms in range and ordered")
        derived = root / "heads"
        if (derived / "manifest.json").is_file():  # `retriever heads`: its own files and pointers
            from indexing.heads import Heads, parent_checksum

            files = read_manifest(derived, verify=True)["files"]
            Heads(derived, index.num_docs, len(index.terms), parent_checksum(root), verify=False)  # (just checked)
            checked.append(f"{derived}: {len(files)} files match their checksums; pointers in range")
    if manifest["backend"] == "lucene" and (root / "lucene").is_dir():  # Lucene reads whatever segments it finds
        listed = set(manifest["files"])
        stray = sorted(p for p in (root / "lucene").rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in listed)
        if stray:
            raise IndexFormatError(f"{stray[0]}: not listed in {root / 'manifest.json'}, but Lucene would read it; "
                                   f"the index is corrupt ({len(stray)} such file(s))")
        checked.append(f"{root / 'lucene'}: holds only the files its manifest lists")
    for part in manifest.get("components", []):
        checked += verify_index(safe_join(root, part["path"], f"component {part['name']}"))
    return checked


class Retriever:
    """A loaded index: search it with text, one query or many."""

    def __init__(self, path: Path, manifest: dict, searcher: Searcher, docids: list[str]) -> None:
        self.path = path
        self.manifest = manifest
        self.searcher = searcher
        self.docids = docids
        self._store = getattr(searcher, "doc_store", None) or (DocStore(path) if DocStore.exists(path) else None)
        self._row: dict[str, int] | None = None

    @classmethod
    def build(cls, corpus: str | os.PathLike, out: str | os.PathLike, kind: str = "bm25", *,
              backend: str = "native", overwrite: bool = False, progress: bool = False,
              store_docs: bool = True, settings: Any = None, shards: int | None = None, workers: int = 1,
              ray: str | None = None, gpus_per_worker: float = 0.0, resume: bool = False,
              **options) -> "Retriever":
        """Index a corpus (BEIR directory or JSONL file) into ``out`` and return it loaded.

        The kind's settings are given as ``settings`` (its Settings dataclass, e.g.
        ``retriever.kinds.bm25.Settings(k1=1.2)``) or as keyword ``options`` (``kind_options(kind)``
        lists them; for bm25: fields, k1, b, stopwords, stemmer; for sparse: model, vectors, max
        lengths, top-k, quantize, scale, query_mode, ...; for dense: model, pooling, normalize,
        prefixes, faiss, nprobe, ef_search, refine, int8, device; for hybrid: dense_model, sparse,
        sparse_model, method, weights, depth, rrf_k). The corpus is read once: ids, fingerprint
        and stored text are recorded as it streams to the kind. The directory appears only once
        complete; an existing index is replaced only with ``overwrite=True``.

        ``shards=N`` builds a sharded index (bm25, sparse, dense; ``retriever.shards``): the
        corpus read in N byte ranges by ``workers`` local processes, or by ``workers`` Ray actors
        with ``ray="auto"|ADDRESS|"local"`` (``gpus_per_worker`` GPUs each); ``resume=True``
        keeps the finished shards of an interrupted build of the same plan.
        """
        sharding = shards is not None
        if not sharding and (workers != 1 or ray is not None or resume or gpus_per_worker):
            raise ValueError("workers, ray, gpus_per_worker and resume apply to sharded builds (shards=N)")
        if sharding and backend != "native":
            raise ValueError(f"sharded builds use the native backend, not {backend!r}")
        k = _kinds.get(kind, backend)
        if settings is not None and options:
            raise TypeError("give the kind's settings either as settings= or as keyword options, not both")
        if settings is None:
            settings = k.make_settings(**options)
        elif not isinstance(settings, k.settings):
            raise TypeError(f"settings for kind {kind!r} must be {k.settings.__module__}.Settings")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=_count_lines(corpus_file(corpus)), unit="doc",
                       desc=f"index {kind}" + (f" in {shards} shards" if sharding else ""))
        try:
            if sharding:
                from retriever.shards.build import build_sharded

                build_sharded(kind, corpus, out, settings, shards=shards, workers=workers, ray=ray,
                              gpus_per_worker=gpus_per_worker, resume=resume, overwrite=overwrite,
                              store_docs=store_docs, progress=bar.update if bar is not None else None)
                return cls.load(out)
            _kinds.build(k, corpus, out, settings, overwrite=overwrite, store_docs=store_docs,
                         on_doc=(lambda doc: bar.update()) if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        return cls.load(out)

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True, *, ray: str | None = None, replicas: int = 1,
             groups: int | None = None, **options) -> "Retriever":
        """Open an index directory; ``verify`` checks every file against its manifest checksum.

        ``options`` go to the kind's opener, e.g. ``model=PATH`` when a sparse index's model has
        moved (its fingerprint must still match).

        A sharded index opens every shard here and searches them in threads; with
        ``ray="auto"|ADDRESS|"local"`` its shards are served by Ray actors instead (``groups``
        groups of shards, default one per shard, ``replicas`` actors each), with the same results.

        The result reads one generation of the index: if the directory is rebuilt (swapped by
        rename) while it is being opened, the load starts again on the new one; once loaded,
        every file it reads stays the one it opened, whatever happens on disk.
        """
        root = Path(path)
        for attempt in range(_LOAD_ATTEMPTS):
            before = _identity(root)
            if before is None and is_locked(root):
                time.sleep(0.05)  # a writer without atomic exchange is between its two renames
                continue
            try:
                loaded = cls._load_once(root, verify, options, ray, replicas, groups)
            except Exception:
                if _identity(root) != before:
                    continue  # swapped while we read it: start again on the new generation
                raise
            if _identity(root) == before:
                return loaded
        raise IndexFormatError(f"{root}: the index changed {_LOAD_ATTEMPTS} times while it was being "
                               "opened; try again when it is not being rebuilt")

    @classmethod
    def _load_once(cls, root: Path, verify: bool, options: dict, ray: str | None = None, replicas: int = 1,
                   groups: int | None = None) -> "Retriever":
        if ray is not None:
            from retriever.shards.ray_search import open_on_ray

            manifest = read_manifest(root, verify=verify)
            docids = read_docids(root)
            searcher = open_on_ray(root, manifest, docids, ray, replicas=replicas, groups=groups, options=options,
                                   verify=verify)
            return cls(root, manifest, searcher, docids)
        if replicas != 1 or groups is not None:
            raise ValueError("replicas and groups place shards on Ray actors; they need ray=")
        opened = _kinds.open_dir(root, verify=verify, **options)
        r = cls(root, opened.manifest, opened.searcher, opened.docids)
        if r._store is not None and len(r._store) != len(opened.docids):
            raise IndexFormatError(f"{root}/docs.jsonl: {len(r._store)} stored documents, "
                                   f"{len(opened.docids)} ids")
        return r

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def __len__(self) -> int:
        return len(self.docids)

    def search(self, text: str, k: int = 10, explain: bool = False) -> list[Hit]:
        """The k best documents for a query, best first (fewer when fewer match).

        ``k`` is an integer >= 1 (ValueError otherwise), clamped to the number of documents.
        ``explain=True`` (hybrid indexes) gives each hit's component scores and ranks as well.
        """
        check_text(text)
        k = check_k(k, len(self))
        if explain:
            if self.kind != "hybrid":
                raise ValueError("explain=True needs a hybrid index (it shows each component's part)")
            return self.searcher.search(text, k, explain=True)
        return self.searcher.search(text, k)

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        """Search many queries: ``{qid: text}`` -> ``{qid: {docid: score}}`` (k as in ``search``)."""
        check_queries(queries)
        return self.searcher.search_batch(queries, check_k(k, len(self)), check_threads(threads))  # (every kind)

    def search_weights(self, weights: Mapping[str, float], k: int = 10) -> list[Hit]:
        """Search an impact index with an explicit ``{term: weight}`` query.

        Weights must be finite numbers (ValueError otherwise); terms weighted <= 0 are ignored.
        """
        if not hasattr(self.searcher, "search_weights"):
            raise ValueError(f"a {self.kind} index does not take term-weight queries")
        if not isinstance(weights, Mapping) or not all(isinstance(t, str) for t in weights):
            raise ValueError("weights must be a mapping {term: weight} with string terms")
        bad = next((t for t, w in weights.items()
                    if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating))), None)
        if bad is not None:
            raise ValueError(f"the weight of term {bad!r} must be a number, got {weights[bad]!r}")
        return self.searcher.search_weights(dict(weights), check_k(k, len(self)))

    def doc(self, docid: str) -> dict | None:
        """The stored ``{"title", "text"}`` of a document, or None if the index stores no text;
        KeyError naming it when the index has no such document."""
        if self._store is None:
            return None
        if self._row is None:
            self._row = {d: i for i, d in enumerate(self.docids)}
        if docid not in self._row:
            raise KeyError(f"no document {docid!r} in {self.path}")
        return self._store.get(self._row[docid])

    def __repr__(self) -> str:
        return f"Retriever({str(self.path)!r}, kind={self.kind!r}, docs={len(self)})"
