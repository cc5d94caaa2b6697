import csv
import json
import sys
from pathlib import Path

import pytest

from eval.leaderboard import load_reference, plot_leaderboard, write_leaderboard

REPO = Path(__file__).resolve().parents[1]
REF_YAML = REPO / "scripts" / "data" / "reference" / "pyserini-beir-bm25.yaml"


def cell(config, dataset, status="ok", ndcg=None, recall=None, error=None, wall=10.0,
         index_bytes=5_000_000, latency=2.0):
    metrics = {"ndcg@10": ndcg, "recall@100": recall} if status == "ok" else {}
    return {"config": config, "dataset": dataset, "status": status, "error": error,
            "metrics": metrics, "wall_s": wall, "index_bytes": index_bytes,
            "latency_ms": latency, "cached": False}


@pytest.fixture
def cells():
    return [
        cell("bm25-flat", "scifact", ndcg=0.6790, recall=0.9253, latency=1.5),
        cell("bm25-flat", "nfcorpus", ndcg=0.3200, recall=0.2400, latency=2.5),
        cell("splade", "scifact", ndcg=0.7000, recall=0.9400, latency=20.0, index_bytes=123_456_789),
        cell("splade", "nfcorpus", status="failed",
             error="RuntimeError: CUDA out of memory | tried 2 GiB\nTraceback (most recent call last):",
             wall=None, index_bytes=None, latency=None),
    ]


def table(md: str, title: str) -> list[list[str]]:
    """Rows (split into stripped cells) of the Markdown table under `## title`."""
    lines = md.splitlines()
    i = lines.index(f"## {title}")
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            if rows:
                break
            continue
        rows.append([c.strip() for c in ln.strip("|").split(" | ")])
    return [rows[0], *rows[2:]]  # drop the alignment rule


def test_markdown_tables(cells, tmp_path):
    write_leaderboard(cells, tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    ndcg = table(md, "ndcg@10")
    assert ndcg[0] == ["config", "scifact", "nfcorpus", "avg"]
    assert ndcg[1] == ["bm25-flat", "0.6790", "0.3200", "0.4995"]
    assert ndcg[2] == ["splade", "0.7000", "failed", "0.7000*"]
    recall = table(md, "recall@100")
    assert recall[1] == ["bm25-flat", "0.9253", "0.2400", "0.5827"]
    assert recall[2][-1] == "0.9400*"
    assert "\\* average over the datasets that completed" in md
    cost = table(md, "Cost")
    assert cost[0][:6] == ["config", "dataset", "status", "wall (s)", "index (MB)", "latency (ms/query)"]
    assert cost[3][:6] == ["splade", "scifact", "ok", "10.0", "123.5", "20.00"]
    assert cost[4][:6] == ["splade", "nfcorpus", "failed", "-", "-", "-"]
    assert "## Reference comparison" not in md
    # errors: first line only, pipes escaped
    assert "- `splade` / `nfcorpus`: RuntimeError: CUDA out of memory \\| tried 2 GiB" in md
    assert "Traceback" not in md


def test_names_from_users_cannot_break_the_markdown(tmp_path):
    """Configuration and dataset names are cells: a '|' would end one, a line break a row, raw
    HTML would render; in the errors list a backtick would end the code span."""
    evil = "a|b\nc<img src=x onerror=alert(1)>`"
    write_leaderboard([cell(evil, "scifact", ndcg=0.5, recall=0.6), cell("ok", "scifact", status="failed",
                                                                         error="boom")], tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    rows = table(md, "ndcg@10")
    assert [len(r) for r in rows] == [3, 3, 3]  # config, scifact, avg: no cell split off
    assert rows[1][0] == "a\\|b c&lt;img src=x onerror=alert(1)&gt;`" and "<img" not in md
    assert "- `ok` / `scifact`: boom" in md
    from eval.report import md_code

    assert md_code("x``y") == "``` x``y ```" and md_code("plain") == "`plain`"

def test_missing_cell_and_no_star_when_complete(tmp_path):
    cells = [cell("a", "d1", ndcg=0.5, recall=0.6), cell("a", "d2", ndcg=0.7, recall=0.8),
             cell("b", "d1", ndcg=0.1, recall=0.2)]  # (b, d2) absent -> missing
    out = write_leaderboard(cells, tmp_path, metrics=["ndcg@10"])
    rows = table((tmp_path / "leaderboard.md").read_text(), "ndcg@10")
    assert rows[1] == ["a", "0.5000", "0.7000", "0.6000"]
    assert rows[2] == ["b", "0.1000", "missing", "0.1000*"]
    assert out["averages"] == {"a": {"ndcg@10": pytest.approx(0.6)}, "b": {"ndcg@10": pytest.approx(0.1)}}


def test_csv_rows(cells, tmp_path):
    write_leaderboard(cells, tmp_path)
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["config", "dataset", "status", "ndcg@10", "recall@100", "wall_s",
                             "index_mb", "latency_ms", "error"]
    assert [(r["config"], r["dataset"], r["status"]) for r in rows] == [
        ("bm25-flat", "scifact", "ok"), ("bm25-flat", "nfcorpus", "ok"),
        ("splade", "scifact", "ok"), ("splade", "nfcorpus", "failed")]
    assert float(rows[0]["ndcg@10"]) == pytest.approx(0.679)
    assert float(rows[2]["index_mb"]) == pytest.approx(123.456789)
    assert rows[3]["ndcg@10"] == "" and rows[3]["wall_s"] == ""
    assert rows[3]["error"] == "RuntimeError: CUDA out of memory | tried 2 GiB"


def test_json(cells, tmp_path):
    out = write_leaderboard(cells, tmp_path)
    on_disk = json.loads((tmp_path / "leaderboard.json").read_text())
    assert on_disk == json.loads(json.dumps(out))
    assert out["metrics"] == ["ndcg@10", "recall@100"]
    assert out["configs"] == ["bm25-flat", "splade"]
    assert out["datasets"] == ["scifact", "nfcorpus"]
    assert out["cells"] == cells
    assert out["averages"]["bm25-flat"]["ndcg@10"] == pytest.approx(0.4995)
    assert out["averages"]["bm25-flat"]["recall@100"] == pytest.approx(0.58265)
    assert out["averages"]["splade"] == {"ndcg@10": pytest.approx(0.7), "recall@100": pytest.approx(0.94)}
    assert out["reference"] == []


def test_reference_comparison(cells, tmp_path):
    ref = {("bm25-flat", "scifact"): {"ndcg@10": 0.6789, "recall@100": 0.9253},
           ("bm25-flat", "nfcorpus"): {"ndcg@10": 0.3218},
           ("splade", "nfcorpus"): {"ndcg@10": 0.35},
           ("other", "scifact"): {"ndcg@10": 0.1}}
    out = write_leaderboard(cells, tmp_path, reference=ref, tolerance=0.001)
    rows = {(r["config"], r["dataset"], r["metric"]): r for r in out["reference"]}
    assert set(rows) == {("bm25-flat", "scifact", "ndcg@10"), ("bm25-flat", "scifact", "recall@100"),
                         ("bm25-flat", "nfcorpus", "ndcg@10"), ("splade", "nfcorpus", "ndcg@10")}
    assert rows[("bm25-flat", "scifact", "ndcg@10")]["diff"] == pytest.approx(0.0001)
    assert rows[("bm25-flat", "scifact", "ndcg@10")]["flag"] is False
    assert rows[("bm25-flat", "nfcorpus", "ndcg@10")]["diff"] == pytest.approx(-0.0018)
    assert rows[("bm25-flat", "nfcorpus", "ndcg@10")]["flag"] is True
    assert rows[("splade", "nfcorpus", "ndcg@10")]["ours"] is None
    assert rows[("splade", "nfcorpus", "ndcg@10")]["flag"] is False

    cmp = table((tmp_path / "leaderboard.md").read_text(), "Reference comparison (flag `!` when |difference| > 0.001)")
    assert cmp[0] == ["config", "dataset", "metric", "ours", "reference", "difference", "flag"]
    assert ["bm25-flat", "scifact", "ndcg@10", "0.6790", "0.6789", "+0.0001", ""] in cmp
    assert ["bm25-flat", "scifact", "recall@100", "0.9253", "0.9253", "+0.0000", ""] in cmp
    assert ["bm25-flat", "nfcorpus", "ndcg@10", "0.3200", "0.3218", "-0.0018", "!"] in cmp
    assert ["splade", "nfcorpus", "ndcg@10", "failed", "0.3500", "-", ""] in cmp

    # default tolerance 0.005: -0.0018 is within it
    out = write_leaderboard(cells, tmp_path, reference=ref)
    assert not any(r["flag"] for r in out["reference"])


def test_reference_from_shipped_yaml(cells, tmp_path):
    ref = load_reference(REF_YAML)
    assert ref[("bm25-flat", "scifact")] == {"ndcg@10": 0.6789, "recall@100": 0.9253}
    assert ref[("bm25-multifield", "scifact")]["ndcg@10"] == 0.6647
    assert {c for c, _ in ref} == {"bm25-flat", "bm25-multifield"}
    out = write_leaderboard(cells, tmp_path, reference=REF_YAML)
    assert {(r["config"], r["dataset"]) for r in out["reference"]} == {("bm25-flat", "scifact"),
                                                                      ("bm25-flat", "nfcorpus")}


@pytest.mark.parametrize("text, needle", [
    ("- a\n- b\n", "expected a mapping"),
    ("bm25: [1, 2]\n", "'bm25'"),
    ("bm25:\n  scifact: 0.67\n", "'bm25/scifact'"),
    ("bm25:\n  scifact: {ndcg@10: high}\n", "'bm25/scifact' metric 'ndcg@10'"),
    ("bm25:\n  scifact: {ndcg@10: .nan}\n", "must be a finite number, got nan"),
    ("bm25:\n  scifact: {ndcg@10: -.inf}\n", "must be a finite number, got -inf"),
    ("bm25: {scifact: {ndcg@10: [0.1\n", "not valid YAML"),
    ("", "expected a mapping"),
])
def test_load_reference_errors(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ValueError) as e:
        load_reference(p)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_plots(cells, tmp_path):
    pytest.importorskip("matplotlib")
    paths = plot_leaderboard(cells, tmp_path / "plots")
    assert [p.name for p in paths] == ["bars_ndcg@10.png", "tradeoff.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 10_000
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (1200, 700)
    assert plot_leaderboard(cells, tmp_path, metric="recall@100")[0].name == "bars_recall@100.png"


def test_plots_without_matplotlib(cells, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'retriever\[plots\]'"):
        plot_leaderboard(cells, tmp_path)


def test_a_full_disk_leaves_the_previous_leaderboard_whole(tmp_path, monkeypatch):
    """On ENOSPC the leaderboard files were cut in place to page-sized pieces (leaderboard.md
    535 B -> 4,096 B cut mid-line, leaderboard.html without </html>); each is now replaced whole."""
    import errno
    import os

    from eval.leaderboard_html import write_leaderboard_html

    cells = [cell("bm25", "scifact", ndcg=0.5, recall=0.6)]
    write_leaderboard(cells, tmp_path)
    write_leaderboard_html(cells, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    more = cells + [cell("other", "scifact", ndcg=0.7, recall=0.8)]
    with pytest.raises(OSError, match="No space"):
        write_leaderboard(more, tmp_path)
    with pytest.raises(OSError, match="No space"):
        write_leaderboard_html(more, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
