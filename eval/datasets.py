"""Datasets by name: ``beir/scifact``, ``beir/cqadupstack/android``, ``msmarco-passage/dev/small``,
or any ``irds:<ir_datasets id>``, resolved through ``ir_datasets`` (pip extra ``datasets``: its
download, cache and checksums) and materialised ONCE into our BEIR layout under
``$RETRIEVER_HOME/datasets/NAME`` (default ``~/.cache/retriever``): ``corpus.jsonl``,
``queries.jsonl``, ``qrels/SPLIT.tsv`` and ``source.json``. Every later step reads plain files.

A path that exists is always a path; anything else that looks like a dataset name is resolved.
Offline (or for the BEIR sets that are not public: bioasq, signal1m, trec-news, robust04) the
error names the dataset and the directory to fill by hand in the same layout; files put there
are used as they are.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from indexing.errors import DataError
from indexing.io import atomic_write_json, dir_size

BEIR_PUBLIC = ["arguana", "climate-fever", "dbpedia-entity", "fever", "fiqa", "hotpotqa", "msmarco",
               "nfcorpus", "nq", "quora", "scidocs", "scifact", "trec-covid", "webis-touche2020"]
CQADUPSTACK = ["android", "english", "gaming", "gis", "mathematica", "physics", "programmers", "stats",
               "tex", "unix", "webmasters", "wordpress"]
BEIR_NOT_PUBLIC = ["bioasq", "signal1m", "trec-news", "robust04"]
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Source:
    """Where a named dataset comes from in ir_datasets: the id holding its documents and, per
    split, the id holding its queries and qrels (None: not downloadable; filled by hand)."""

    name: str
    docs: str | None
    splits: dict[str, str]


def _beir(name: str, irds: str | None = None) -> Source:
    base = irds or f"beir/{name}"
    return Source(f"beir/{name}", base, {})  # splits discovered from the registry


def known() -> dict[str, Source]:
    """The names `retriever datasets list` shows (any ``irds:ID`` works too)."""
    out = {f"beir/{n}": _beir(n) for n in BEIR_PUBLIC}
    out["beir/webis-touche2020"] = Source("beir/webis-touche2020", "beir/webis-touche2020/v2", {})
    out.update({f"beir/cqadupstack/{f}": _beir(f"cqadupstack/{f}") for f in CQADUPSTACK})
    out.update({f"beir/{n}": Source(f"beir/{n}", None, {}) for n in BEIR_NOT_PUBLIC})
    out["msmarco-passage/dev/small"] = Source("msmarco-passage/dev/small", "msmarco-passage/dev/small",
                                              {"dev": "msmarco-passage/dev/small"})
    return dict(sorted(out.items()))


def home() -> Path:
    root = os.environ.get("RETRIEVER_HOME") or os.environ.get("RETRIEVER_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "retriever"


def cache_path(name: str) -> Path:
    """The directory a named dataset is materialised in."""
    safe = name.removeprefix("irds:").replace("/", "__")
    if safe in ("", ".", "..") or "\\" in safe or "\x00" in safe:
        raise DataError("not a dataset name (it would name the datasets directory or its parent)", path=name)
    return home() / "datasets" / safe


def is_name(value: str) -> bool:
    """Whether ``value`` (not an existing path) should be read as a dataset name."""
    return value.startswith("irds:") or value in known()


def is_materialised(name: str) -> bool:
    path = cache_path(name)
    return (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file()


def resolve(value: str | os.PathLike) -> Path:
    """A BEIR directory for a path or a dataset name (materialised on first use)."""
    path = Path(value)
    if path.exists() or not is_name(str(value)):
        return path
    return pull(str(value))


def source_of(name: str) -> Source:
    if name.startswith("irds:"):
        irds_id = name.removeprefix("irds:")
        split = irds_id.rsplit("/", 1)[-1]
        return Source(name, irds_id, {split if split in SPLITS else "test": irds_id})
    if name not in known():
        raise DataError(f"unknown dataset name {name!r}; see `retriever datasets list`, or use "
                        "irds:<ir_datasets id>", path=name)
    return known()[name]


def _splits(source: Source, registry) -> dict[str, str]:
    """The splits of a BEIR source: ``ID/train|dev|test`` where ir_datasets has them, else the
    base id's own qrels as "test"."""
    if source.splits:
        return source.splits
    found = {s: f"{source.docs}/{s}" for s in SPLITS if f"{source.docs}/{s}" in registry}
    return found or {"test": source.docs}


def pull(name: str, force: bool = False) -> Path:
    """Materialise a named dataset into the cache (once; ``force`` redoes it); returns its path."""
    target = cache_path(name)
    if is_materialised(name) and not force:
        return target
    source = source_of(name)
    if source.docs is None:
        raise DataError(f"dataset {name} is not publicly downloadable (BEIR lists it, but its "
                        f"documents need a licence): put it in BEIR layout (corpus.jsonl, "
                        f"queries.jsonl, qrels/test.tsv) under {target}", path=str(target))
    try:
        import ir_datasets
    except ImportError:
        raise DataError(f"dataset names need the 'datasets' extra: pip install 'retriever[datasets]' "
                        f"(or put the BEIR files under {target})", path=name) from None
    from indexing.manifest import WriterLock, replace_dir

    if target.exists() and not target.is_dir():
        raise DataError(f"{target} is in the way of dataset {name}: it is a file, not a dataset "
                        "directory; move it, or set RETRIEVER_HOME elsewhere", path=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    # one process materialises a dataset at a time; a second waits for it, then finds it done
    lock = WriterLock(target, what="dataset", wait=True)
    try:
        if is_materialised(name) and not force:
            return target
        for stale in target.parent.glob(f"{glob.escape(target.name)}.tmp-*"):  # killed pulls' (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # (mkdtemp makes it 0700: a shared RETRIEVER_HOME could not read it)
        try:
            counts = _materialise(ir_datasets, source, tmp)
            atomic_write_json(tmp / "source.json", {"name": name, "ir_datasets": source.docs,
                                                    "splits": counts.pop("splits"), **counts,
                                                    "ir_datasets_version": ir_datasets.__version__})
            replace_dir(tmp, target)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, (KeyboardInterrupt, DataError)):
                raise
            raise DataError(f"cannot get dataset {name} through ir_datasets ({type(e).__name__}: "
                            f"{_clip(str(e), 300)}). Offline? ir_datasets caches downloads under "
                            f"{_irds_home()}; or put the BEIR files (corpus.jsonl, queries.jsonl, "
                            f"qrels/SPLIT.tsv) under {target}", path=name) from None
    finally:
        lock.release()
    return target


def _irds_home() -> str:
    return os.environ.get("IR_DATASETS_HOME", str(Path.home() / ".ir_datasets"))


def _materialise(ir_datasets, source: Source, out: Path) -> dict:
    """Write corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv of ``source`` into ``out``."""
    docs_ds = ir_datasets.load(source.docs)
    n_docs = 0
    with open(out / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for doc in docs_ds.docs_iter():
            text = getattr(doc, "text", None)
            if text is None:
                text = getattr(doc, "body", "") or ""
            f.write(json.dumps({"_id": doc.doc_id, "title": getattr(doc, "title", "") or "", "text": text},
                               ensure_ascii=False) + "\n")
            n_docs += 1
    splits = _splits(source, ir_datasets.registry)
    queries: dict[str, str] = {}
    (out / "qrels").mkdir()
    counts = {}
    for split, irds_id in splits.items():
        ds = ir_datasets.load(irds_id)
        if not (ds.has_queries() and ds.has_qrels()):  # (an AttributeError on qrels_iter, before)
            raise DataError(f"ir_datasets id {irds_id} has no {'queries' if not ds.has_queries() else 'qrels'} "
                            "to evaluate with; name one of its splits (e.g. irds:beir/scifact/test)", path=irds_id)
        for q in ds.queries_iter():
            queries.setdefault(q.query_id, getattr(q, "text", None) or getattr(q, "query", "") or "")
        n = 0
        with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qrel in ds.qrels_iter():
                f.write(f"{qrel.query_id}\t{qrel.doc_id}\t{int(qrel.relevance)}\n")
                n += 1
        counts[split] = n
    with open(out / "queries.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    return {"documents": n_docs, "queries": len(queries), "splits": splits, "qrels": counts}


def listing() -> list[dict]:
    """Every known name with whether it is materialised and its size on disk."""
    rows = []
    for name, source in known().items():
        path = cache_path(name)
        cached = is_materialised(name)
        rows.append({"name": name, "cached": cached, "bytes": dir_size(path) if cached else None,
                     "public": source.docs is not None, "path": str(path)})
    return rows


def _clip(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary near ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
