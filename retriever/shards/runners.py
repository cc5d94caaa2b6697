"""Where the workers of a sharded build run: in this process, in local processes, or on Ray.

Every runner offers ``map(method, calls)``, yielding ``(i, result)`` as each call ``i`` finishes
(any order), ``call(method, args)`` for one call, and ``close()``. Documents indexed anywhere
advance the one progress bar the driver holds.

- :class:`InProcess`: one :class:`ShardWorker` in the driver (``workers=1``).
- :class:`Processes`: ``workers`` spawned processes, each loading its encoder once; a pool broken
  by a dead worker is started again and the unfinished calls resubmitted (twice at most).
- :class:`RayActors`: an actor pool on a Ray cluster (pip extra ``ray``), ``gpus`` and ``cpus``
  per actor; an actor that dies is restarted by Ray, which retries its call (``max_restarts``,
  ``max_task_retries``). Shards are written on the filesystem the cluster shares.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator

from retriever.shards.worker import ShardWorker

RETRIES = 2
POLL_S = 0.2


class InProcess:
    def __init__(self, spec: dict, progress: Callable[[int], None]) -> None:
        self.worker = ShardWorker(spec, progress)

    def map(self, method: str, calls: list[tuple]) -> Iterator[tuple[int, object]]:
        for i, args in enumerate(calls):
            yield i, self.worker.call(method, args)

    def call(self, method: str, args: tuple = ()):
        return self.worker.call(method, args)

    def close(self) -> None:
        pass


# -- local processes -----------------------------------------------------------------------------

_WORKER: ShardWorker | None = None


def _init_process(spec: dict, progress_queue, parent: int) -> None:
    global _WORKER
    _exit_with_the_driver(parent)
    _WORKER = ShardWorker(spec, progress_queue.put)


def _exit_with_the_driver(parent: int, every_s: float = 0.5) -> None:
    """End this worker when the driver process ``parent`` is gone: a driver killed with -9 left its
    workers (and their encoders: GPU memory) alive forever, re-parented and blocked on a pipe. A
    daemon thread polls the parent id (portable; ``PR_SET_PDEATHSIG`` follows the thread that spawned
    the worker, not the process)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()


def _run(method: str, args: tuple):
    return _WORKER.call(method, args)


class Processes:
    def __init__(self, spec: dict, workers: int, progress: Callable[[int], None]) -> None:
        self.spec = {**spec, "threads": spec.get("threads") or max(1, (os.cpu_count() or 1) // workers)}
        self.workers = workers
        self.progress = progress
        self.ctx = multiprocessing.get_context("spawn")  # torch and threads do not survive fork
        self.queue = self.ctx.Queue()
        self.pool = self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self.ctx, initializer=_init_process,
                                   initargs=(self.spec, self.queue, os.getpid()))

    def _drain(self) -> None:
        while True:
            try:
                n = self.queue.get_nowait()
            except queue.Empty:
                return
            self.progress(n)

    def map(self, method: str, calls: list[tuple]) -> Iterator[tuple[int, object]]:
        todo = dict(enumerate(calls))
        for attempt in range(RETRIES + 1):
            futures = {self.pool.submit(_run, method, args): i for i, args in todo.items()}
            try:
                while futures:
                    done, _ = wait(list(futures), timeout=POLL_S, return_when=FIRST_COMPLETED)
                    self._drain()
                    for f in done:
                        i = futures.pop(f)
                        result = f.result()
                        todo.pop(i)
                        yield i, result
                self._drain()
                return
            except BrokenProcessPool:
                if attempt == RETRIES:
                    raise RuntimeError(f"a build worker died {RETRIES + 1} times; giving up") from None
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = self._pool()

    def call(self, method: str, args: tuple = ()):
        return next(iter(self.map(method, [args])))[1]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._drain()


# -- Ray ----------------------------------------------------------------------------------------

def connect(address: str):
    """The ray module, connected: to the running cluster ``auto`` finds, to ``ADDRESS``, or to a
    new local one for ``local``; an already connected driver is used as it is."""
    try:
        import ray
    except ImportError:
        raise ImportError("Ray is not installed: pip install 'retriever[ray]'") from None
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, logging_level="WARNING")
        else:
            try:
                ray.init(address=address, logging_level="WARNING")
            except ConnectionError as e:
                raise ConnectionError(f"no Ray cluster at {address!r} ({e}); start one with `ray start "
                                      "--head`, or pass --ray local for a cluster on this machine") from None
    return ray


def unwrap(error: Exception) -> Exception:
    """The user's error inside a Ray task error (our DataError, ValueError, ...), else ``error``."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else error


class _RayWorker(ShardWorker):
    """A ShardWorker whose progress goes to the counter actor named ``counter`` (looked up by
    name, so a restarted actor needs nothing from the object store)."""

    def __init__(self, spec: dict, counter: str) -> None:
        import ray

        handle = ray.get_actor(counter)
        super().__init__(spec, lambda n: handle.add.remote(n))

    def call_tagged(self, i: int, method: str, args: tuple):
        return i, self.call(method, args)


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


class RayActors:
    def __init__(self, spec: dict, workers: int, progress: Callable[[int], None], address: str,
                 gpus: float = 0.0, cpus: float = 1.0) -> None:
        self.ray = ray = connect(address)
        from ray.util import ActorPool

        self.progress = progress
        have = ray.cluster_resources()
        for what, each in (("CPU", cpus), ("GPU", gpus)):
            if each and have.get(what, 0) < workers * each:
                raise ValueError(f"{workers} workers x {each:g} {what}s need {workers * each:g} {what}s; the "
                                 f"Ray cluster has {have.get(what, 0):g}")
        name = f"retriever-build-progress-{uuid.uuid4().hex}"
        self.counter = ray.remote(num_cpus=0)(_Counter).options(name=name).remote()
        spec = {**spec, "threads": spec.get("threads") or max(1, int(cpus))}
        actor = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)(_RayWorker)
        self.actors = [actor.options(num_cpus=cpus, num_gpus=gpus).remote(spec, name)
                       for _ in range(workers)]
        self.pool = ActorPool(self.actors)

    def _drain(self) -> None:
        n = self.ray.get(self.counter.take.remote())
        if n:
            self.progress(n)

    def map(self, method: str, calls: list[tuple]) -> Iterator[tuple[int, object]]:
        for i, args in enumerate(calls):
            self.pool.submit(lambda actor, v: actor.call_tagged.remote(v[0], method, v[1]), (i, args))
        while self.pool.has_next():
            try:
                i, result = self.pool.get_next_unordered(timeout=POLL_S)
            except TimeoutError:
                self._drain()
                continue
            except self.ray.exceptions.RayTaskError as e:
                raise unwrap(e) from None
            self._drain()
            yield i, result
        self._drain()

    def call(self, method: str, args: tuple = ()):
        return next(iter(self.map(method, [args])))[1]

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.ray.kill(self.counter)
