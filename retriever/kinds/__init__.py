"""Index kinds: one module per kind (bm25, sparse, dense, hybrid; lucene for the Lucene backend).

A kind is a :class:`Kind`: a typed ``Settings`` dataclass (the only source of its defaults; the
manifest stores it, and ``retriever index`` derives its flags, help and refusals from it), a
``write(docs, writer, settings)`` that consumes the document stream once and returns its
manifest entries, an ``open(root, manifest, docids, **load options)`` that returns a searcher
(``search`` / ``search_batch``), and the manifest fields it needs (checked on load).

Built-in kinds are found by importable module name and imported on first use, so a kind's heavy
dependencies (torch, faiss, pyserini) load only when it is used; a module registers its kinds
with :func:`register` when imported. Adding a kind: write a module that defines its Settings,
write and open, calls ``register(Kind(...))``, and add it to ``BUILTIN`` (or import it before
use); docs/ARCHITECTURE.md walks through it and tests/test_architecture.py adds a toy kind.

:func:`write_kind` is the one pass over a corpus every build makes: ids, fingerprint, stored
text and progress are recorded as the documents stream to the kind's writer.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, NamedTuple

from indexing.corpus import CorpusFingerprint, Doc, iter_corpus
from indexing.docstore import DocStoreWriter
from indexing.errors import DataError
from indexing.manifest import (DOCID_ORDER, IndexFormatError, IndexWriter, check_fields, docid_order, read_docids,
                               read_manifest)

# (kind, backend) -> the module that registers it
BUILTIN: dict[tuple[str, str], str] = {
    ("bm25", "native"): "retriever.kinds.bm25",
    ("sparse", "native"): "retriever.kinds.sparse",
    ("dense", "native"): "retriever.kinds.dense",
    ("hybrid", "native"): "retriever.kinds.hybrid",
    ("bm25", "lucene"): "retriever.kinds.lucene",
    ("sparse", "lucene"): "retriever.kinds.lucene",
    # a native index split in shards (shards/NNN/), built by retriever.shards
    ("bm25", "sharded"): "retriever.kinds.sharded",
    ("sparse", "sharded"): "retriever.kinds.sharded",
    ("dense", "sharded"): "retriever.kinds.sharded",
}


def option(default: Any = None, help: str = "", *, min: float | None = None, max: float | None = None,
           cli: bool = True, flag: str | None = None, min_open: bool = False, choices: tuple | None = None):
    """A Settings field: its default, the help line of its flag, numeric bounds, allowed values
    (``choices``, e.g. an Enum's values, instead of a Literal), and whether it is a
    ``retriever index`` flag (``flag`` overrides the flag name)."""
    meta = {"help": help, "min": min, "max": max, "cli": cli, "flag": flag, "min_open": min_open,
            "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """One setting as the CLI and the validator see it."""

    name: str
    base: type            # int, float, bool, str or list (of floats)
    choices: tuple | None  # Literal values
    optional: bool        # None allowed (the kind decides later, e.g. from the model)
    default: Any
    help: str
    min: float | None
    max: float | None
    min_open: bool
    cli: bool
    flag: str


def fields_of(settings_class: type) -> list[FieldSpec]:
    """The settings of a kind, typed from the dataclass annotations."""
    hints = typing.get_type_hints(settings_class)
    out = []
    for f in dataclasses.fields(settings_class):
        tp, optional = hints[f.name], False
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
            optional = True
            tp = next(a for a in args if a is not type(None))
        choices = None
        if typing.get_origin(tp) is Literal:
            choices = typing.get_args(tp)
            base = type(choices[0])
        elif typing.get_origin(tp) is list:
            base = list
        else:
            base = tp
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        m = f.metadata
        choices = m.get("choices") or choices
        out.append(FieldSpec(f.name, base, choices, optional, default, m.get("help", ""), m.get("min"),
                             m.get("max"), m.get("min_open", False), m.get("cli", True),
                             m.get("flag") or "--" + f.name.replace("_", "-")))
    return out


def check_settings(settings) -> None:
    """Validate every field against its type, choices and bounds (ValueError naming the field);
    called by each Settings' ``__post_init__``."""
    for spec in fields_of(type(settings)):
        value = getattr(settings, spec.name)
        if value is None:
            if spec.optional:
                continue
            raise ValueError(f"setting {spec.name} is required")
        if spec.base is list:
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            if not ok:
                raise ValueError(f"setting {spec.name} must be a list of finite numbers, got {value!r}")
            continue
        if spec.base is bool:
            ok = isinstance(value, bool)
        elif spec.base is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif spec.base is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, spec.base)
        if not ok:
            raise ValueError(f"setting {spec.name} must be a{'' if spec.base is int else ' finite'} "
                             f"{spec.base.__name__}, got {value!r}")
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(f"setting {spec.name} must be one of {', '.join(map(str, spec.choices))}, "
                             f"not {value!r}")
        if spec.min is not None and (value < spec.min or (spec.min_open and value == spec.min)):
            raise ValueError(f"setting {spec.name} must be {'>' if spec.min_open else '>='} {spec.min:g}, "
                             f"got {value!r}")
        if spec.max is not None and value > spec.max:
            raise ValueError(f"setting {spec.name} must be <= {spec.max:g}, got {value!r}")


@dataclass(frozen=True)
class Kind:
    name: str
    backend: str
    settings: type
    write: Callable[[Iterator[Doc], IndexWriter, Any], dict]
    open: Callable[..., Any]
    schema: tuple[tuple[str, str], ...] = ()
    read: Callable[[Any, Any], Iterator[Doc]] = lambda corpus, settings: iter_corpus(corpus)
    prepare: Callable[[Any], Any] = lambda settings: settings  # resolve what depends on the model
    help: str = ""

    def make_settings(self, **options):
        """Settings from keyword options; an unknown option is a TypeError listing the known ones."""
        known = [f.name for f in dataclasses.fields(self.settings)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"unknown option(s) for kind {self.name!r}: {', '.join(unknown)}; "
                            f"accepted: {', '.join(known)}")
        return self.settings(**options)

    def check_manifest(self, manifest: dict, where: str) -> None:
        check_fields(manifest, list(self.schema), where)


_REGISTERED: dict[tuple[str, str], Kind] = {}


def register(kind: Kind) -> Kind:
    _REGISTERED[kind.name, kind.backend] = kind
    return kind


def names() -> list[str]:
    return sorted({k for k, _ in BUILTIN} | {k for k, _ in _REGISTERED})


def backends(name: str) -> list[str]:
    return sorted({b for k, b in BUILTIN if k == name} | {b for k, b in _REGISTERED if k == name})


def get(name: str, backend: str = "native") -> Kind:
    """The kind registered as (name, backend), importing its module on first use."""
    key = (name, backend)
    if key not in _REGISTERED and key in BUILTIN:
        importlib.import_module(BUILTIN[key])
    if key not in _REGISTERED:
        if name not in names():
            raise ValueError(f"unknown index kind {name!r}; available: {', '.join(names())}")
        raise ValueError(f"kind {name!r} has no backend {backend!r}; available: {', '.join(backends(name))}")
    return _REGISTERED[key]


class Opened(NamedTuple):
    manifest: dict
    docids: list[str]
    searcher: Any


def open_dir(root, verify: bool = True, files_checked: bool = False, **options) -> Opened:
    """Open the index directory ``root``: manifest (checked), doc ids, and the kind's searcher.
    ``options`` go to the kind's opener (e.g. ``model=PATH``, ``device``, ``nprobe``); ``verify``
    too where it takes it (files it opens later, such as derived heads). ``files_checked``: the
    caller has already checked this directory's files against their checksums (a sharded index's
    shards)."""
    root = Path(root)
    manifest = read_manifest(root, verify=verify and not files_checked)
    docids = read_docids(root)
    if len(docids) != manifest["doc_count"]:
        raise IndexFormatError(f"{root}/docids.txt: {len(docids)} ids, manifest says {manifest['doc_count']}")
    kind = open_manifest_kind(manifest, f"{root / 'manifest.json'}")
    accepted = list(inspect.signature(kind.open).parameters)[3:]
    if "verify" in accepted:  # an index of sub-indexes with their own checksums (sharded)
        accepted.remove("verify")
        options = {**options, "verify": verify}
    unknown = sorted(set(options) - set(accepted) - {"verify"})
    if unknown:
        raise ValueError(f"a {kind.name} index takes no load option(s) {', '.join(unknown)}; "
                         f"it accepts: {', '.join(accepted) or 'none'}")
    try:
        searcher = kind.open(root, manifest, docids, **options)
    except (KeyError, TypeError, AttributeError, IndexError, FileNotFoundError) as e:
        # the schemas cover the fields every kind needs; this covers the rest
        raise IndexFormatError(f"{root}/manifest.json: does not describe a usable {kind.name} index "
                               f"({type(e).__name__}: {e})") from None
    return Opened(manifest, docids, searcher)


def open_manifest_kind(manifest: dict, where: str) -> Kind:
    """The kind a manifest names, its fields checked (IndexFormatError for an unknown one)."""
    try:
        kind = get(manifest["kind"], manifest["backend"])
    except ValueError as e:
        raise IndexFormatError(f"{where}: {e}") from None
    kind.check_manifest(manifest, where)
    return kind


DOC_ORDER = "_doc_order"  # what a kind's write returns when it renumbered the documents: new row i = doc order[i]
REORDER_AUTO_DOCS = 100_000  # --reorder auto reorders (BP) from this many documents: docs/BENCHMARKS.md
# "Reordering by default" (SciFact, 5k: 2-3% larger, no faster; 1M SPLADE-like: 17% smaller, 9.5x pruned)
REORDER_HELP = ("renumber documents so similar ones are adjacent (bp: recursive graph bisection): faster pruned "
                "search and smaller postings at scale; none: keep the corpus order; auto: bp from "
                f"{REORDER_AUTO_DOCS:,} documents")  # the bm25 and sparse kinds' --reorder


def reorder(index, writer: IndexWriter, how: str) -> tuple[Any, dict]:
    """An inverted index renumbered by recursive graph bisection when ``how`` asks for it
    (``bp``; ``auto``: from ``REORDER_AUTO_DOCS`` documents, below which BP measured no gain),
    and the manifest entries saying so (``reordered``; ``DOC_ORDER`` when renumbered)."""
    if how == "bp" or (how == "auto" and index.num_docs >= REORDER_AUTO_DOCS):
        order = index.bp_order()
        return index.renumbered(order, writer.tmp), {DOC_ORDER: order, "reordered": "bp"}
    return index, {"reordered": "none"}


def write_kind(kind: Kind, corpus, writer: IndexWriter, settings, *, store_docs: bool = True,
               on_doc: Callable[[Doc], None] | None = None, write_options: dict | None = None) -> dict:
    """The one pass over a corpus: documents stream to ``kind.write`` while their ids, the corpus
    fingerprint and (``store_docs``) their text are recorded; returns the manifest entries
    (the kind's, plus kind, backend, doc_count, settings, corpus). ``corpus`` is a path (read
    with the kind's reader) or an iterable of Docs. ``write_options`` go to ``kind.write`` as
    keywords (what a shard takes from its build: an encoder already loaded, shared statistics)."""
    settings = kind.prepare(settings)
    docs = kind.read(corpus, settings) if isinstance(corpus, (str, os.PathLike)) else iter(corpus)
    store = DocStoreWriter(writer) if store_docs else None
    fingerprint = CorpusFingerprint()
    ids: list[str] = []
    finished = False

    def stream() -> Iterator[Doc]:
        nonlocal finished
        for doc in docs:
            ids.append(doc.docid)
            fingerprint.add(doc)
            if store is not None:
                store.add(doc.title, doc.text)
            if on_doc is not None:
                on_doc(doc)
            yield doc
        finished = True

    source = stream()
    entries = dict(kind.write(source, writer, settings, **(write_options or {})))
    order = entries.pop(DOC_ORDER, None)  # the kind renumbered the documents (e.g. reordered them)
    if not finished and next(source, None) is not None:
        raise RuntimeError(f"kind {kind.name!r} did not read every document")
    where = os.fspath(corpus) if isinstance(corpus, (str, os.PathLike)) else "the document stream"
    if not ids:
        raise DataError("the corpus has no documents", path=where)
    if order is not None:
        ids = [ids[i] for i in order]
    if store is not None:
        store.close(order)
    writer.write_docids(ids)
    writer.save_array(DOCID_ORDER, docid_order(ids))
    path = os.fspath(Path(corpus).absolute()) if isinstance(corpus, (str, os.PathLike)) else None
    return {**entries, "kind": kind.name, "backend": kind.backend, "doc_count": len(ids),
            "settings": dataclasses.asdict(settings),
            "corpus": {"path": path, "fingerprint": fingerprint.hexdigest()}}


def build(kind: Kind, corpus, out, settings, *, overwrite: bool = False, store_docs: bool = True,
          on_doc: Callable[[Doc], None] | None = None) -> Path:
    """``write_kind`` into a new index directory ``out`` (atomic, single writer)."""
    with IndexWriter(out, overwrite=overwrite) as writer:
        writer.finish(write_kind(kind, corpus, writer, settings, store_docs=store_docs, on_doc=on_doc))
    return Path(out)
