"""Leaderboard rendering for a BEIR grid run: Markdown / CSV / JSON tables and optional plots.

Pure rendering over a list of *cells*, one per (config, dataset):

    {"config": str, "dataset": str, "status": "ok" | "failed" | "missing", "error": str | None,
     "metrics": {"ndcg@10": float, ...}, "wall_s": float | None, "index_bytes": int | None,
     "latency_ms": float | None, "cached": bool}

A (config, dataset) pair that has no cell at all is rendered as ``missing``.
``eval.leaderboard_html`` renders the same cells as one self-contained HTML page.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.report import md_cell, md_code, md_table
from indexing.io import atomic_open, atomic_write_text

__all__ = ["write_leaderboard", "plot_leaderboard", "load_reference", "compare_reference"]

_MB = 1_000_000
_PLOTS_HINT = "plots need matplotlib: pip install 'retriever[plots]'"

Reference = Mapping[tuple[str, str], Mapping[str, float]]


# --------------------------------------------------------------------------- helpers

def _ordered(cells: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], Mapping]]:
    """configs and datasets in first-seen order, and {(config, dataset): cell} (last one wins)."""
    configs: dict[str, None] = {}
    datasets: dict[str, None] = {}
    grid: dict[tuple[str, str], Mapping] = {}
    for c in cells:
        configs.setdefault(str(c["config"]), None)
        datasets.setdefault(str(c["dataset"]), None)
        grid[(str(c["config"]), str(c["dataset"]))] = c
    return list(configs), list(datasets), grid


def _ok(cell: Mapping | None) -> bool:
    return cell is not None and cell.get("status") == "ok"


def _status(cell: Mapping | None) -> str:
    return "missing" if cell is None else str(cell.get("status") or "missing")


def _value(cell: Mapping | None, metric: str) -> float | None:
    if not _ok(cell):
        return None
    v = (cell.get("metrics") or {}).get(metric)
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _averages(configs, datasets, grid, metrics) -> tuple[dict[str, dict[str, float | None]], dict[str, bool]]:
    """{config: {metric: mean over ok cells}} and {config: True if some dataset is not ok}."""
    avgs: dict[str, dict[str, float | None]] = {}
    partial: dict[str, bool] = {}
    for cfg in configs:
        partial[cfg] = any(not _ok(grid.get((cfg, ds))) for ds in datasets)
        avgs[cfg] = {}
        for m in metrics:
            vals = [v for ds in datasets if (v := _value(grid.get((cfg, ds)), m)) is not None]
            avgs[cfg][m] = sum(vals) / len(vals) if vals else None
    return avgs, partial


def _first_line(text: Any) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    return md_table(header, rows, left, min_width=3)


def _fmt(v: float | None, spec: str, empty: str = "-") -> str:
    return empty if v is None else format(v, spec)


def _index_mb(cell: Mapping | None) -> float | None:
    b = None if cell is None else cell.get("index_bytes")
    return None if b is None else float(b) / _MB


def _num(cell: Mapping | None, key: str) -> float | None:
    v = None if cell is None else cell.get(key)
    return None if v is None else float(v)


# --------------------------------------------------------------------------- reference

def load_reference(path: str | Path) -> dict[tuple[str, str], dict[str, float]]:
    """Read `{config: {dataset: {metric: value}}}` YAML into {(config, dataset): {metric: value}}.

    ValueError names the file and the offending entry when the structure or a value is malformed.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{path}: expected a mapping {{config: {{dataset: {{metric: value}}}}}}, "
                         f"got {type(data).__name__}")
    out: dict[tuple[str, str], dict[str, float]] = {}
    for cfg, per_ds in data.items():
        if not isinstance(per_ds, Mapping):
            raise ValueError(f"{path}: entry {cfg!r} must map dataset -> metrics, got {per_ds!r}")
        for ds, scores in per_ds.items():
            where = f"{cfg}/{ds}"
            if not isinstance(scores, Mapping) or not scores:
                raise ValueError(f"{path}: entry {where!r} must map metric -> number, got {scores!r}")
            row: dict[str, float] = {}
            for metric, value in scores.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"{path}: entry {where!r} metric {metric!r} must be a finite number, "
                                     f"got {value!r}")
                row[str(metric)] = float(value)
            out[(str(cfg), str(ds))] = row
    return out


def compare_reference(cells: Sequence[Mapping[str, Any]], reference: Reference,
                      metrics: Iterable[str] = ("ndcg@10", "recall@100"),
                      tolerance: float = 0.005) -> list[dict[str, Any]]:
    """One row per (config, dataset, metric) present both in the cells and in `reference`.

    Row: {config, dataset, metric, status, ours, reference, diff, flag}; `ours`/`diff` are None
    when the cell is not ok; `flag` is True when |diff| > tolerance.
    """
    metrics = list(metrics)
    configs, datasets, grid = _ordered(cells)
    rows = []
    for cfg in configs:
        for ds in datasets:
            ref = reference.get((cfg, ds))
            if ref is None or (cfg, ds) not in grid:
                continue
            cell = grid[(cfg, ds)]
            for m in metrics:
                if m not in ref:
                    continue
                ours = _value(cell, m)
                diff = None if ours is None else ours - float(ref[m])
                rows.append({"config": cfg, "dataset": ds, "metric": m, "status": _status(cell),
                             "ours": ours, "reference": float(ref[m]), "diff": diff,
                             "flag": diff is not None and abs(diff) > tolerance + 1e-12})
    return rows


# --------------------------------------------------------------------------- tables

def write_leaderboard(cells: Sequence[Mapping[str, Any]], out_dir: str | Path,
                      metrics: Sequence[str] = ("ndcg@10", "recall@100"),
                      reference: Reference | str | Path | None = None,
                      tolerance: float = 0.005) -> dict:
    """Write leaderboard.md / .csv / .json under `out_dir`; returns the JSON dict.

    `reference` is {(config, dataset): {metric: value}} (see `load_reference`) or a YAML path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = list(metrics)
    cells = list(cells)
    if isinstance(reference, (str, Path)):
        reference = load_reference(reference)
    configs, datasets, grid = _ordered(cells)
    avgs, partial = _averages(configs, datasets, grid, metrics)
    comparison = compare_reference(cells, reference, metrics, tolerance) if reference else []

    # each file replaced whole (a full disk cut the previous ones to page-sized pieces, in place)
    atomic_write_text(out_dir / "leaderboard.md", _markdown(configs, datasets, grid, metrics, avgs, partial, comparison,
                                                            tolerance, has_reference=reference is not None))
    atomic_write_text(out_dir / "leaderboard.csv", _csv(configs, datasets, grid, metrics))

    result = {"metrics": metrics, "datasets": datasets, "configs": configs, "cells": cells,
              "averages": avgs, "reference": comparison}
    atomic_write_text(out_dir / "leaderboard.json", json.dumps(result, indent=2, default=str) + "\n")
    return result


def _markdown(configs, datasets, grid, metrics, avgs, partial, comparison, tolerance,
              has_reference) -> str:
    parts = ["# BEIR leaderboard", ""]
    any_partial = any(partial.values())
    for m in metrics:
        rows = []
        for cfg in configs:
            row = [cfg]
            for ds in datasets:
                cell = grid.get((cfg, ds))
                v = _value(cell, m)
                row.append(f"{v:.4f}" if v is not None else (_status(cell) if not _ok(cell) else "-"))
            avg = avgs[cfg][m]
            row.append(("-" if avg is None else f"{avg:.4f}") + ("*" if partial[cfg] else ""))
            rows.append(row)
        parts += [f"## {m}", "", _md_table(["config", *datasets, "avg"], rows), ""]
    if any_partial:
        parts += ["\\* average over the datasets that completed; at least one dataset failed or "
                  "is missing for this config, so it is not comparable with complete rows.", ""]

    perf_rows = []
    for cfg in configs:
        for ds in datasets:
            cell = grid.get((cfg, ds))
            perf_rows.append([cfg, ds, _status(cell), _fmt(_num(cell, "wall_s"), ".1f"),
                              _fmt(_index_mb(cell), ".1f"), _fmt(_num(cell, "latency_ms"), ".2f"),
                              "yes" if cell is not None and cell.get("cached") else "no"])
    parts += ["## Cost", "",
              _md_table(["config", "dataset", "status", "wall (s)", "index (MB)",
                         "latency (ms/query)", "cached"], perf_rows, left=3), ""]

    if has_reference:
        parts += [f"## Reference comparison (flag `!` when |difference| > {tolerance:g})", ""]
        if comparison:
            rows = [[r["config"], r["dataset"], r["metric"],
                     f"{r['ours']:.4f}" if r["ours"] is not None else r["status"],
                     f"{r['reference']:.4f}",
                     f"{r['diff']:+.4f}" if r["diff"] is not None else "-",
                     "!" if r["flag"] else ""] for r in comparison]
            parts += [_md_table(["config", "dataset", "metric", "ours", "reference", "difference",
                                 "flag"], rows, left=3), ""]
        else:
            parts += ["No (config, dataset) pair of this run appears in the reference.", ""]

    errors = [(cfg, ds, grid.get((cfg, ds))) for cfg in configs for ds in datasets]
    errors = [(cfg, ds, c) for cfg, ds, c in errors if not _ok(c) or (c is not None and c.get("error"))]
    if errors:
        parts += ["## Errors", ""]
        for cfg, ds, c in errors:
            msg = _first_line(c.get("error")) if c is not None and c.get("error") else _status(c)
            parts.append(f"- {md_code(cfg)} / {md_code(ds)}: {md_cell(msg)}")
        parts.append("")
    return "\n".join(parts)


def _csv(configs, datasets, grid, metrics) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["config", "dataset", "status", *metrics, "wall_s", "index_mb", "latency_ms", "error"])

    def num(v: float | None) -> str:
        return "" if v is None else repr(float(v))

    for cfg in configs:
        for ds in datasets:
            cell = grid.get((cfg, ds))
            err = "" if cell is None or not cell.get("error") else _first_line(cell["error"])
            w.writerow([cfg, ds, _status(cell), *(num(_value(cell, m)) for m in metrics),
                        num(_num(cell, "wall_s")), num(_index_mb(cell)), num(_num(cell, "latency_ms")),
                        err])
    return buf.getvalue()


# --------------------------------------------------------------------------- plots

def _safe_name(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]+", "_", metric)


def plot_leaderboard(cells: Sequence[Mapping[str, Any]], out_dir: str | Path,
                     metric: str = "ndcg@10") -> list[Path]:
    """Write `bars_<metric>.png` and `tradeoff.png` under `out_dir`; returns their paths.

    Cells that are not ok are skipped. Needs matplotlib (`pip install 'retriever[plots]'`).
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(_PLOTS_HINT) from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs, datasets, grid = _ordered(list(cells))
    colors = plt.get_cmap("tab10")
    paths: list[Path] = []

    # grouped bars: x = datasets, one bar per config
    fig, ax = plt.subplots(figsize=(12, 7), dpi=100)
    n = max(len(configs), 1)
    width = 0.8 / n
    many = len(configs) * len(datasets) > 12  # narrow bars: vertical labels
    top = 0.0
    for i, cfg in enumerate(configs):
        xs, ys = [], []
        for j, ds in enumerate(datasets):
            v = _value(grid.get((cfg, ds)), metric)
            if v is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(v)
        top = max([top, *ys])
        bars = ax.bar(xs, ys, width=width * 0.95, label=cfg, color=colors(i % 10))
        ax.bar_label(bars, labels=[f"{y:.3f}" for y in ys], padding=2,
                     fontsize=9 if many else 10, rotation=90 if many else 0)
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels(datasets, rotation=30 if len(datasets) > 6 else 0,
                       ha="right" if len(datasets) > 6 else "center", fontsize=11)
    ax.set_ylim(0, max(top * (1.25 if many else 1.15), 0.05))
    ax.set_xlabel("dataset", fontsize=12)
    ax.set_ylabel(metric, fontsize=12)
    ax.set_title(f"{metric} per dataset and configuration (failed / missing cells omitted)", fontsize=14)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if configs:
        ax.legend(title="config", fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    p = out_dir / f"bars_{_safe_name(metric)}.png"
    with atomic_open(p, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    paths.append(p)

    # trade-off: x = mean latency (log), y = mean metric, one point per config
    fig, ax = plt.subplots(figsize=(12, 7), dpi=100)
    plotted = 0
    for i, cfg in enumerate(configs):
        oks = [grid[(cfg, ds)] for ds in datasets if _ok(grid.get((cfg, ds)))]
        vals = [v for c in oks if (v := _value(c, metric)) is not None]
        lats = [float(c["latency_ms"]) for c in oks
                if c.get("latency_ms") is not None and float(c["latency_ms"]) > 0]
        if not vals or not lats:
            continue
        x, y = sum(lats) / len(lats), sum(vals) / len(vals)
        partial = len(vals) < len(datasets)
        ax.scatter([x], [y], s=120, color=colors(i % 10), zorder=3,
                   marker="o" if not partial else "^")
        lat = f"{x:.0f}" if x >= 100 else f"{x:.3g}"
        ax.annotate(f"{cfg}{' *' if partial else ''}\n({y:.3f}, {lat} ms)", (x, y),
                    textcoords="offset points", xytext=(8, 6), fontsize=10)
        plotted += 1
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(  # label the 2x and 5x minor ticks only
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    ax.set_xlabel("mean query latency (ms, log scale)", fontsize=12)
    ax.set_ylabel(f"{metric}, mean over datasets", fontsize=12)
    ax.set_title(f"Quality vs. latency ({metric}); * = average over a subset of datasets", fontsize=14)
    ax.grid(True, which="both", alpha=0.3)
    if plotted:
        ax.margins(x=0.25, y=0.2)
    else:
        ax.text(0.5, 0.5, "no configuration has both latency and metric values",
                transform=ax.transAxes, ha="center", va="center", fontsize=12)
    fig.tight_layout()
    p = out_dir / "tradeoff.png"
    with atomic_open(p, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    paths.append(p)
    return paths
