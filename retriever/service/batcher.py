"""The micro-batcher: the queries of concurrent requests to one index, searched together.

A neural index encodes a batch of queries for little more than one, so under concurrent load the
service gathers the single-query requests to an index and searches them with one
``Retriever.search_batch`` call:

- one batch runs at a time, on the index's own executor (a worker thread, so the event loop
  keeps accepting requests); the requests that arrive meanwhile form the next batch, which
  starts as soon as the running one ends: batches grow with the load, with no wait added;
- a request that finds the batcher idle and alone waits at most ``window`` seconds for others
  to join it (less once ``max_batch`` queries are waiting): the only latency the batcher adds;
- a batch is split by (Retriever, k): a request is answered by the generation it started on
  (see ``served``) and with exactly its k, so its hits equal ``search_batch({qid: text}, k)``
  on that Retriever alone (up to float rounding of a batched forward pass);
- if a batch call fails, each of its queries is searched alone, so a query that fails fails
  only its own request.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("retriever.service")


@dataclass
class _Pending:
    retriever: Any  # a retriever.api.Retriever (anything with search_batch)
    text: str
    k: int
    future: asyncio.Future = field(repr=False)


def _search_group(retriever, texts: list[str], k: int) -> list[dict[str, float]]:
    """One ``search_batch`` call; runs in a worker thread. Internal qids are positions."""
    run = retriever.search_batch({str(i): t for i, t in enumerate(texts)}, k=k)
    return [run.get(str(i), {}) for i in range(len(texts))]


class MicroBatcher:
    """Gathers ``search`` calls into ``search_batch`` calls run on ``executor``.

    Start it inside the event loop that will call it (``start``), and ``close`` it there.
    ``batches`` and ``queries`` count what it has run (queries / batches = mean batch size).
    """

    def __init__(self, executor: Executor, window: float, max_batch: int) -> None:
        if not window >= 0 or max_batch < 1:
            raise ValueError(f"a batch window is >= 0 s and a batch >= 1 query; got {window}, {max_batch}")
        self.executor = executor
        self.window = window
        self.max_batch = max_batch
        self.batches = 0
        self.queries = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retriever-batcher")

    async def close(self) -> None:
        """Stop the loop; requests still waiting get an error instead of hanging."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._queue is not None and not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the service is shutting down"))

    async def search(self, retriever, text: str, k: int) -> dict[str, float]:
        """``{docid: score}``, best first: ``text`` searched on ``retriever`` with a batch."""
        if self._task is None or self._task.done():
            raise RuntimeError("the micro-batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(retriever, text, k, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._execute(batch)
            except Exception as e:  # never let the loop die: every waiting request would hang
                log.exception("micro-batcher: a batch of %d failed", len(batch))
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)

    async def _collect(self) -> list[_Pending]:
        """The requests waiting now; a request that found the batcher idle and alone waits up
        to the window for others to join it (those that queued behind a batch have waited)."""
        queue = self._queue
        batch = [await queue.get()]
        while len(batch) < self.max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        if len(batch) > 1:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except asyncio.TimeoutError:  # the builtin TimeoutError from 3.11 on
                break
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        groups: dict[tuple[int, int], list[_Pending]] = {}
        for p in batch:
            if not p.future.done():  # a request given up on (its client went away) is skipped
                groups.setdefault((id(p.retriever), p.k), []).append(p)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            first = group[0]
            try:
                results = await loop.run_in_executor(
                    self.executor, _search_group, first.retriever, [p.text for p in group], first.k)
            except Exception as e:
                if len(group) == 1:
                    _settle(first, error=e)
                    continue
                for p in group:  # find the query that failed: each one alone
                    try:
                        _settle(p, (await loop.run_in_executor(
                            self.executor, _search_group, p.retriever, [p.text], p.k))[0])
                    except Exception as one:
                        _settle(p, error=one)
                continue
            self.batches += 1
            self.queries += len(group)
            for p, result in zip(group, results):
                _settle(p, result)


def _settle(p: _Pending, result: dict[str, float] | None = None, error: BaseException | None = None) -> None:
    if p.future.done():
        return
    if error is not None:
        p.future.set_exception(error)
    else:
        p.future.set_result(result)
