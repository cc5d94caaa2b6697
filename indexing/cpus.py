"""How many CPUs this process may run on: the most threads worth starting for compiled work that
holds no GIL (more only add per-thread scratch: a search thread keeps an accumulator per document)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs in this process's affinity mask (all the machine's where there is none), >= 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
