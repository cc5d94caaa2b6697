"""The ``hybrid`` index kind: two component indexes (sparse and dense) and a fusion setting.

A hybrid directory holds its components as sub-indexes (``sparse/``, ``dense/``): built from a
corpus, or, when composed from existing indexes with ``retriever hybrid``, linked into it (hard
links, a copy across filesystems), so the hybrid is self-contained and its manifest never points
outside its directory. The sparse component is a bm25 or sparse index, the dense one a dense
index. Its manifest records the fusion method, weights, per-component depth and RRF constant; ``retriever
tune-fusion`` searches them on a dev split and rewrites that part of the manifest.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, NamedTuple

from eval.fusion import MAX_RRF_K, MAX_WEIGHT, Method, check_fusion, fuse_one
from indexing.corpus import Doc
from indexing.manifest import (IndexBusyError, IndexFormatError, IndexWriter, WriterLock, read_manifest, safe_join,
                               write_manifest)
from indexing.results import Hit, Run
from retriever import kinds
from retriever.kinds import Kind, check_settings, option, register


@dataclass
class FusionSettings:
    method: str = "rrf"
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    depth: int = 1000
    rrf_k: int = 60

    def __post_init__(self) -> None:
        if not isinstance(self.weights, list) or len(self.weights) != 2:
            raise ValueError(f"a hybrid index fuses two components; got weights {self.weights!r}")
        check_fusion(self.method, self.weights, self.depth, self.rrf_k)


class ExplainedHit(NamedTuple):
    docid: str
    score: float
    parts: dict  # component name -> {"score": float | None, "rank": int | None}


def _fusion(method, weights, depth, rrf_k) -> FusionSettings:
    return FusionSettings(method=method, weights=list(weights) if weights else [1.0, 1.0],
                          depth=depth, rrf_k=rrf_k)


@dataclass(frozen=True)
class Settings:
    dense_model: str | None = option(None, "the dense component's model")
    sparse: Literal["bm25", "splade"] = option("bm25", "the sparse component: BM25, or SPLADE with --sparse-model")
    sparse_model: str | None = option(None, "the SPLADE model of --sparse splade")
    method: str = option("rrf", "fusion method (tune it with tune-fusion)", choices=[m.value for m in Method])
    weights: list[float] = option([1.0, 1.0], f"fusion weights: sparse, dense (|w| <= {MAX_WEIGHT:g})")
    depth: int = option(1000, "hits taken from each component", min=1)
    rrf_k: int = option(60, "RRF constant", min=0, max=MAX_RRF_K)
    device: str = option("auto", "auto | cpu | cuda[:N]")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.dense_model is None:
            raise ValueError("a hybrid index needs --dense-model")
        if self.sparse == "splade" and not self.sparse_model:
            raise ValueError("--sparse splade needs --sparse-model")
        self.fusion()  # checks the fusion settings

    def fusion(self) -> FusionSettings:
        return _fusion(self.method, self.weights, self.depth, self.rrf_k)

    def components(self) -> list[tuple[str, Kind, Any]]:
        """(slot, kind, settings) of the two components."""
        if self.sparse == "splade":
            sparse = kinds.get("sparse")
            sparse_settings = sparse.make_settings(model=self.sparse_model, device=self.device)
        else:
            sparse = kinds.get("bm25")
            sparse_settings = sparse.make_settings()
        dense = kinds.get("dense")
        return [("sparse", sparse, sparse_settings),
                ("dense", dense, dense.make_settings(model=self.dense_model, device=self.device))]


_END = object()


def fan_out(items: Iterable, consumers: list[Callable[[Iterator], Any]], buffer: int = 1024) -> list:
    """Feed one pass over ``items`` to several consumers running in threads (each gets every
    item, in order, through a bounded queue); returns their results. The first consumer error
    stops the others and is raised."""
    queues = [queue.Queue(maxsize=buffer) for _ in consumers]
    results: list = [None] * len(consumers)
    errors: list = []
    stop = threading.Event()
    done = [False] * len(consumers)

    def drain(q: queue.Queue) -> Iterator:
        while True:
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    raise RuntimeError("stopped: another consumer failed") from None
                continue
            if item is _END:
                return
            yield item

    def run(i: int) -> None:
        try:
            results[i] = consumers[i](drain(queues[i]))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            errors.append(e)
            stop.set()
        finally:
            done[i] = True

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(consumers))]
    for t in threads:
        t.start()

    def put(i: int, item) -> None:
        while not done[i] and not stop.is_set():
            try:
                queues[i].put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    try:
        for item in items:
            if stop.is_set():
                break
            for i in range(len(queues)):
                put(i, item)
        for i in range(len(queues)):
            put(i, _END)
    except BaseException:
        stop.set()
        raise
    finally:
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results


def write(docs: Iterator[Doc], writer: IndexWriter, settings: Settings) -> dict:
    """Build the sparse and the dense component (sub-indexes ``sparse/`` and ``dense/``) from one
    pass over the documents, each in its own thread."""
    parts = settings.components()

    def builder(slot: str, kind: Kind, part_settings):
        def consume(stream: Iterator[Doc]) -> dict:
            with IndexWriter(writer.tmp / slot) as sub:
                entries = kinds.write_kind(kind, stream, sub, part_settings, store_docs=False)
                sub.finish(entries)
            return entries
        return consume

    built = fan_out(docs, [builder(*p) for p in parts])
    return {"components": [{"name": slot, "path": slot, "kind": entries["kind"]}
                           for (slot, _, _), entries in zip(parts, built)],
            "fusion": asdict(settings.fusion())}


# the index kinds each component slot takes
SLOTS = {"sparse": ("bm25", "sparse"), "dense": ("dense",)}


def _check_slot(name: str, kind, where) -> None:
    if kind not in SLOTS[name]:
        raise ValueError(f"{where} is a {kind} index; the {name} part of a hybrid must be "
                         f"{' or '.join(SLOTS[name])}")


def link_tree(src: Path, dst: Path) -> None:
    """Recreate directory ``src`` at ``dst`` with hard links (copies where links fail)."""
    dst.mkdir(parents=True)
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_symlink():
            raise IndexFormatError(f"{p}: an index may not hold symbolic links")
        if p.is_dir():
            target.mkdir(exist_ok=True)
            continue
        try:
            os.link(p, target)
        except OSError:  # another filesystem, or links not allowed
            shutil.copy2(p, target)


def compose(sparse_index: str | os.PathLike, dense_index: str | os.PathLike, out: str | os.PathLike, *,
            method: str = "rrf", weights: list[float] | None = None, depth: int = 1000, rrf_k: int = 60,
            overwrite: bool = False) -> Path:
    """A hybrid index of two existing indexes over the same corpus, linked into ``out``."""
    fusion = _fusion(method, weights, depth, rrf_k)
    sources = {"sparse": Path(sparse_index), "dense": Path(dense_index)}
    parts = []
    docids = None
    corpus = None
    for name, path in sources.items():
        m = read_manifest(path, verify=False)
        _check_slot(name, m["kind"], path)
        corpus = corpus or m.get("corpus")
        ids = (path / "docids.txt").read_text(encoding="utf-8")
        if docids is not None and ids != docids:
            raise ValueError(f"{sparse_index} and {dense_index} index different documents; "
                             "a hybrid needs both over the same corpus")
        docids = ids
        parts.append({"name": name, "path": name, "kind": m["kind"], "source": str(path.absolute())})
    with IndexWriter(out, overwrite=overwrite) as writer:
        for name, path in sources.items():
            link_tree(path, writer.tmp / name)
        (writer.tmp / "docids.txt").write_text(docids, encoding="utf-8")
        writer.finish({"kind": "hybrid", "backend": "native", "doc_count": docids.count("\n"),
                       "components": parts, "fusion": asdict(fusion), "corpus": corpus,
                       "settings": {"composed": True, **asdict(fusion)}})
    return Path(out)


class HybridSearcher:
    def __init__(self, components: list[tuple[str, object]], fusion: FusionSettings) -> None:
        self.components = components  # [(name, searcher)]
        self.fusion = fusion
        self.doc_store = None  # (open_index: a component's stored texts)

    def _fuse(self, rankings: list[Mapping[str, float]], k: int) -> dict[str, float]:
        f = self.fusion
        return fuse_one(rankings, f.method, f.weights, f.depth, f.rrf_k, k)

    def component_runs(self, queries: Mapping[str, str], threads: int = 1) -> list[Run]:
        depth = self.fusion.depth
        return [r.search_batch(queries, k=depth, threads=threads) for _, r in self.components]

    def search(self, text: str, k: int = 10, explain: bool = False) -> list:
        rankings = [{h.docid: h.score for h in r.search(text, k=self.fusion.depth)} for _, r in self.components]
        fused = self._fuse(rankings, k)
        if not explain:
            return [Hit(d, s) for d, s in fused.items()]
        ranks = [{d: i for i, d in enumerate(r, 1)} for r in rankings]
        return [ExplainedHit(d, s, {name: {"score": rankings[i].get(d), "rank": ranks[i].get(d)}
                                    for i, (name, _) in enumerate(self.components)})
                for d, s in fused.items()]

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        runs = self.component_runs(queries, threads)
        return {q: self._fuse([run.get(q, {}) for run in runs], k) for q in queries}


def open_index(root, manifest: dict, docids: list[str], device: str = "cpu", verify: bool = True) -> HybridSearcher:
    """Open both components (their files are listed in the hybrid's manifest, checked with it)."""
    components = []
    store = None  # the first component's stored texts, by the hybrid's rows
    names = [part["name"] for part in manifest["components"]]
    if sorted(names) != sorted(SLOTS):
        raise IndexFormatError(f"{root}: a hybrid index has components {' and '.join(SLOTS)}, "
                               f"this one {names}")
    for part in manifest["components"]:
        if os.path.isabs(part["path"]):
            raise IndexFormatError(
                f"{root}: component {part['name']} is referenced by absolute path ({part['path']}), "
                "as hybrids composed by older versions were; an index may not point outside its "
                "directory: recompose it with `retriever hybrid SPARSE DENSE OUT --overwrite`")
        path = safe_join(root, part["path"], f"component {part['name']}")
        if not path.is_dir():
            raise IndexFormatError(f"{root}: component {part['name']} index {path} is missing")
        _check_slot(part["name"], part["kind"], path)
        opened = kinds.open_dir(path, verify=verify, files_checked=True, **({"device": device} if part["kind"] == "dense" else {}))
        if opened.manifest["kind"] != part["kind"]:
            raise IndexFormatError(f"{root}: component {path} is a {opened.manifest['kind']} index, "
                                   f"the manifest says {part['kind']}")
        if opened.docids != docids and set(opened.docids) != set(docids):  # (a component may be reordered)
            raise IndexFormatError(f"{root}: component {path} no longer indexes the same documents")
        components.append((part["name"], opened.searcher))
        if store is None:
            store = _component_store(path, getattr(opened.searcher, "doc_store", None), opened.docids, docids)
    order = {name: i for i, name in enumerate(SLOTS)}
    components.sort(key=lambda c: order[c[0]])  # weights are (sparse, dense)
    try:
        fusion = FusionSettings(**manifest["fusion"])
    except ValueError as e:
        raise IndexFormatError(f"{root}/manifest.json: fusion settings: {e}") from None
    searcher = HybridSearcher(components, fusion)
    searcher.doc_store = store
    return searcher


class _RowMappedStore:
    """A component's document store read by the hybrid's rows (a component may order its
    documents otherwise: reordered at build)."""

    def __init__(self, store, rows: list[int]) -> None:
        self.store, self.rows = store, rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, i: int) -> dict:
        return self.store.get(self.rows[i])


def _component_store(path: Path, store, component_ids: list[str], docids: list[str]):
    """The stored texts of a component (None when it stores none), addressed by the hybrid's rows."""
    from indexing.docstore import DocStore

    if store is None:
        if not DocStore.exists(path):
            return None
        store = DocStore(path)
    if component_ids == docids:
        return store
    row = {d: i for i, d in enumerate(component_ids)}
    return _RowMappedStore(store, [row[d] for d in docids])


def store_fusion(root: str | os.PathLike, fusion: FusionSettings, tuned: dict | None = None,
                 tuned_on: dict | None = None) -> None:
    """Rewrite a hybrid manifest's fusion settings (atomic replace of manifest.json), as the
    index's writer (IndexBusyError while another process writes it). ``tuned_on``: the manifest
    the setting was tuned on; refused (nothing written) if the index was rebuilt since."""
    lock = WriterLock(Path(root).absolute())
    try:
        manifest = read_manifest(root, verify=False)
        if manifest.get("kind") != "hybrid":
            raise ValueError(f"{root} is not a hybrid index")
        if tuned_on is not None and any(manifest.get(k) != tuned_on.get(k) for k in ("created", "components", "files")):
            raise IndexBusyError(f"{root} was rebuilt while it was tuned (built {manifest.get('created')}, "
                                 f"tuned on the index built {tuned_on.get('created')}); nothing stored: "
                                 "tune it again")
        manifest["fusion"] = asdict(fusion)
        if tuned is not None:
            manifest["fusion_tuning"] = tuned
        write_manifest(root, manifest)
    finally:
        lock.release()


def fusion_grid(depth: int) -> list[FusionSettings]:
    """Candidate settings tune-fusion tries: RRF constants, and weights 0..1 for the score methods."""
    grid = [FusionSettings("rrf", [1.0, 1.0], depth, k) for k in (5, 10, 20, 40, 60, 100)]
    grid += [FusionSettings("rrf", [a, round(1.0 - a, 2)], depth, 60) for a in (0.2, 0.3, 0.4, 0.6, 0.7, 0.8)]
    alphas = [i / 20 for i in range(21)]
    grid += [FusionSettings(m, [a, round(1.0 - a, 2)], depth, 60) for m in ("minmax", "zscore") for a in alphas]
    return grid


def tune(searcher: HybridSearcher, qrels, queries: Mapping[str, str], metric: str = "ndcg@10",
         threads: int = 1) -> list[tuple[FusionSettings, float]]:
    """Every grid setting with its ``metric`` on (qrels, queries), best first.

    Component runs are computed once; each setting only re-fuses them.
    """
    from eval.metrics import evaluate
    from eval.fusion import fuse

    runs = searcher.component_runs(queries, threads)
    results = []
    for setting in fusion_grid(searcher.fusion.depth):
        fused = fuse(runs, setting.method, setting.weights, setting.depth, setting.rrf_k, k=setting.depth)
        results.append((setting, evaluate(qrels, fused, [metric]).metrics[metric]))
    return sorted(results, key=lambda x: -x[1])


KIND = register(Kind(
    "hybrid", "native", Settings, write, open_index,
    schema=(("components", "list"), ("fusion", "dict"), ("fusion.method", "str"), ("fusion.weights", "list"),
            ("fusion.depth", "int"), ("fusion.rrf_k", "int")),
    help="a sparse (BM25 or SPLADE) and a dense index, fused (RRF, min-max, z-score, sum)"))
