"""Sharded indexes (backend ``sharded`` of the bm25, sparse and dense kinds): one collection split
in shards, searched as one index.

Layout (built by :mod:`retriever.shards`)::

    OUT/manifest.json    kind K, backend "sharded", doc_count, settings, corpus, and
                         shards: [{path: "shards/000", offset, doc_count, manifest_sha256}, ...],
                         shared: what the shards were built with (below)
    OUT/docids.txt       every doc id in corpus order: global row = shard offset + local row
    OUT/docid_order.npy  the global tie order
    OUT/shards/NNN/      a complete native index of kind K: ``Retriever.load`` opens it alone
    OUT/shared/          BM25: the collection statistics every shard was scored with (so each
                         document scores exactly as in one index); dense IVF/PQ: the trained
                         empty faiss index (coarse quantizer, PQ codebook) every shard copied

The top manifest lists its own files; each shard's manifest lists the shard's (sizes, sha256)
and the top records that manifest's checksum, so a shard damaged or replaced by another index is
refused naming it (``verify`` recomputes every checksum, the shards' included).

Search: the query is encoded once (by the encoder shard 0's manifest describes); every shard
returns its own top k, best first with ties by external doc id ascending (the rule of every
searcher); :func:`merge_top_k` keeps the k best of their union by (score descending, doc id
ascending). A document in the global top k is in its shard's top k, so the merge is exact: the
result equals one index holding every shard's documents with the same scores.
"""

from __future__ import annotations

import bisect
import heapq
import inspect
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from indexing.docstore import DocStore
from indexing.manifest import CHECKSUM_KEY, IndexFormatError, check_fields, read_manifest, safe_join
from indexing.results import Hit, Run
from retriever import kinds
from retriever.kinds import Kind, register

BACKEND = "sharded"
SHARDS_DIR = "shards"
SHARED_DIR = "shared"
KINDS = ("bm25", "sparse", "dense")

Candidates = list[tuple[str, float]]  # (doc id, score), best first, ties by doc id ascending


def shard_path(i: int) -> str:
    return f"{SHARDS_DIR}/{i:03d}"


def _order(hit: tuple[str, float]):
    return -hit[1], hit[0]


def merge_top_k(lists: Iterable[Candidates], k: int) -> Candidates:
    """The k best of several lists, each sorted by (score descending, doc id ascending), in that
    same order."""
    return list(islice(heapq.merge(*lists, key=_order), k))


# -- layout -----------------------------------------------------------------------------------

_ENTRY = [("path", "str"), ("offset", "int"), ("doc_count", "int"), ("manifest_sha256", "str")]


def check_layout(root: Path, manifest: dict, num_docs: int, verify: bool = False) -> list[tuple[Path, dict, dict]]:
    """(directory, entry, shard manifest) of every shard, checked: entries well formed and
    contiguous over the ``num_docs`` documents, each shard present, of this kind, and the very
    index the top manifest recorded (its files' sizes, and with ``verify`` their checksums).
    IndexFormatError naming the shard otherwise."""
    where = f"{root / 'manifest.json'}"
    entries = manifest["shards"]
    if not entries:
        raise IndexFormatError(f"{where}: a sharded index lists no shards")
    out, offset = [], 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise IndexFormatError(f"{where}: shards[{i}] must be an object")
        check_fields(entry, _ENTRY, where, prefix=f"shards[{i}].")
        if entry["offset"] != offset or entry["doc_count"] < 1:
            raise IndexFormatError(f"{where}: shard {entry['path']} covers rows {entry['offset']}.."
                                   f"{entry['offset'] + entry['doc_count'] - 1}, expected to start at {offset}")
        offset += entry["doc_count"]
        path = safe_join(root, entry["path"], f"shard {i}")
        if not path.is_dir():
            raise IndexFormatError(f"{root}: shard {entry['path']} is missing ({path})")
        try:
            m = read_manifest(path, verify=verify)
        except IndexFormatError as e:
            raise IndexFormatError(f"{root}: shard {entry['path']} is damaged: {e}") from None
        if m.get(CHECKSUM_KEY) != entry["manifest_sha256"]:
            raise IndexFormatError(f"{root}: shard {entry['path']} is not the index this one was built "
                                   "with (its manifest changed); rebuild the sharded index")
        if m["kind"] != manifest["kind"] or m["backend"] != "native" or m["doc_count"] != entry["doc_count"]:
            raise IndexFormatError(f"{root}: shard {entry['path']} is a {m['kind']} ({m['backend']}) index "
                                   f"of {m['doc_count']} documents; the manifest says {manifest['kind']} "
                                   f"of {entry['doc_count']}")
        out.append((path, entry, m))
    if offset != num_docs:
        raise IndexFormatError(f"{where}: the shards hold {offset} documents, the index {num_docs}")
    return out


# -- encoding a query once --------------------------------------------------------------------

def query_encoder(kind: str, shard_root: Path, shard_manifest: dict, options: dict
                  ) -> Callable[[list[str]], list] | None:
    """texts -> encoded queries for every shard: ``{term: weight}`` (bm25, sparse) or vector rows
    (dense). None for a sparse index built from vectors without a model (term-weight queries only)."""
    if kind == "bm25":
        from retriever.kinds import bm25

        return bm25.query_encoder(shard_root, shard_manifest).encode_queries
    if kind == "dense":
        from retriever.kinds import dense

        encoder = options.get("encoder") or dense.query_encoder(
            shard_root, shard_manifest, options.get("model"), options.get("device", "cpu"))
        return lambda texts: list(encoder.encode_queries(list(texts)))
    from retriever.kinds import sparse

    found = sparse.query_encoder(shard_root, shard_manifest, options.get("model"))
    if found is None:
        return None
    encode, vocab = found
    return lambda texts: [{vocab[i]: float(w) for i, w in zip(*v)} for v in encode(list(texts))]


# -- shards searched together in one process ----------------------------------------------------

class ShardGroup:
    """Some shards of an index, opened in this process and searched in parallel threads (the
    kernels and faiss release the GIL); ``search_encoded`` merges their results."""

    def __init__(self, kind: str, searchers: list, encoder=None) -> None:
        self.kind = kind
        self.searchers = searchers
        self.encoder = encoder  # dense: the query encoder the shards share
        self._pool = ThreadPoolExecutor(max(1, len(searchers)), thread_name_prefix="shard")

    def _one(self, searcher, encoded: list, k: int) -> list[Candidates]:
        if self.kind == "dense":
            if not encoded:
                return []
            threads = 1 if len(self.searchers) > 1 else None
            found = searcher.search_vectors(np.stack(encoded), k, threads=threads)
            return [list(zip(ids, scores)) for ids, scores in found]
        # impact scores before the division by the quantisation scale: the order one index gives
        # (two sums can differ there and be equal once divided); ShardedSearcher divides at the end
        return [list(zip(ids, scores)) for ids, scores in searcher.search_raw(encoded, k)]

    def search_encoded(self, encoded: list, k: int) -> list[Candidates]:
        """Per query, the k best of these shards (ties by doc id ascending)."""
        futures = [self._pool.submit(self._one, s, encoded, k) for s in self.searchers]
        parts = [f.result() for f in futures]
        return [merge_top_k([p[q] for p in parts], k) for q in range(len(encoded))]

    def submit(self, encoded: list, k: int) -> Future:
        future: Future = Future()
        try:
            future.set_result(self.search_encoded(encoded, k))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(e)
        return future


def open_group(root: Path, manifest: dict, docids: list[str], indices: list[int], options: dict,
               layout: list | None = None, verify: bool = True) -> ShardGroup:
    """Open shards ``indices`` of the sharded index at ``root`` in this process (``verify``: what
    each shard opens later, its heads, is checked against its checksums)."""
    layout = layout if layout is not None else check_layout(root, manifest, len(docids))
    kind = manifest["kind"]
    options = dict(options)
    encoder = None
    if kind == "dense":
        from retriever.kinds import dense

        path0, _, m0 = layout[indices[0]]
        encoder = dense.query_encoder(path0, m0, options.get("model"), options.get("device", "cpu"))
        options["encoder"] = encoder
    searchers = []
    for i in indices:
        path, entry, _ = layout[i]
        opened = kinds.open_dir(path, verify=verify, files_checked=True, **options)  # (by check_layout)
        lo = entry["offset"]
        if opened.docids != docids[lo:lo + entry["doc_count"]]:
            raise IndexFormatError(f"{root}: shard {entry['path']} no longer holds rows {lo}.."
                                   f"{lo + entry['doc_count'] - 1} of docids.txt")
        searchers.append(opened.searcher)
    return ShardGroup(kind, searchers, encoder)


class ShardedDocStore:
    """The stored texts of every shard, by global row (None where a shard stores none)."""

    def __init__(self, roots: list[Path], offsets: list[int]) -> None:
        self.stores = [DocStore(r) if DocStore.exists(r) else None for r in roots]
        self.offsets = offsets
        self.total = 0
        for r, s in zip(roots, self.stores):
            self.total += len(s) if s is not None else 0

    def usable(self) -> bool:
        return all(s is not None for s in self.stores)

    def __len__(self) -> int:
        return self.total

    def get(self, i: int) -> dict:
        s = bisect.bisect_right(self.offsets, i) - 1
        return self.stores[s].get(i - self.offsets[s])


class ShardedSearcher:
    """Searches every shard group with one encoding of each query and merges their top k."""

    def __init__(self, kind: str, encode: Callable[[list[str]], list] | None, groups: list,
                 doc_store: ShardedDocStore | None = None, scale: float | None = None) -> None:
        self.kind = kind
        self.encode = encode
        self.groups = groups  # each offers submit(encoded, k) -> Future[list[Candidates]]
        self.doc_store = doc_store if doc_store is not None and doc_store.usable() else None
        self.scale = scale  # quantised impacts: the groups' scores are raw sums, divided here

    def _encode(self, texts: list[str]) -> list:
        if self.encode is None:
            raise ValueError("this index has no query encoder (built from precomputed vectors "
                             "without --model); search it with search_weights({term: weight})")
        return self.encode(texts)

    def search_encoded(self, encoded: list, k: int) -> list[Candidates]:
        if not encoded:
            return []
        futures = [g.submit(encoded, k) for g in self.groups]
        parts = [f.result() for f in futures]
        merged = [merge_top_k([p[q] for p in parts], k) for q in range(len(encoded))]
        if self.scale:  # the same float32 division one index makes
            scale = np.float32(self.scale)
            merged = [[(d, float(np.float32(s) / scale)) for d, s in hits] for hits in merged]
        return merged

    def search(self, text: str, k: int = 10) -> list[Hit]:
        return [Hit(d, s) for d, s in self.search_encoded(self._encode([text]), k)[0]]

    def search_weights(self, weights: dict[str, float], k: int = 10) -> list[Hit]:
        if self.kind == "dense":
            raise ValueError("a dense index does not take term-weight queries")
        return [Hit(d, s) for d, s in self.search_encoded([dict(weights)], k)[0]]

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        qids = list(queries)
        if not qids:
            return {}
        found = self.search_encoded(self._encode([queries[q] for q in qids]), k)
        return {q: dict(hits) for q, hits in zip(qids, found)}


def open_sharded(root, manifest: dict, docids: list[str], options: dict, verify: bool = True) -> ShardedSearcher:
    """Open every shard in this process (one group, a thread per shard)."""
    root = Path(root)
    layout = check_layout(root, manifest, len(docids), verify)
    group = open_group(root, manifest, docids, list(range(len(layout))), options, layout, verify)
    path0, _, m0 = layout[0]
    encode = query_encoder(manifest["kind"], path0, m0, {**options, "encoder": group.encoder})
    store = ShardedDocStore([p for p, _, _ in layout], [e["offset"] for _, e, _ in layout])
    return ShardedSearcher(manifest["kind"], encode, [group], store, impact_scale(m0))


def impact_scale(shard_manifest: dict) -> float | None:
    """The quantisation scale of a shard's impacts (None: float impacts, BM25, dense)."""
    return (shard_manifest.get("impacts") or {}).get("scale") if shard_manifest["kind"] == "sparse" else None


def _write(docs, writer, settings) -> dict:
    raise ValueError("a sharded index is built by retriever.shards: Retriever.build(..., shards=N) "
                     "or `retriever index --shards N`")


def _opener(kind: str) -> Callable[..., Any]:
    """``open`` of the sharded backend of ``kind``: takes the native kind's load options."""
    base = inspect.signature(kinds.get(kind, "native").open)

    def open_index(root, manifest, docids, verify=True, **options):
        return open_sharded(root, manifest, docids, options, verify)

    params = [p for name, p in base.parameters.items() if name not in ("encoder", "verify")]
    params.append(inspect.Parameter("verify", inspect.Parameter.KEYWORD_ONLY, default=True))
    open_index.__signature__ = base.replace(parameters=params)
    return open_index


SCHEMA = (("shards", "list"), ("shared", "dict"))

for _name in KINDS:
    _native = kinds.get(_name, "native")
    register(Kind(_name, BACKEND, _native.settings, _write, _opener(_name), schema=SCHEMA,
                  read=_native.read, prepare=_native.prepare,
                  help=f"{_native.help}, split in shards searched as one"))
