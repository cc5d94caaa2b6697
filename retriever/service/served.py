"""The served indexes: each one's current generation, how it is searched, and its reload.

A request reads ``Served.current`` once, at its start, and uses that ``Loaded`` to the end. A
reload loads the new ``Retriever`` completely first (``Retriever.load`` already starts again when
a rebuild swaps the directory under it, and a loaded Retriever keeps reading the files it
opened), then replaces ``current`` with one assignment. So no request waits for a reload or
fails because of one: those that started before it finish on the old generation, those after it
run on the new one, and none sees a mix. Reloads of one index are serialised; a reload that
fails leaves the old generation serving.

How each index is searched (``Served.batched``, ``Served.run``):
- kinds in ``batch_kinds`` (neural by default: dense, sparse, hybrid) go through the index's
  micro-batcher, and every call into them runs on the index's own one-thread executor: one
  library call at a time, as a model and its tokenizer expect;
- other native indexes (BM25) are searched straight away on the shared thread pool, in
  parallel (their kernel releases the GIL);
- any other backend (Lucene) runs on the one-thread executor too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from retriever.api import Retriever
from retriever.service.batcher import MicroBatcher

log = logging.getLogger("retriever.service")

DEFAULT_BATCH_KINDS = ("dense", "sparse", "hybrid")


class UnknownIndex(LookupError):
    """A request named an index that is not served (a 404)."""


class ReloadError(RuntimeError):
    """A reload could not load the index on disk; the previous generation still serves."""


def index_name(path: str | os.PathLike) -> str:
    """A served index's name: its directory's name (``indexes/scifact-bm25/`` -> ``scifact-bm25``)."""
    return Path(os.path.abspath(path)).name


@dataclass(frozen=True)
class Loaded:
    """One generation of one served index, as a request sees it from start to end."""

    retriever: Retriever
    generation: int  # 1 when the service started, +1 per reload


class Served:
    """A served index: its current generation, plus what outlives reloads (path, batcher,
    one-thread executor, reload lock)."""

    def __init__(self, name: str, path: Path, loaded: Retriever, pool: Executor, *,
                 batch_kinds: Collection[str], window: float, max_batch: int,
                 load: Callable[[Path], Retriever]) -> None:
        self.name = name
        self.path = path
        self.current = Loaded(loaded, 1)
        self.batch_kinds = frozenset(batch_kinds)
        self._pool = pool
        self._serial = ThreadPoolExecutor(1, thread_name_prefix=f"retriever-{name}")
        self.batcher = MicroBatcher(self._serial, window, max_batch)
        self._load = load
        self._reload_lock = asyncio.Lock()

    def batched(self, loaded: Loaded) -> bool:
        return loaded.retriever.kind in self.batch_kinds

    def _executor_for(self, loaded: Loaded) -> Executor:
        r = loaded.retriever
        concurrent = r.manifest.get("backend", "native") == "native" and not self.batched(loaded)
        return self._pool if concurrent else self._serial

    async def run(self, loaded: Loaded, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the executor this generation's index is searched on."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor_for(loaded), call)

    async def search(self, loaded: Loaded, text: str, k: int) -> dict[str, float]:
        """One query -> ``{docid: score}`` best first: batched, or straight to the library."""
        if self.batched(loaded):
            return await self.batcher.search(loaded.retriever, text, k)
        return dict(await self.run(loaded, loaded.retriever.search, text, k))

    async def read_doc(self, loaded: Loaded, docid: str) -> dict | None:
        """``Retriever.doc`` on the shared pool (stored text is read with ``pread``: any thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, loaded.retriever.doc, docid)

    async def reload(self) -> Loaded:
        """Load the index on disk again and make it current (see the module docstring)."""
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            try:
                fresh = await loop.run_in_executor(self._pool, self._load, self.path)
            except Exception as e:
                raise ReloadError(f"could not reload {self.name}: {one_line(e)}; "
                                  "still serving the previous generation") from e
            self.current = Loaded(fresh, self.current.generation + 1)
            log.info("reloaded %s: generation %d, %d documents", self.name, self.current.generation, len(fresh))
            return self.current

    def summary(self) -> dict:
        """What ``GET /indexes`` shows of this index (from its manifest)."""
        loaded = self.current
        m = loaded.retriever.manifest
        batching = None
        if self.batched(loaded):
            b = self.batcher
            batching = {"window_ms": b.window * 1000, "max_batch": b.max_batch,
                        "batches": b.batches, "queries": b.queries}
        return {"name": self.name, "kind": m["kind"], "backend": m.get("backend", "native"),
                "doc_count": m["doc_count"], "settings": m.get("settings"), "created": m.get("created"),
                "generation": loaded.generation, "batching": batching}

    async def close(self) -> None:
        await self.batcher.close()
        self._serial.shutdown(wait=False, cancel_futures=True)


class Indexes:
    """The served indexes by name, in the order given (the first is the default)."""

    def __init__(self, served: Sequence[Served]) -> None:
        self._by_name = {s.name: s for s in served}

    @classmethod
    async def open(cls, paths: Sequence[Path], pool: Executor, *, batch_kinds: Collection[str],
                   window: float, max_batch: int, verify: bool = True) -> Indexes:
        """Load every index (in ``pool``, one after another) and start their batchers."""
        names = check_names(paths)
        load = functools.partial(_load, verify=verify)
        loop = asyncio.get_running_loop()
        opened = cls([])
        try:
            for name, path in zip(names, paths):
                r = await loop.run_in_executor(pool, load, path)
                s = Served(name, path, r, pool, batch_kinds=batch_kinds, window=window,
                           max_batch=max_batch, load=load)
                s.batcher.start()
                opened._by_name[name] = s
                log.info("serving %s: %s index, %d documents%s", name, r.kind, len(r),
                         " (micro-batched)" if s.batched(s.current) else "")
        except BaseException:
            await opened.close()
            raise
        return opened

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def __iter__(self):
        return iter(self._by_name.values())

    def get(self, name: str | None) -> Served:
        """The index called ``name``; the first served one for None. UnknownIndex otherwise."""
        if name is None:
            return next(iter(self._by_name.values()))
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownIndex(f"no index named {name!r}; serving: {', '.join(self._by_name)}") from None

    async def close(self) -> None:
        for s in self._by_name.values():
            await s.close()


def check_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The names of ``paths`` (directory names); ValueError when none or two share a name."""
    if not paths:
        raise ValueError("give at least one index to serve")
    names = [index_name(p) for p in paths]
    for name in names:
        if names.count(name) > 1:
            same = [str(p) for p, n in zip(paths, names) if n == name]
            raise ValueError(f"two indexes are named {name!r} ({', '.join(same)}); "
                             "served indexes need distinct directory names")
    return names


def _load(path: Path, verify: bool = True) -> Retriever:
    """``Retriever.load``, then one search, so the first request to this generation pays no
    kernel compile or model warm-up (an index that cannot search text, built from vectors
    without a model, is left as it is)."""
    r = Retriever.load(path, verify=verify)
    try:
        r.search("warm up", k=1)
    except ValueError:
        pass
    return r


def one_line(e: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
