"""BEIR leaderboard runs: every configuration over every dataset, cached and resumable.

``runs.yaml`` maps a configuration name to the options of ``retriever index`` (flag names with
underscores), e.g. ``bm25-flat: {kind: bm25, fields: flat}``. For each (dataset, config) cell
the grid builds the index (reused while the options and the corpus are unchanged), searches the
split, evaluates, and saves the cell's result; a rerun skips finished cells and rebuilt nothing
that is still valid. A missing dataset or a failing configuration becomes a ``missing`` /
``failed`` cell and the rest of the grid goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from pathlib import Path

from eval.beir import BeirDataset
from eval.metrics import DEFAULT_METRICS, evaluate
from eval.trec import write_run
from indexing.io import atomic_write_json, dir_size

GRID_VERSION = 1


def load_config(path: str | os.PathLike) -> dict[str, dict]:
    """Configurations from YAML: {name: {option: value}}; names and options checked."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise ValueError(f"{p}{f':{line + 1}' if line is not None else ''}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{p}: expected a mapping of configuration names to index options")
    for name, options in data.items():
        if not isinstance(options, dict):
            raise ValueError(f"{p}: configuration {name!r} must map option names to values")
        bad = [k for k in options if not isinstance(k, str) or "-" in k]
        if bad:
            raise ValueError(f"{p}: configuration {name!r}: option names use underscores, got {bad}")
    return {str(k): dict(v) for k, v in data.items()}


def _corpus_key(ds: BeirDataset) -> dict:
    st = ds.corpus_path.stat()
    return {"corpus": str(ds.corpus_path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_cell(root: Path, dataset: str, name: str, options: dict, out: Path, split: str, k: int,
             metrics: tuple[str, ...]) -> dict:
    """One (dataset, config) cell: index (cached), search, evaluate; never raises."""
    from retriever.api import Retriever

    cell = {"config": name, "dataset": dataset, "status": "ok", "error": None, "metrics": {},
            "wall_s": None, "index_bytes": None, "latency_ms": None, "cached": False}
    ds_dir = root / dataset
    if not (ds_dir / "corpus.jsonl").is_file():
        return {**cell, "status": "missing", "error": f"no BEIR dataset at {ds_dir}"}
    start = time.perf_counter()
    try:
        ds = BeirDataset(ds_dir)
        index_key = _digest({"v": GRID_VERSION, "options": options, **_corpus_key(ds)})
        result_key = _digest({"index": index_key, "split": split, "k": k, "metrics": metrics})
        cell_dir = out / "cells" / dataset / name
        result_file = cell_dir / "result.json"
        if result_file.is_file():
            saved = json.loads(result_file.read_text(encoding="utf-8"))
            if saved.get("key") == result_key:
                return {**saved["cell"], "cached": True}
        index_dir = out / "indexes" / dataset / name
        key_file = out / "indexes" / dataset / f"{name}.key"
        opts = dict(options)
        kind = opts.pop("kind", "bm25")
        if key_file.is_file() and key_file.read_text() == index_key and (index_dir / "manifest.json").is_file():
            r = Retriever.load(index_dir, verify=False)
        else:
            r = Retriever.build(ds_dir, index_dir, kind=kind, overwrite=True, store_docs=False, **opts)
            key_file.write_text(index_key)
        qrels = ds.qrels(split)
        queries = ds.split_queries(split)
        r.search_batch(dict(list(queries.items())[:1]), k=k)  # warm-up: compiled kernels, caches
        t0 = time.perf_counter()
        run = r.search_batch(queries, k=k)
        search_s = time.perf_counter() - t0
        result = evaluate(qrels, run, list(metrics), per_query=True)
        cell_dir.mkdir(parents=True, exist_ok=True)
        write_run(run, out / "runs" / f"{dataset}__{name}.trec", tag=name)
        (cell_dir / "per_query.json").write_text(json.dumps(result.per_query, indent=1) + "\n")
        cell.update(metrics=result.metrics, index_bytes=dir_size(index_dir),
                    latency_ms=1000 * search_s / max(len(queries), 1),
                    wall_s=time.perf_counter() - start, num_queries=result.num_queries)
        atomic_write_json(result_file, {"key": result_key, "cell": cell}, indent=1)
        return cell
    except Exception as e:  # a failing configuration must not stop the grid
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        return {**cell, "status": "failed", "error": detail, "wall_s": time.perf_counter() - start}


def run_grid(root: str | os.PathLike, datasets: list[str], configs: dict[str, dict],
             out: str | os.PathLike, split: str = "test", k: int = 1000,
             metrics: tuple[str, ...] = DEFAULT_METRICS, progress: bool = True) -> list[dict]:
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(datasets) * len(configs), unit="cell", desc="beir grid")
    for dataset in datasets:
        for name, options in configs.items():
            if bar is not None:
                bar.set_postfix_str(f"{dataset} / {name}")
            cell = run_cell(root, dataset, name, options, out, split, k, metrics)
            cells.append(cell)
            if bar is not None:
                bar.update()
                if cell["status"] != "ok":
                    bar.write(f"{dataset} / {name}: {cell['status']}: {cell['error'].splitlines()[-1]}")
    if bar is not None:
        bar.close()
    return cells
