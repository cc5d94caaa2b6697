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
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, NamedTuple

from indexing.manifest import (IndexFormatError, IndexWriter, WriterLock, read_manifest, safe_join,
                               write_manifest)
from indexing.searcher import Hit, Run
from eval.fusion import check_fusion, fuse_one


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


def write_index(corpus, writer: IndexWriter, *, dense_model: str, sparse: str = "bm25",
                sparse_model: str | None = None, method: str = "rrf", weights: list[float] | None = None,
                depth: int = 1000, rrf_k: int = 60, device: str = "auto", on_doc=None) -> dict:
    """Build a sparse (bm25 or splade) and a dense component from one corpus."""
    from retriever.api import Retriever

    fusion = _fusion(method, weights, depth, rrf_k)
    if sparse not in ("bm25", "splade"):
        raise ValueError(f"sparse must be 'bm25' or 'splade', not {sparse!r}")
    if sparse == "splade":
        if not sparse_model:
            raise ValueError("--sparse splade needs --sparse-model")
        s = Retriever.build(corpus, writer.tmp / "sparse", kind="sparse", model=sparse_model,
                            device=device, store_docs=False)
    else:
        s = Retriever.build(corpus, writer.tmp / "sparse", kind="bm25", store_docs=False)
    d = Retriever.build(corpus, writer.tmp / "dense", kind="dense", model=dense_model, device=device,
                        store_docs=False)
    if s.docids != d.docids:
        raise IndexFormatError("components disagree on the corpus documents")  # cannot happen
    if on_doc is not None:
        from indexing.corpus import iter_corpus

        for doc in iter_corpus(corpus):
            on_doc(doc)
    writer.write_docids(d.docids)
    return {"kind": "hybrid", "backend": "native", "doc_count": len(d.docids),
            "components": [{"name": "sparse", "path": "sparse", "kind": s.kind},
                           {"name": "dense", "path": "dense", "kind": d.kind}],
            "fusion": asdict(fusion)}


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
    for name, path in sources.items():
        m = read_manifest(path, verify=False)
        _check_slot(name, m["kind"], path)
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
                       "components": parts, "fusion": asdict(fusion)})
    return Path(out)


class HybridSearcher:
    def __init__(self, components: list[tuple[str, object]], fusion: FusionSettings) -> None:
        self.components = components  # [(name, Retriever)]
        self.fusion = fusion

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


def open_index(root, manifest: dict, docids: list[str], device: str = "cpu") -> HybridSearcher:
    from retriever.api import Retriever

    components = []
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
        r = Retriever.load(path, **({"device": device} if part["kind"] == "dense" else {}))
        if r.kind != part["kind"]:
            raise IndexFormatError(f"{root}: component {path} is a {r.kind} index, the manifest "
                                   f"says {part['kind']}")
        if r.docids != docids:
            raise IndexFormatError(f"{root}: component {path} no longer indexes the same documents")
        components.append((part["name"], r))
    order = {name: i for i, name in enumerate(SLOTS)}
    components.sort(key=lambda c: order[c[0]])  # weights are (sparse, dense)
    try:
        fusion = FusionSettings(**manifest["fusion"])
    except ValueError as e:
        raise IndexFormatError(f"{root}/manifest.json: fusion settings: {e}") from None
    return HybridSearcher(components, fusion)


def store_fusion(root: str | os.PathLike, fusion: FusionSettings, tuned: dict | None = None) -> None:
    """Rewrite a hybrid manifest's fusion settings (atomic replace of manifest.json), as the
    index's writer (IndexBusyError while another process writes it)."""
    lock = WriterLock(Path(root).absolute())
    try:
        manifest = read_manifest(root, verify=False)
        if manifest.get("kind") != "hybrid":
            raise ValueError(f"{root} is not a hybrid index")
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
