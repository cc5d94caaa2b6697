"""A sharded index searched by Ray actors: shard groups placed on actors, each batch scattered.

The shards are cut into ``groups`` contiguous groups (default: one per shard); each group is
served by ``replicas`` actors, every one loading its shards from the path the cluster shares
(``retriever.kinds.sharded.open_group``) and searching them in threads. The driver encodes each
batch once, sends the encoded queries to one replica of every group (round robin), and merges
the groups' top k exactly as the in-process searcher merges shards: the results are the same.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from pathlib import Path

from indexing.manifest import CHECKSUM_KEY, IndexFormatError, read_docids, read_manifest
from retriever import kinds
from retriever.kinds import sharded
from retriever.shards.runners import connect, unwrap

READY_TIMEOUT_S = 600  # opening a shard group: loading its shards (and a model)


class ShardGroupActor:
    """Serves shards ``indices`` of the index at ``root`` (opened once, in ``__init__``)."""

    def __init__(self, root: str, indices: list[int], options: dict, generation: str | None = None) -> None:
        root_path = Path(root)
        manifest = read_manifest(root_path, verify=False)
        if generation is not None and manifest.get(CHECKSUM_KEY) != generation:
            # (a restarted actor would open the rebuilt shards while the driver and the other actors
            # search the ones loaded: results of neither generation)
            raise IndexFormatError(f"{root}: rebuilt since it was loaded; load it again")
        self.group = sharded.open_group(root_path, manifest, read_docids(root_path), indices, options)

    def ready(self) -> bool:
        return True

    def search_encoded(self, encoded: list, k: int) -> list:
        return self.group.search_encoded(encoded, k)

    def memory(self) -> float:
        """This actor's peak resident memory in MB (VmHWM), for capacity planning."""
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0


class RayGroup:
    """The replicas of one shard group; ``submit`` goes to the next one."""

    def __init__(self, actors: list) -> None:
        self.actors = actors
        self._next = itertools.cycle(range(len(actors)))
        self._lock = threading.Lock()

    def submit(self, encoded: list, k: int):
        with self._lock:
            actor = self.actors[next(self._next)]
        return _Result(actor.search_encoded.remote(encoded, k))


class _Result:
    """A Ray object ref with ``result()``, our errors unwrapped."""

    def __init__(self, ref) -> None:
        self.ref = ref

    def result(self):
        import ray

        try:
            return ray.get(self.ref)
        except ray.exceptions.RayError as e:
            error = unwrap(e)
            if isinstance(error, ray.exceptions.RayError):  # an actor gone for good: say why, in one line
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                why = next((line.split("Error: ", 1)[1] for line in reversed(lines)
                            if line.startswith(("indexing.", "ValueError", "OSError")) and "Error: " in line),
                           lines[0] if lines else type(error).__name__)
                raise IndexFormatError(f"a shard-group actor died and cannot be restarted: {why}") from None
            raise error from None


def open_on_ray(root, manifest: dict, docids: list[str], address: str, replicas: int = 1,
                groups: int | None = None, cpus_per_actor: float | None = None, options: dict | None = None,
                verify: bool = True) -> sharded.ShardedSearcher:
    """A searcher of the sharded index at ``root`` whose shard groups live on Ray actors.

    ``cpus_per_actor``: CPUs each actor holds (default: Ray's, none held while it runs, so any
    number of actors fit; searches run in the actors' threads)."""
    options = dict(options or {})
    if manifest.get("backend") != sharded.BACKEND:
        raise ValueError(f"{root} is not a sharded index; ray= places the shards of a sharded index "
                         "(build one with --shards N)")
    for name, value in (("replicas", replicas), ("groups", groups)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    root = Path(root).absolute()
    kind = kinds.get(manifest["kind"], sharded.BACKEND)
    layout = sharded.check_layout(root, manifest, len(docids), verify)
    accepted = [p for p in list(inspect.signature(kind.open).parameters)[3:] if p != "verify"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"a sharded {kind.name} index takes no load option(s) {', '.join(unknown)}; "
                         f"it accepts: {', '.join(accepted) or 'none'}")
    ray = connect(address)
    n = len(layout)
    groups = min(groups or n, n)
    cut = [round(i * n / groups) for i in range(groups + 1)]
    actor_class = ray.remote(max_restarts=2, max_task_retries=2)(ShardGroupActor)
    members = []
    for g in range(groups):
        indices = list(range(cut[g], cut[g + 1]))
        placed = actor_class if cpus_per_actor is None else actor_class.options(num_cpus=cpus_per_actor)
        members.append([placed.remote(str(root), indices, options, manifest.get(CHECKSUM_KEY))
                        for _ in range(replicas)])
    try:
        ray.get([a.ready.remote() for group in members for a in group], timeout=READY_TIMEOUT_S)
    except (ray.exceptions.RayError, TimeoutError) as e:
        for group in members:
            for a in group:
                ray.kill(a)
        if isinstance(e, TimeoutError) or isinstance(e, ray.exceptions.GetTimeoutError):
            raise TimeoutError(f"{root}: the Ray cluster did not start {groups * replicas} shard-group actors "
                               f"within {READY_TIMEOUT_S} s (too few resources?)") from None
        error = unwrap(e)
        if isinstance(error, (IndexFormatError, ValueError, OSError)):
            raise error from None
        raise IndexFormatError(f"{root}: a shard group could not be opened on Ray: {error}") from None
    path0, _, m0 = layout[0]
    encode = sharded.query_encoder(manifest["kind"], path0, m0, options)
    store = sharded.ShardedDocStore([p for p, _, _ in layout], [e["offset"] for _, e, _ in layout])
    searcher = sharded.ShardedSearcher(manifest["kind"], encode, [RayGroup(g) for g in members], store,
                                       sharded.impact_scale(m0))
    searcher.actors = [a for g in members for a in g]
    return searcher
