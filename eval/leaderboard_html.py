"""The BEIR leaderboard as one self-contained HTML page (``leaderboard.html``).

Rendered from the same cells as ``eval.leaderboard`` (see its docstring). The page needs no
network: CSS and JS are inline (and the only ones its Content-Security-Policy allows, by hash),
plots are ``data:image/png;base64`` images. Everything from user data (configuration, dataset
and metric names, options in commands, error messages) is HTML-escaped.

Structure, for scripts and browser tests:

- ``table.leaderboard``: one ``tr.run[data-config=NAME]`` per configuration; a score cell
  ``td.score[data-dataset=NAME]`` (``td.score.avg`` for the average) holds one
  ``span.v[data-metric=M]`` per metric (``data-value`` = the exact float; no ``data-value`` for
  a failed / missing cell), all but the selected metric ``hidden``; ``span.delta`` is the
  difference from the reference (``pos`` / ``neg`` / ``zero``, plus ``flag`` beyond tolerance).
  ``select#metric`` picks the metric shown.
- ``th[data-sort=num|text]``: click to sort (numbers best first, names A-Z), again to reverse;
  ``aria-sort`` says the current order; cells without a value stay last.
- ``td.reproduce code.command[data-dataset=NAME]``: the ``retriever index`` and ``retriever
  eval`` lines that redo that cell; ``code.command.run-command``: the ``retriever beir`` line
  that made the page. ``button.copy`` copies the code next to it.
- ``table.reference`` (reference comparison), ``table.cost``, ``ul.errors``, ``figure.plot``.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.leaderboard import (Reference, _averages, _first_line, _index_mb, _num, _ok, _ordered, _status,
                              _value, compare_reference, load_reference)
from indexing.io import atomic_write_text

__all__ = ["render_leaderboard_html", "write_leaderboard_html"]

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto;
       max-width: 96rem; padding: 0 1rem; color: #1b1f24; }
h1 { margin-bottom: .2rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .55rem; vertical-align: top; }
thead th { background: #f6f8fa; white-space: nowrap; }
th[data-sort] { cursor: pointer; user-select: none; }
th[data-sort]::after { content: " \\2195"; color: #8c959f; }
th[aria-sort=ascending]::after { content: " \\25B2"; color: #1b1f24; }
th[aria-sort=descending]::after { content: " \\25BC"; color: #1b1f24; }
td.num, td.score { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.config { font-weight: 600; white-space: nowrap; }
tr.run:nth-child(even), table.cost tr:nth-child(even) { background: #fafbfc; }
.status { color: #8c959f; font-style: italic; }
.status.failed { color: #cf222e; }
.delta { display: block; font-size: .8em; }
.delta.pos { color: #1a7f37; }
.delta.neg { color: #cf222e; }
.delta.zero { color: #57606a; }
.delta.flag { font-weight: 700; background: #fff8c5; border-radius: 3px; padding: 0 .2rem; }
.partial { color: #9a6700; }
.controls { margin: .5rem 0; }
td.reproduce { min-width: 9rem; }
td.reproduce details[open] { min-width: 40rem; }
.cmd { position: relative; margin: .3rem 0; text-align: left; }
.cmd-label { font-size: .85em; color: #57606a; }
pre { margin: 0; background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 4px;
      padding: .4rem 4.2rem .4rem .5rem; }
code.command { white-space: pre-wrap; overflow-wrap: anywhere; font-size: .85em; }
button.copy { position: absolute; top: .2rem; right: .2rem; font-size: .8em; cursor: pointer; }
figure.plot img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
ul.errors details { display: inline-block; vertical-align: top; }
ul.errors pre { white-space: pre-wrap; }
.note { color: #57606a; font-size: .9em; }
"""

_JS = """
'use strict';
(function () {
  function sortKey(cell, numeric) {
    var el = cell.querySelector('.v:not([hidden])') || cell;
    var raw = el.getAttribute('data-value');
    if (raw === null || raw === '') return null;
    if (!numeric) return raw.toLowerCase();
    var x = parseFloat(raw);
    return isNaN(x) ? null : x;
  }

  function sortTable(table, th, direction) {
    var numeric = th.getAttribute('data-sort') === 'num';
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (row) {
      return {row: row, key: sortKey(row.cells[col], numeric), order: +row.getAttribute('data-order')};
    });
    var sign = direction === 'ascending' ? 1 : -1;
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        if (a.key === null && b.key === null) return a.order - b.order;
        return a.key === null ? 1 : -1;
      }
      var c = numeric ? a.key - b.key : a.key.localeCompare(b.key);
      return c !== 0 ? sign * c : a.order - b.order;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    table.querySelectorAll('th[data-sort]').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', direction);
  }

  function onHeader(table, th) {
    var current = th.getAttribute('aria-sort');
    var first = th.getAttribute('data-sort') === 'num' ? 'descending' : 'ascending';
    var direction = !current ? first : (current === 'ascending' ? 'descending' : 'ascending');
    sortTable(table, th, direction);
  }

  function showMetric(table, metric) {
    table.setAttribute('data-metric', metric);
    table.querySelectorAll('.v[data-metric]').forEach(function (el) {
      el.hidden = el.getAttribute('data-metric') !== metric;
    });
    var sorted = table.querySelector('th[aria-sort][data-sort=num]');
    if (sorted) sortTable(table, sorted, sorted.getAttribute('aria-sort'));
  }

  function copyFallback(text) {
    var area = document.createElement('textarea');
    area.value = text;
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  function copy(button) {
    var code = button.parentNode.querySelector('code');
    var text = code.textContent;
    var done = function () {
      button.textContent = 'copied';
      setTimeout(function () { button.textContent = 'copy'; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { if (copyFallback(text)) done(); });
    } else if (copyFallback(text)) {
      done();
    }
  }

  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('th[data-sort]').forEach(function (th) {
      th.tabIndex = 0;
      th.addEventListener('click', function () { onHeader(table, th); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onHeader(table, th); }
      });
    });
  });
  var select = document.getElementById('metric');
  var board = document.querySelector('table.leaderboard');
  if (select && board) {
    select.addEventListener('change', function () { showMetric(board, select.value); });
  }
  document.querySelectorAll('button.copy').forEach(function (button) {
    button.addEventListener('click', function () { copy(button); });
  });
})();
"""


# --------------------------------------------------------------------------- small helpers

def _e(value: Any) -> str:
    """HTML-escape text for element content and quoted attribute values."""
    return html.escape(str(value), quote=True)


def csp_hash(text: str) -> str:
    """The CSP source ``'sha256-...'`` that allows exactly this inline style or script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _data_value(v: float | None) -> str:
    """`` data-value="..."`` holding the exact float, or nothing for a missing value."""
    return "" if v is None else f' data-value="{float(v)!r}"'


def _code_block(text: str, classes: str = "command", dataset: str | None = None, label: str | None = None) -> str:
    """A copyable ``<pre><code>`` block with its copy button."""
    data = "" if dataset is None else f' data-dataset="{_e(dataset)}"'
    head = "" if label is None else f'<div class="cmd-label">{_e(label)}</div>'
    return (f'<div class="cmd"{data}>{head}<pre><code class="{classes}"{data}>{_e(text)}</code></pre>'
            f'<button type="button" class="copy" title="copy to the clipboard">copy</button></div>')


def _delta_span(row: Mapping[str, Any] | None) -> str:
    """The coloured difference from the reference (a compare_reference row), or ''."""
    if row is None or row["diff"] is None:
        return ""
    diff = row["diff"]
    shown = round(diff, 4)
    sign = "pos" if shown > 0 else "neg" if shown < 0 else "zero"
    flag = " flag" if row["flag"] else ""
    title = f"reference {row['reference']:.4f}; difference {diff:+.6f}" + (
        " (beyond tolerance)" if row["flag"] else "")
    return f'<span class="delta {sign}{flag}" title="{_e(title)}">{diff:+.4f}{" !" if flag else ""}</span>'


def _table(classes: str, header: Sequence[tuple[str, str | None]], rows: Sequence[str], attrs: str = "") -> str:
    """A table: header cells (label, sort kind "num" / "text" or None), rendered ``<tr>`` rows."""
    ths = "".join(f'<th scope="col" data-sort="{sort}">{_e(label)}</th>' if sort
                  else f'<th scope="col">{_e(label)}</th>' for label, sort in header)
    return (f'<table class="{classes}"{attrs}><thead><tr>{ths}</tr></thead>'
            f'<tbody>\n{"".join(rows)}</tbody></table>')


# --------------------------------------------------------------------------- sections

def _score_cell(cell: Mapping | None, metrics: Sequence[str], ref_rows: Mapping[str, Mapping],
                dataset: str) -> str:
    """``td.score``: one span per metric (value + reference delta, or the cell's status)."""
    spans = []
    for i, m in enumerate(metrics):
        hidden = " hidden" if i else ""
        v = _value(cell, m)
        if v is None:
            status = _status(cell) if not _ok(cell) else "-"
            err = _first_line(cell.get("error")) if cell is not None and cell.get("error") else status
            spans.append(f'<span class="v status {_e(status)}" data-metric="{_e(m)}" '
                         f'title="{_e(err)}"{hidden}>{_e(status)}</span>')
        else:
            spans.append(f'<span class="v" data-metric="{_e(m)}"{_data_value(v)}{hidden}>'
                         f'{v:.4f}{_delta_span(ref_rows.get(m))}</span>')
    return f'<td class="score" data-dataset="{_e(dataset)}">{"".join(spans)}</td>'


def _avg_cell(avg: Mapping[str, float | None], metrics: Sequence[str], partial: bool) -> str:
    """``td.score.avg``: the mean over the datasets that ran, starred when some did not."""
    spans = []
    for i, m in enumerate(metrics):
        hidden = " hidden" if i else ""
        v = avg.get(m)
        star = '<span class="partial" title="average over a subset of the datasets">*</span>' if partial else ""
        text = "-" if v is None else f"{v:.4f}"
        spans.append(f'<span class="v" data-metric="{_e(m)}"{_data_value(v)}{hidden}>{text}{star}</span>')
    return f'<td class="score avg">{"".join(spans)}</td>'


def _reproduce_cell(per_dataset: Mapping[str, str] | None, datasets: Sequence[str]) -> str:
    """``td.reproduce``: per dataset, the commands that redo the cell, folded."""
    if not per_dataset:
        return '<td class="reproduce"><span class="status">not recorded</span></td>'
    blocks = "".join(_code_block(per_dataset[ds], dataset=ds, label=ds) for ds in datasets if ds in per_dataset)
    return f'<td class="reproduce"><details><summary>commands</summary>{blocks}</details></td>'


def _leaderboard_table(configs, datasets, grid, metrics, avgs, partial, by_ref, commands) -> str:
    """``table.leaderboard``: one ``tr.run`` per configuration."""
    header = [("config", "text"), *((ds, "num") for ds in datasets), ("avg", "num"), ("reproduce", None)]
    rows = []
    for order, cfg in enumerate(configs):
        cells = [f'<td class="config" data-value="{_e(cfg)}">{_e(cfg)}</td>']
        cells += [_score_cell(grid.get((cfg, ds)), metrics, by_ref.get((cfg, ds), {}), ds) for ds in datasets]
        cells.append(_avg_cell(avgs[cfg], metrics, partial[cfg]))
        cells.append(_reproduce_cell(commands.get(cfg), datasets))
        rows.append(f'<tr class="run" data-config="{_e(cfg)}" data-order="{order}">{"".join(cells)}</tr>\n')
    return _table("leaderboard sortable", header, rows, attrs=f' data-metric="{_e(metrics[0])}"')


def _metric_select(metrics: Sequence[str]) -> str:
    """``select#metric``: which metric the leaderboard shows."""
    options = "".join(f'<option value="{_e(m)}">{_e(m)}</option>' for m in metrics)
    return f'<p class="controls"><label>metric <select id="metric">{options}</select></label></p>'


def _reference_section(comparison: Sequence[Mapping[str, Any]], tolerance: float) -> str:
    """``table.reference``: ours vs. the published numbers, like the Markdown section."""
    head = (f'<h2 id="reference">Reference comparison</h2><p class="note">Difference = ours &minus; '
            f'reference: green above, red below; <b>!</b> when |difference| &gt; {_e(f"{tolerance:g}")}.</p>')
    if not comparison:
        return head + "<p>No (config, dataset) pair of this run appears in the reference.</p>"
    header = [("config", "text"), ("dataset", "text"), ("metric", "text"), ("ours", "num"),
              ("reference", "num"), ("difference", "num")]
    rows = []
    for order, r in enumerate(comparison):
        ours = (f'<td class="num"{_data_value(r["ours"])}>{r["ours"]:.4f}</td>' if r["ours"] is not None
                else f'<td class="num"><span class="status {_e(r["status"])}">{_e(r["status"])}</span></td>')
        rows.append(f'<tr class="ref{" flagged" if r["flag"] else ""}" data-config="{_e(r["config"])}" '
                    f'data-order="{order}"><td data-value="{_e(r["config"])}">{_e(r["config"])}</td>'
                    f'<td data-value="{_e(r["dataset"])}">{_e(r["dataset"])}</td>'
                    f'<td data-value="{_e(r["metric"])}">{_e(r["metric"])}</td>{ours}'
                    f'<td class="num"{_data_value(r["reference"])}>{r["reference"]:.4f}</td>'
                    f'<td class="num"{_data_value(r["diff"])}>{_delta_span(r) or "-"}</td></tr>\n')
    return head + _table("reference sortable", header, rows)


def _cost_section(configs, datasets, grid) -> str:
    """``table.cost``: time, index size and latency of every cell."""
    header = [("config", "text"), ("dataset", "text"), ("status", "text"), ("wall (s)", "num"),
              ("index (MB)", "num"), ("latency (ms/query)", "num"), ("cached", "text")]
    rows = []
    for cfg in configs:
        for ds in datasets:
            cell = grid.get((cfg, ds))
            nums = [(_num(cell, "wall_s"), ".1f"), (_index_mb(cell), ".1f"), (_num(cell, "latency_ms"), ".2f")]
            tds = "".join(f'<td class="num"{_data_value(v)}>{"-" if v is None else format(v, spec)}</td>'
                          for v, spec in nums)
            cached = "yes" if cell is not None and cell.get("cached") else "no"
            status = _status(cell)
            rows.append(f'<tr class="cell" data-config="{_e(cfg)}" data-dataset="{_e(ds)}" '
                        f'data-order="{len(rows)}"><td data-value="{_e(cfg)}">{_e(cfg)}</td>'
                        f'<td data-value="{_e(ds)}">{_e(ds)}</td>'
                        f'<td data-value="{_e(status)}"><span class="status {_e(status)}">{_e(status)}</span></td>'
                        f'{tds}<td data-value="{cached}">{cached}</td></tr>\n')
    return '<h2 id="cost">Cost</h2>' + _table("cost sortable", header, rows)


def _errors_section(configs, datasets, grid) -> str:
    """``ul.errors``: every cell that did not run (or reported an error), full message folded."""
    items = []
    for cfg in configs:
        for ds in datasets:
            c = grid.get((cfg, ds))
            if _ok(c) and not (c is not None and c.get("error")):
                continue
            full = str(c.get("error")) if c is not None and c.get("error") else _status(c)
            items.append(f'<li data-config="{_e(cfg)}" data-dataset="{_e(ds)}"><code>{_e(cfg)}</code> / '
                         f'<code>{_e(ds)}</code>: <details><summary>{_e(_first_line(full))}</summary>'
                         f'<pre>{_e(full)}</pre></details></li>')
    if not items:
        return ""
    return '<h2 id="errors">Errors</h2><ul class="errors">' + "".join(items) + "</ul>"


def _plots_section(images: Sequence[str | Path]) -> str:
    """``figure.plot`` per PNG, inlined as a data: URL (no file next to the page is needed)."""
    figures = []
    for p in images:
        p = Path(p)
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        figures.append(f'<figure class="plot" data-name="{_e(p.name)}"><img alt="{_e(p.stem)}" '
                       f'src="data:image/png;base64,{data}"><figcaption>{_e(p.name)}</figcaption></figure>')
    return '<h2 id="plots">Plots</h2>' + "".join(figures) if figures else ""


def _run_section(command: str | None, datasets: Sequence[str]) -> str:
    """How the page was made: the ``retriever beir`` line, and how to read the commands."""
    parts = [f'<p class="note">{len(datasets)} dataset(s): {_e(", ".join(datasets))}.']
    if command:
        parts.append(' Made by the command below; paths in every command are as given to it, so relative '
                     'ones are relative to the directory it ran in.</p>')
        parts.append(_code_block(command, classes="command run-command"))
    else:
        parts.append("</p>")
    parts.append('<p class="note">Each row&#39;s <i>commands</i> rebuild that configuration&#39;s index for a '
                 'dataset with <code>retriever index</code> and score it with <code>retriever eval</code>, '
                 'giving the number in the cell.</p>')
    return "".join(parts)


# --------------------------------------------------------------------------- page

def render_leaderboard_html(cells: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("ndcg@10", "recall@100"),
                            reference: Reference | str | Path | None = None, tolerance: float = 0.005,
                            commands: Mapping[str, Mapping[str, str]] | None = None,
                            command: str | None = None, images: Sequence[str | Path] = (),
                            title: str = "BEIR leaderboard") -> str:
    """The page as a string.

    ``commands`` is {config: {dataset: shell text}} (``retriever.beir_grid.reproduce_commands``),
    ``command`` the line that produced the grid, ``images`` PNG files to inline.
    """
    metrics = list(metrics) or ["ndcg@10"]
    cells = list(cells)
    if isinstance(reference, (str, Path)):
        reference = load_reference(reference)
    configs, datasets, grid = _ordered(cells)
    avgs, partial = _averages(configs, datasets, grid, metrics)
    comparison = compare_reference(cells, reference, metrics, tolerance) if reference else []
    by_ref: dict[tuple[str, str], dict[str, Mapping]] = {}
    for r in comparison:
        by_ref.setdefault((r["config"], r["dataset"]), {})[r["metric"]] = r
    body = [f"<h1>{_e(title)}</h1>", _run_section(command, datasets),
            '<h2 id="scores">Scores</h2>', _metric_select(metrics),
            _leaderboard_table(configs, datasets, grid, metrics, avgs, partial, by_ref, commands or {})]
    if any(partial.values()):
        body.append('<p class="note">* average over the datasets that completed; at least one dataset failed '
                    'or is missing for this config, so it is not comparable with complete rows.</p>')
    if reference is not None:
        body.append(_reference_section(comparison, tolerance))
    body += [_plots_section(images), _cost_section(configs, datasets, grid), _errors_section(configs, datasets, grid)]
    csp = (f"default-src 'none'; img-src data:; style-src {csp_hash(_CSS)}; script-src {csp_hash(_JS)}; "
           "base-uri 'none'; form-action 'none'")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(b for b in body if b) + f"\n<script>{_JS}</script>\n</body></html>\n")


def write_leaderboard_html(cells: Sequence[Mapping[str, Any]], out_dir: str | Path, **options) -> Path:
    """Write ``leaderboard.html`` under ``out_dir`` (options: see :func:`render_leaderboard_html`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "leaderboard.html"
    atomic_write_text(path, render_leaderboard_html(cells, **options))
    return path
