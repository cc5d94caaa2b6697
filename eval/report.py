"""Result tables (plain text that is also Markdown) and JSON summaries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eval.metrics import parse_metric


def format_table(rows: Sequence[tuple[str, Mapping[str, float]]], metrics: Sequence[str]) -> str:
    """An aligned Markdown table `| name | ndcg@10 | ... |`, values to 4 decimals, "-" when missing."""
    names = [parse_metric(m).name for m in metrics]
    header = ["name", *names]
    body = [[label, *(f"{vals[n]:.4f}" if n in vals else "-" for n in names)] for label, vals in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def metrics_json(dataset: str, split: str, num_queries: int, metrics: Mapping[str, float]) -> dict:
    """{"dataset", "split", "num_queries", "metrics": {name: value}} for `--json` output."""
    return {
        "dataset": str(dataset),
        "split": split,
        "num_queries": int(num_queries),
        "metrics": {str(k): float(v) for k, v in metrics.items()},
    }
