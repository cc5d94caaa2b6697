"""Result tables (plain text that is also Markdown) and JSON summaries."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from eval.metrics import parse_metric


_CONTROL = {c: " " for c in range(32)} | {0x7F: " "}


def md_cell(value) -> str:
    """``value`` as one Markdown table cell: a ``|`` escaped (it would end the cell), line breaks and
    other control characters as spaces (one would end the row), ``<`` and ``>`` as entities (raw HTML
    renders in Markdown)."""
    return (str(value).translate(_CONTROL).replace("\\", "\\\\").replace("|", "\\|")
            .replace("<", "&lt;").replace(">", "&gt;"))


def md_code(value) -> str:
    """``value`` as a Markdown code span: fenced by more backticks than it holds in a row, on one line."""
    text = str(value).translate(_CONTROL)
    longest = max(map(len, re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest or text.startswith(" ") else f"{fence}{text}{fence}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1, min_width: int = 0) -> str:
    """Aligned Markdown table; the first ``left`` columns left-aligned, the rest right-aligned.
    Every cell passes through ``md_cell`` (names from users: runs, datasets, configurations)."""
    header = [md_cell(c) for c in header]
    rows = [[md_cell(c) for c in r] for r in rows]
    widths = [max(min_width, *(len(str(r[i])) for r in [header, *rows])) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_table(rows: Sequence[tuple[str, Mapping[str, float]]], metrics: Sequence[str]) -> str:
    """An aligned Markdown table `| name | ndcg@10 | ... |`, values to 4 decimals, "-" when missing."""
    names = [parse_metric(m).name for m in metrics]
    body = [[label, *(f"{vals[n]:.4f}" if n in vals else "-" for n in names)] for label, vals in rows]
    return md_table(["name", *names], body)


def metrics_json(dataset: str, split: str, num_queries: int, metrics: Mapping[str, float]) -> dict:
    """{"dataset", "split", "num_queries", "metrics": {name: value}} for `--json` output."""
    return {
        "dataset": str(dataset),
        "split": split,
        "num_queries": int(num_queries),
        "metrics": {str(k): float(v) for k, v in metrics.items()},
    }
