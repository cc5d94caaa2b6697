"""The Python search API: ``Retriever.build``, ``Retriever.load``, ``search``, ``search_batch``."""

from __future__ import annotations

import importlib
import inspect
import os
import time
from pathlib import Path
from typing import Callable, Mapping

from indexing.corpus import Doc, corpus_file
from indexing.errors import DataError
from indexing.docstore import DocStore, DocStoreWriter
from indexing.manifest import IndexFormatError, IndexWriter, is_locked, read_docids, read_manifest
from indexing.searcher import Hit, Run, Searcher, check_k, check_queries

# Index kinds by (kind, backend): "module:writer" (corpus, IndexWriter, **options) -> manifest
# entries, and "module:opener" (root, manifest, docids, **load options) -> Searcher. Modules are
# imported on use, so a kind's heavy dependencies (torch, pyserini) load only when needed.
_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("bm25", "native"): ("retriever.kinds.bm25:write_index", "retriever.kinds.bm25:open_index"),
    ("sparse", "native"): ("retriever.kinds.sparse:write_index", "retriever.kinds.sparse:open_index"),
    ("dense", "native"): ("retriever.kinds.dense:write_index", "retriever.kinds.dense:open_index"),
    ("hybrid", "native"): ("retriever.kinds.hybrid:write_index", "retriever.kinds.hybrid:open_index"),
    ("bm25", "lucene"): ("retriever.kinds.lucene:write_bm25", "retriever.kinds.lucene:open_bm25"),
    ("sparse", "lucene"): ("retriever.kinds.lucene:write_sparse", "retriever.kinds.lucene:open_sparse"),
}


def kinds() -> list[str]:
    return sorted({k for k, _ in _KINDS})


def backends(kind: str) -> list[str]:
    return sorted(b for k, b in _KINDS if k == kind)


def _function(spec: str) -> Callable:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _kind(kind: str, backend: str = "native") -> tuple[Callable, Callable]:
    if kind not in kinds():
        raise ValueError(f"unknown index kind {kind!r}; available: {', '.join(kinds())}")
    if (kind, backend) not in _KINDS:
        raise ValueError(f"kind {kind!r} has no backend {backend!r}; available: {', '.join(backends(kind))}")
    writer, opener = _KINDS[kind, backend]
    return _function(writer), _function(opener)


def kind_options(kind: str, backend: str = "native") -> list[str]:
    """The options ``Retriever.build`` accepts for an index kind."""
    params = inspect.signature(_kind(kind, backend)[0]).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "on_doc"]


_LOAD_ATTEMPTS = 20


def _identity(root: Path) -> tuple[int, int] | None:
    """Which directory ``root`` names right now (device, inode); None when there is none."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    return st.st_dev, st.st_ino


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
    if manifest["backend"] == "native" and manifest["kind"] in ("bm25", "sparse"):
        scale = manifest["impacts"]["scale"] if manifest["kind"] == "sparse" else None
        index = InvertedIndex.load(root, num_docs=manifest["doc_count"], scale=scale)
        index.verify(root)
        checked.append(f"{root}: {index.num_postings} postings of {len(index.terms)} terms in range and ordered")
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
        self._store = DocStore(path) if DocStore.exists(path) else None
        self._row: dict[str, int] | None = None

    @classmethod
    def build(cls, corpus: str | os.PathLike, out: str | os.PathLike, kind: str = "bm25", *,
              backend: str = "native", overwrite: bool = False, progress: bool = False,
              store_docs: bool = True, **options) -> "Retriever":
        """Index a corpus (BEIR directory or JSONL file) into ``out`` and return it loaded.

        ``options`` are the kind's settings (``kind_options(kind)`` lists them; for bm25:
        fields, k1, b, stopwords, stemmer; for sparse: model, vectors, max lengths, top-k,
        quantize, scale, query_mode, ...; for dense: model, pooling, normalize, prefixes,
        faiss, nprobe, ef_search, refine, int8, device).
        The directory appears only once complete; an existing index is replaced only with
        ``overwrite=True``.
        """
        writer_fn = _kind(kind, backend)[0]
        allowed = kind_options(kind, backend)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(f"unknown option(s) for kind {kind!r}: {', '.join(unknown)}; "
                            f"accepted: {', '.join(allowed)}")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=_count_lines(corpus_file(corpus)), unit="doc", desc=f"index {kind}")
        with IndexWriter(out, overwrite=overwrite) as writer:
            store = DocStoreWriter(writer) if store_docs else None

            def on_doc(doc: Doc) -> None:
                if store is not None:
                    store.add(doc.title, doc.text)
                if bar is not None:
                    bar.update()

            entries = writer_fn(corpus, writer, on_doc=on_doc, **options)
            if bar is not None:
                bar.close()
            if entries["doc_count"] == 0:
                raise DataError("the corpus has no documents", path=os.fspath(corpus))
            if store is not None:
                store.close()
            entries["corpus"] = {"path": os.fspath(Path(corpus).absolute()),
                                 "fingerprint": entries.pop("corpus_fingerprint", None)}
            writer.finish(entries)
        return cls.load(out)

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True, **options) -> "Retriever":
        """Open an index directory; ``verify`` checks every file against its manifest checksum.

        ``options`` go to the kind's opener, e.g. ``model=PATH`` when a sparse index's model has
        moved (its fingerprint must still match).

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
                loaded = cls._load_once(root, verify, options)
            except Exception:
                if _identity(root) != before:
                    continue  # swapped while we read it: start again on the new generation
                raise
            if _identity(root) == before:
                return loaded
        raise IndexFormatError(f"{root}: the index changed {_LOAD_ATTEMPTS} times while it was being "
                               "opened; try again when it is not being rebuilt")

    @classmethod
    def _load_once(cls, root: Path, verify: bool, options: dict) -> "Retriever":
        manifest = read_manifest(root, verify=verify)
        docids = read_docids(root)
        if len(docids) != manifest["doc_count"]:
            raise IndexFormatError(f"{root}/docids.txt: {len(docids)} ids, manifest says "
                                   f"{manifest['doc_count']}")
        opener = _kind(manifest["kind"], manifest["backend"])[1]
        accepted = list(inspect.signature(opener).parameters)[3:]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"a {manifest['kind']} index takes no load option(s) {', '.join(unknown)}; "
                             f"it accepts: {', '.join(accepted) or 'none'}")
        try:
            searcher = opener(root, manifest, docids, **options)
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            # the schema check covers the fields every kind needs; this covers the rest
            raise IndexFormatError(f"{root}/manifest.json: does not describe a usable "
                                   f"{manifest['kind']} index ({type(e).__name__}: {e})") from None
        r = cls(root, manifest, searcher, docids)
        if r._store is not None and len(r._store) != len(docids):
            raise IndexFormatError(f"{root}/docs.jsonl: {len(r._store)} stored documents, "
                                   f"{len(docids)} ids")
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
        if not isinstance(text, str):
            raise ValueError(f"a query is a string, got {type(text).__name__}")
        k = check_k(k, len(self))
        if explain:
            if self.kind != "hybrid":
                raise ValueError("explain=True needs a hybrid index (it shows each component's part)")
            return self.searcher.search(text, k, explain=True)
        return self.searcher.search(text, k)

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        """Search many queries: ``{qid: text}`` -> ``{qid: {docid: score}}`` (k as in ``search``)."""
        check_queries(queries)
        return self.searcher.search_batch(queries, check_k(k, len(self)), threads)

    def search_weights(self, weights: Mapping[str, float], k: int = 10) -> list[Hit]:
        """Search an impact index with an explicit ``{term: weight}`` query.

        Weights must be finite numbers (ValueError otherwise); terms weighted <= 0 are ignored.
        """
        if not hasattr(self.searcher, "search_weights"):
            raise ValueError(f"a {self.kind} index does not take term-weight queries")
        if not isinstance(weights, Mapping) or not all(isinstance(t, str) for t in weights):
            raise ValueError("weights must be a mapping {term: weight} with string terms")
        return self.searcher.search_weights(dict(weights), check_k(k, len(self)))

    def doc(self, docid: str) -> dict | None:
        """The stored ``{"title", "text"}`` of a document, or None if the index stores no text."""
        if self._store is None:
            return None
        if self._row is None:
            self._row = {d: i for i, d in enumerate(self.docids)}
        return self._store.get(self._row[docid])

    def __repr__(self) -> str:
        return f"Retriever({str(self.path)!r}, kind={self.kind!r}, docs={len(self)})"
