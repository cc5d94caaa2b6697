"""The driver of a sharded build: plan, shared phase, shards, assembly.

1. Plan: the corpus file is cut into N byte ranges at line starts (shard i = range i, so doc
   ids keep the corpus order); the plan (kind, resolved settings, corpus size and mtime, ranges)
   goes to ``OUT.partial/plan.json``.
2. Shared phase, by the workers, each reading its own range:
   - bm25: every range analysed once into term frequencies (``analysed/NNN``) and its
     collection statistics merged into ``shared/`` (document frequencies per term and field,
     documents and total length per field): every shard's impacts are weighed with them;
   - dense with an IVF spec: documents counted; ``auto`` resolved by the whole corpus's size;
     the training rows ``DenseIndex.build`` would draw (same seed) gathered, encoded in one call
     (so the sample does not depend on the number of shards) and a trained empty index written
     to ``shared/quantizer.faiss``: every shard fills a copy of it;
   - sparse, dense Flat/HNSW: nothing.
3. Shards: each written by a worker into ``OUT.partial/shards/NNN`` through its own
   ``IndexWriter`` (atomic, checksummed). With ``resume`` a complete shard (and shared phase)
   of an interrupted build with the same plan is kept untouched.
4. Assembly, under OUT's writer lock held from the start: shards and shared files move into the
   new directory; ``docids.txt`` (shard order), ``docid_order.npy`` and the manifest are written;
   the directory appears at OUT atomically, and ``OUT.partial`` is removed.

A crash leaves the previous OUT (or none) and ``OUT.partial`` for ``resume``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from indexing.corpus_ranges import split_ranges, split_rows, splittable_file
from indexing.errors import DataError
from indexing.records import first_line
from indexing.io import atomic_open
from indexing.manifest import (CHECKSUM_KEY, DOCID_ORDER, IndexWriter, docid_order, read_docids,
                               read_manifest)
from retriever import kinds
from retriever.kinds import sharded
from retriever.shards.worker import BM25_DF, BM25_TERMS, QUANTIZER, SHARED, SHARDS, finished_shard, shard_dir

PLAN = "plan.json"
PLAN_VERSION = 1
log = logging.getLogger("retriever")
MAX_SHARDS = 1 << 16  # (each shard is a directory of its own, searched in a thread or an actor)


def work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def encoding_block(kind: str, settings) -> int | None:
    """Documents per encoding block of a kind that encodes with a model (None otherwise): shards
    are cut at multiples of it, so each document is batched with the same neighbours (and so
    encoded to the same bits) as in one index."""
    if kind == "dense" or (kind == "sparse" and not settings.vectors):
        return int(settings.encode_block)
    return None


def _plan(kind: str, settings, file: Path, shards: int, store_docs: bool) -> dict:
    st = file.stat()
    if shards > MAX_SHARDS:
        raise ValueError(f"{shards} shards: an index holds at most {MAX_SHARDS:,}")
    if shards > st.st_size:  # (before any cut: each shard needs a line, each line a byte)
        raise ValueError(f"{file} has too few lines for {shards} shards ({st.st_size} bytes)")
    block = encoding_block(kind, settings)
    ranges = split_ranges(file, shards) if block is None else split_rows(file, shards, block)
    empty = [i for i, (a, b) in enumerate(ranges) if a == b]
    if empty:
        if block is None:
            raise ValueError(f"{file} has too few lines for {shards} shards (shard {empty[0]} would be empty)")
        raise ValueError(f"{file} has too few documents for {shards} shards of whole encoding blocks of {block} "
                         f"documents (shard {empty[0]} would be empty; a smaller encode_block setting "
                         "allows more shards)")
    return {"version": PLAN_VERSION, "kind": kind, "settings": dataclasses.asdict(settings),
            "corpus": {"path": str(file.absolute()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns},
            "shards": shards, "ranges": [list(r) for r in ranges], "store_docs": store_docs}


def _start(work: Path, plan: dict, resume: bool) -> None:
    """A fresh work directory, or (``resume``) the one of an interrupted build of the same plan."""
    if resume and work.is_dir():
        try:
            old = json.loads((work / PLAN).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == plan:
            return
        if old is not None:
            raise ValueError(f"{work}: the interrupted build there used other settings, shards or corpus; "
                             "run without --resume to start again")
    shutil.rmtree(work, ignore_errors=True)
    (work / SHARDS).mkdir(parents=True)
    with atomic_open(work / PLAN) as f:
        json.dump(plan, f)


def _check(kind: str, settings) -> None:
    if kind not in sharded.KINDS:
        raise ValueError(f"a {kind} index cannot be sharded; shard its components (kinds: "
                         f"{', '.join(sharded.KINDS)})")
    if kind == "sparse" and settings.query_mode == "idf":
        raise ValueError("query_mode 'idf' weights queries by document frequencies over one index; "
                         "a sharded sparse index takes query_mode model or learned")


def _shared_bm25(runner, plan: dict, work: Path) -> dict:
    from indexing.bm25 import CollectionStats

    shared = work / SHARED
    if (shared / "manifest.json").is_file():
        return read_manifest(shared, verify=False)["collection"]
    parts = dict(runner.map("analyse", list(enumerate(plan["ranges"]))))
    stats = CollectionStats.merge([parts[i] for i in range(len(parts))])
    entry = {"fields": list(stats.fields), "doc_count": stats.doc_count, "total": stats.total,
             "num_docs": stats.num_docs, "terms": len(stats.terms)}
    with IndexWriter(shared) as writer:
        writer.write_json(BM25_TERMS, stats.terms)
        writer.save_array(BM25_DF, stats.df)
        writer.finish({"kind": "shared", "backend": "native", "doc_count": stats.num_docs, "collection": entry})
    return entry


def _shared_dense(runner, plan: dict, work: Path, settings) -> tuple[dict, dict]:
    """(shared manifest entry, settings overrides of every shard)."""
    from indexing.faiss_index import sample_rows, train_empty, training_plan, write_trained

    shared = work / SHARED
    if (shared / "manifest.json").is_file():
        entry = read_manifest(shared, verify=False)["quantizer"]
        return entry, {"faiss": entry["factory"]}
    spec = settings.faiss.replace(" ", "")
    if spec == "Flat" or spec.startswith("HNSW"):
        return {}, {}
    counts = dict(runner.map("count", [(r,) for r in plan["ranges"]]))
    counts = [counts[i] for i in range(len(counts))]
    n = sum(counts)
    dim = runner.call("dim")
    factory, size = training_plan(settings.faiss, n, dim, settings.train_size)
    entry = {"factory": factory, "dim": dim, "doc_count": n, "train_size": size, "seed": 0}
    if size:
        rows = sample_rows(n, size, seed=0)
        starts = np.cumsum([0] + counts)
        calls = []
        for i, r in enumerate(plan["ranges"]):
            local = rows[(rows >= starts[i]) & (rows < starts[i + 1])] - starts[i]
            calls.append((r, local.tolist()))
        texts = dict(runner.map("sample_texts", calls))
        sample = runner.call("encode", ([t for i in range(len(calls)) for t in texts[i]],))
        trained = train_empty(sample, factory)
        entry["path"] = f"{SHARED}/{QUANTIZER}"
        with IndexWriter(shared) as writer:
            write_trained(trained, writer.path(QUANTIZER))
            writer.finish({"kind": "shared", "backend": "native", "doc_count": n, "quantizer": entry})
    return entry, {"faiss": factory}


def _fingerprint(parts: list[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()


def assemble(writer: IndexWriter, work: Path, plan: dict, shared: dict) -> dict:
    """Move the finished shards (and shared files) of ``work`` into ``writer``; write the global
    doc ids and tie order; return the top manifest's entries."""
    src = work / SHARDS
    for stale in src.iterdir():
        if not stale.name.isdigit():  # locks, temporary and encoding directories of dead workers
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    os.replace(src, writer.path(SHARDS))
    if (work / SHARED).is_dir():
        os.replace(work / SHARED, writer.path(SHARED))
    entries, ids, fingerprints, offset = [], [], [], 0
    for i in range(plan["shards"]):
        path = writer.path(sharded.shard_path(i))
        m = read_manifest(path, verify=False)
        shard_ids = read_docids(path)
        entries.append({"path": sharded.shard_path(i), "offset": offset, "doc_count": m["doc_count"],
                        "manifest_sha256": m[CHECKSUM_KEY]})
        fingerprints.append(m["corpus"]["fingerprint"])
        ids.extend(shard_ids)
        offset += m["doc_count"]
    order = docid_order(ids)
    dup = np.flatnonzero([ids[a] == ids[b] for a, b in zip(order[:-1], order[1:])]) if len(ids) > 1 else []
    if len(dup):
        docid, file = ids[order[dup[0]]], Path(plan["corpus"]["path"])
        first, second = first_line(file, "doc", docid), first_line(file, "doc", docid, nth=2)
        raise DataError(f"duplicate doc id {docid!r} (first on line {first})", path=file, line=second)
    writer.write_docids(ids)
    writer.save_array(DOCID_ORDER, order)
    return {"kind": plan["kind"], "backend": sharded.BACKEND, "doc_count": len(ids), "settings": plan["settings"],
            "corpus": {"path": plan["corpus"]["path"], "fingerprint": _fingerprint(fingerprints),
                       "fingerprint_of": "the shards' fingerprints, in order"},
            "shards": entries, "shared": shared}


def build_sharded(kind: str, corpus, out, settings, *, shards: int, workers: int = 1, ray: str | None = None,
                  gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, resume: bool = False,
                  overwrite: bool = False, store_docs: bool = True,
                  progress: Callable[[int], None] | None = None,
                  on_shard: Callable[[int], None] | None = None) -> Path:
    """Build a sharded index of ``kind`` (native) over ``corpus`` into ``out``; see the module
    docstring. ``workers`` processes (``1``: this one) or, with ``ray`` (``auto``, an address,
    or ``local``), ``workers`` Ray actors with ``gpus_per_worker`` GPUs each. ``progress(n)``
    hears of every n documents indexed; ``on_shard(i)`` of every shard written."""
    from retriever.shards import runners

    for name, value, low in (("shards", shards, 1), ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    native = kinds.get(kind, "native")
    settings = native.prepare(settings)
    _check(kind, settings)
    file = splittable_file(corpus)
    out = Path(out).absolute()
    tick = progress or (lambda n: None)
    with IndexWriter(out, overwrite=overwrite) as writer:
        work = work_dir(out)
        plan = _plan(kind, settings, file, shards, store_docs)
        _start(work, plan, resume)
        spec = {"kind": kind, "settings": plan["settings"], "corpus": str(file), "work": str(work),
                "store_docs": store_docs}
        if ray is not None:
            runner = runners.RayActors(spec, workers, tick, ray, gpus=gpus_per_worker, cpus=cpus_per_worker)
        elif workers > 1:
            runner = runners.Processes(spec, workers, tick)
        else:
            runner = runners.InProcess(spec, tick)
        seconds: dict[str, float] = {}
        clock = time.perf_counter()
        try:
            overrides: dict = {}
            shared: dict = {}
            if kind == "bm25":
                shared = {"path": SHARED, "collection": _shared_bm25(runner, plan, work)}
            elif kind == "dense":
                quantizer, overrides = _shared_dense(runner, plan, work, settings)
                shared = {"path": SHARED, "quantizer": quantizer} if quantizer.get("path") else {}
            seconds["shared"], clock = time.perf_counter() - clock, time.perf_counter()
            todo = [i for i in range(shards) if finished_shard(work, i) is None]
            for done_shard in (i for i in range(shards) if i not in todo):
                tick(read_manifest(shard_dir(work, done_shard), verify=False)["doc_count"])
            calls = [(i, plan["ranges"][i], overrides) for i in todo]
            for _, result in runner.map("build", calls):
                if on_shard is not None:
                    on_shard(result["shard"])
            seconds["shards"], clock = time.perf_counter() - clock, time.perf_counter()
        except BaseException:
            if work.is_dir():
                log.warning("the sharded build failed; its finished parts are kept in %s, and the same "
                            "command with --resume goes on from them (remove it to free its space)", work)
            raise
        finally:
            runner.close()
        entries = assemble(writer, work, plan, shared)
        seconds["assemble"] = time.perf_counter() - clock
        entries["build"] = {"workers": workers, "on": "ray" if ray is not None else
                            "processes" if workers > 1 else "in-process", "resumed_shards": shards - len(todo),
                            "seconds": {k: round(v, 3) for k, v in seconds.items()}}
        writer.finish(entries, sealed=(SHARDS,))
    shutil.rmtree(work, ignore_errors=True)
    return out
