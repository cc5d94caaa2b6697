"""``scripts/profile_sparse.py``: the perf map names code numba compiled in this process."""

import importlib.util
from pathlib import Path

import numpy as np
from numba import njit

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "profile_sparse.py"


def test_perf_map_names_a_function_compiled_here(tmp_path):
    spec = importlib.util.spec_from_file_location("profile_sparse", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    @njit
    def summed_twice_for_the_map(a):
        return 2 * a.sum()

    assert summed_twice_for_the_map(np.arange(4.0)) == 12.0
    out = tmp_path / "perf.map"
    assert mod.write_perf_map(str(out)) >= 1
    rows = [line.split(" ", 2) for line in out.read_text().splitlines()]
    mine = [r for r in rows if "summed_twice_for_the_map" in r[2]]
    assert mine and all(int(r[1], 16) > 0 for r in mine)
    starts = [int(r[0], 16) for r in rows]
    assert starts == sorted(starts)  # perf wants them in address order
