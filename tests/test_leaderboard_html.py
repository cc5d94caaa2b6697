"""leaderboard.html: self-contained (no network), plots inlined, user data escaped, one row per
configuration with the commands that reproduce each of its cells (run here through the CLI)."""

from __future__ import annotations

import base64
import json
import re
import shlex
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from browser import browser  # noqa: F401  (the fixture)
from eval.leaderboard_html import render_leaderboard_html, write_leaderboard_html
from retriever import cli
from retriever.beir_grid import reproduce_commands
from tests.conftest import DOCS, write_beir

EVIL = '<script>alert("x")</script>'

# --------------------------------------------------------------------------- a small DOM for the tests

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    """An element: tag, attributes (entities decoded), children (Nodes and text)."""

    def __init__(self, tag: str, attrs: dict, parent: Node | None = None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def select(self, tag: str | None = None, cls: str | None = None, **attrs) -> list[Node]:
        """Descendants with this tag, class and attribute values (``data_x`` for ``data-x``)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.iter()
                if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)
                and all(n.attrs.get(k) == v for k, v in want.items())]

    def one(self, *args, **kwargs) -> Node:
        found = self.select(*args, **kwargs)
        assert len(found) == 1, (args, kwargs, len(found))
        return found[0]


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#document", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None and node.parent is not None, f"stray </{tag}>"
        self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(page: str) -> Node:
    b = _Builder()
    b.feed(page)
    b.close()
    assert b.cur is b.root, f"unclosed <{b.cur.tag}>"
    return b.root


# --------------------------------------------------------------------------- fixtures

def cell(config, dataset, status="ok", ndcg=None, recall=None, error=None):
    metrics = {"ndcg@10": ndcg, "recall@100": recall} if status == "ok" else {}
    return {"config": config, "dataset": dataset, "status": status, "error": error, "metrics": metrics,
            "wall_s": 1.0, "index_bytes": 1000, "latency_ms": 2.0, "cached": False}


@pytest.fixture
def cells():
    return [cell("bm25-flat", "scifact", ndcg=0.6790, recall=0.9253),
            cell("bm25-flat", "nfcorpus", ndcg=0.3200, recall=0.2400),
            cell("splade", "scifact", ndcg=0.7000, recall=0.9400),
            cell("splade", "nfcorpus", status="failed", error="RuntimeError: out of memory\nTraceback ...")]


@pytest.fixture
def pngs(cells, tmp_path):
    pytest.importorskip("matplotlib")
    from eval.leaderboard import plot_leaderboard

    return plot_leaderboard(cells, tmp_path / "plots")


def resource_urls(doc: Node, page: str) -> list[str]:
    """Every URL the page could fetch: src/href/srcset/action/poster/data attributes, CSS url()."""
    urls = [n.attrs[a] or "" for n in doc.iter()
            for a in ("src", "href", "srcset", "action", "poster", "data", "formaction") if a in n.attrs]
    urls += re.findall(r"url\(\s*['\"]?([^'\")]*)", page)
    urls += re.findall(r"@import\s+['\"]?([^'\";]*)", page)
    return urls


# --------------------------------------------------------------------------- rendering

def test_page_needs_no_network_and_inlines_the_plots(cells, pngs, tmp_path):
    path = write_leaderboard_html(cells, tmp_path, images=pngs, command="retriever beir --root r")
    assert path == tmp_path / "leaderboard.html"
    page = path.read_text(encoding="utf-8")
    doc = parse(page)
    urls = resource_urls(doc, page)
    assert urls and all(u.startswith("data:image/png;base64,") for u in urls), urls
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:|//)", page, re.I)
    assert not doc.select("link") and all("src" not in s.attrs for s in doc.select("script"))
    csp = next(m.attrs["content"] for m in doc.select("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "img-src data:" in csp
    figures = doc.select("figure", "plot")
    assert [f.attrs["data-name"] for f in figures] == [p.name for p in pngs]
    for fig, png in zip(figures, pngs):
        src = fig.one("img").attrs["src"]
        assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()


def test_without_images_there_is_no_plot_section(cells, tmp_path):
    doc = parse(render_leaderboard_html(cells))
    assert not doc.select("img") and not doc.select("figure")


def test_one_row_per_configuration_with_sortable_scores(cells):
    doc = parse(render_leaderboard_html(cells, commands={"bm25-flat": {"scifact": "retriever index a b",
                                                                       "nfcorpus": "retriever index c d"}}))
    table = doc.one("table", "leaderboard")
    assert table.attrs["data-metric"] == "ndcg@10"
    heads = table.select("th")
    assert [(h.text(), h.attrs.get("data-sort")) for h in heads] == [
        ("config", "text"), ("scifact", "num"), ("nfcorpus", "num"), ("avg", "num"), ("reproduce", None)]
    rows = table.select("tr", "run")
    assert [r.attrs["data-config"] for r in rows] == ["bm25-flat", "splade"]
    flat = rows[0].one("td", "score", data_dataset="scifact")
    ndcg = flat.one("span", "v", data_metric="ndcg@10")
    assert float(ndcg.attrs["data-value"]) == 0.679 and ndcg.text() == "0.6790" and "hidden" not in ndcg.attrs
    assert "hidden" in flat.one("span", "v", data_metric="recall@100").attrs  # the selector shows one metric
    failed = rows[1].one("td", "score", data_dataset="nfcorpus").one("span", data_metric="ndcg@10")
    assert "data-value" not in failed.attrs and failed.text() == "failed" and "failed" in failed.classes
    assert failed.attrs["title"] == "RuntimeError: out of memory"
    avg = rows[1].one("td", "avg").one("span", data_metric="ndcg@10")
    assert float(avg.attrs["data-value"]) == 0.7 and avg.text() == "0.7000*"
    codes = rows[0].select("code", "command")
    assert [(c.attrs["data-dataset"], c.text()) for c in codes] == [
        ("scifact", "retriever index a b"), ("nfcorpus", "retriever index c d")]
    assert rows[1].one("td", "reproduce").text() == "not recorded"
    assert [o.attrs["value"] for o in doc.one("select", id="metric").select("option")] == ["ndcg@10", "recall@100"]
    assert all(t.select("th", data_sort="num") for t in doc.select("table", "sortable"))


def test_reference_deltas_are_coloured_and_flagged(cells):
    ref = {("bm25-flat", "scifact"): {"ndcg@10": 0.6789, "recall@100": 0.9300},
           ("bm25-flat", "nfcorpus"): {"ndcg@10": 0.3200},
           ("splade", "nfcorpus"): {"ndcg@10": 0.35}}
    doc = parse(render_leaderboard_html(cells, reference=ref, tolerance=0.001))
    row = doc.one("table", "leaderboard").one("tr", "run", data_config="bm25-flat")
    up = row.one("td", data_dataset="scifact").one("span", "v", data_metric="ndcg@10").one("span", "delta")
    assert up.classes == {"delta", "pos"} and up.text() == "+0.0001"
    down = row.one("td", data_dataset="scifact").one("span", "v", data_metric="recall@100").one("span", "delta")
    assert down.classes == {"delta", "neg", "flag"} and down.text() == "-0.0047 !"
    same = row.one("td", data_dataset="nfcorpus").one("span", "v", data_metric="ndcg@10").one("span", "delta")
    assert same.classes == {"delta", "zero"}
    ref_rows = doc.one("table", "reference").select("tr", "ref")
    assert len(ref_rows) == 4 and sum("flagged" in r.classes for r in ref_rows) == 1
    failed = ref_rows[-1]
    assert failed.attrs["data-config"] == "splade" and "failed" in failed.text()
    assert "|difference| > 0.001" in doc.text()
    assert not parse(render_leaderboard_html(cells)).select("table", "reference")


def test_user_data_is_escaped(tmp_path):
    evil_cells = [cell(EVIL, f"ds{EVIL}", ndcg=0.5, recall=0.5),
                  cell("ok", f"ds{EVIL}", status="failed", error=f"ValueError: {EVIL} & more")]
    page = render_leaderboard_html(evil_cells, metrics=["ndcg@10", f"m{EVIL}"],
                                   commands={EVIL: {f"ds{EVIL}": f"retriever index --query-prefix '{EVIL}'"}},
                                   command=f"retriever beir --out '{EVIL}'", reference={(EVIL, f"ds{EVIL}"): {"ndcg@10": 0.4}})
    assert page.count("<script") == 1 and "<script>alert" not in page
    doc = parse(page)
    assert len(doc.select("script")) == 1
    row = doc.one("tr", "run", data_config=EVIL)
    assert row.one("td", "config").text() == EVIL
    assert row.one("td", "score", data_dataset=f"ds{EVIL}").text().startswith("0.5000")
    assert row.one("code", "command").text() == f"retriever index --query-prefix '{EVIL}'"
    assert doc.one("code", "run-command").text() == f"retriever beir --out '{EVIL}'"
    assert f"ValueError: {EVIL} & more" in doc.one("ul", "errors").text()
    assert doc.one("select", id="metric").select("option")[1].attrs["value"] == f"m{EVIL}"


# --------------------------------------------------------------------------- through `retriever beir`

def invoke(args: list) -> str:
    res = CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def run_commands(text: str, tmp_path: Path) -> tuple[Path, dict[str, float]]:
    """Run a row's shell text (index + eval lines) through the CLI: the index built, eval's metrics."""
    metrics_file = tmp_path / "metrics.json"
    index_dir = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        argv = shlex.split(line)
        assert argv[0] == "retriever" and argv[1] in ("index", "eval"), line
        if argv[1] == "index":
            index_dir = Path(argv[3])  # retriever index CORPUS OUT ...
        else:
            argv += ["--json", str(metrics_file)]
        invoke(argv[1:])
    return index_dir, json.loads(metrics_file.read_text())["metrics"]


def same_build(a: Path, b: Path) -> None:
    """Two indexes of the same kind, backend, settings and corpus."""
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    for key in ("kind", "backend", "settings"):
        assert ma[key] == mb[key], key
    assert ma["corpus"]["fingerprint"] == mb["corpus"]["fingerprint"]


@pytest.fixture
def grid_root(tmp_path):
    root = tmp_path / "beir"
    write_beir(root / "toy-a")
    write_beir(root / "toy-b", docs=[dict(d, _id=f"b{i}") for i, d in enumerate(DOCS)])
    (root / "toy-b" / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tb0\t1\nq2\tb2\t1\nq3\tb4\t1\n")
    return root


def test_every_row_command_reproduces_its_cells(grid_root, tmp_path, tiny_mlm, one_torch_thread):
    model = str(tiny_mlm)
    configs = {
        "bm25-flat": {"kind": "bm25", "fields": "flat"},
        "bm25-mf": {"kind": "bm25", "fields": "multifield", "k1": 1.2, "b": 0.75},
        "dense": {"kind": "dense", "model": model, "faiss": "Flat", "device": "cpu", "pooling": "mean",
                  "normalize": False, "refine": True, "doc_max_length": 64, "query_prefix": "-q: "},
        "hybrid": {"kind": "hybrid", "dense_model": model, "method": "minmax", "weights": [0.55, 0.45],
                   "device": "cpu"},
    }
    config = tmp_path / "runs.yaml"
    config.write_text(json.dumps(configs))  # JSON is YAML
    out = tmp_path / "out"
    invoke(["beir", "--root", grid_root, "--datasets", "toy-a,toy-b", "--config", config, "--out", out,
            "-k", "100", "--no-plots"])
    doc = parse((out / "leaderboard.html").read_text(encoding="utf-8"))
    assert doc.one("code", "run-command").text() == shlex.join(
        ["retriever", "beir", "--root", str(grid_root), "--datasets", "toy-a,toy-b", "--config", str(config),
         "--out", str(out), "--depth", "100", "--no-plots"])
    assert not doc.select("img")
    grid = {(c["config"], c["dataset"]): c for c in json.loads((out / "leaderboard.json").read_text())["cells"]}
    rows = doc.one("table", "leaderboard").select("tr", "run")
    assert [r.attrs["data-config"] for r in rows] == list(configs)
    for row in rows:
        name = row.attrs["data-config"]
        codes = row.select("code", "command")
        assert [c.attrs["data-dataset"] for c in codes] == ["toy-a", "toy-b"]
        for code in codes:
            dataset = code.attrs["data-dataset"]
            index_dir, got = run_commands(code.text(), tmp_path)
            same_build(index_dir, out / "indexes" / dataset / name)
            shown = row.one("td", "score", data_dataset=dataset)
            for metric in ("ndcg@10", "recall@100"):
                value = float(shown.one("span", "v", data_metric=metric).attrs["data-value"])
                assert grid[(name, dataset)]["metrics"][metric] == value
                assert got[metric] == pytest.approx(value, abs=1e-9), (name, dataset, metric)
    dense_line = doc.one("tr", "run", data_config="dense").select("code", "command")[0].text().splitlines()[0]
    assert "--refine" in dense_line and "--no-normalize" in dense_line and "--query-prefix=-q: " in shlex.split(dense_line)
    hybrid_line = doc.one("tr", "run", data_config="hybrid").select("code", "command")[0].text()
    assert "--weights 0.55,0.45" in hybrid_line


def test_beir_inlines_its_plots(grid_root, tmp_path):
    pytest.importorskip("matplotlib")
    config = tmp_path / "runs.yaml"
    config.write_text("bm25: {kind: bm25}\n")
    out = tmp_path / "out"
    invoke(["beir", "--root", grid_root, "--datasets", "toy-a", "--config", config, "--out", out])
    page = (out / "leaderboard.html").read_text(encoding="utf-8")
    doc = parse(page)
    names = [f.attrs["data-name"] for f in doc.select("figure", "plot")]
    assert names == ["bars_ndcg@10.png", "tradeoff.png"]
    for name in names:
        src = doc.one("figure", data_name=name).one("img").attrs["src"]
        assert base64.b64decode(src.split(",", 1)[1]) == (out / name).read_bytes()
    assert all(u.startswith("data:") for u in resource_urls(doc, page))


# --------------------------------------------------------------------------- in a browser

PWN = "<script>window.__pwned = 1</script>"


def browser_page(tmp_path) -> tuple[Path, dict[str, dict[str, str]]]:
    """A page with distinct scores, a failed and a missing cell, plots, and a hostile config name."""
    pytest.importorskip("matplotlib")
    from eval.leaderboard import plot_leaderboard

    cells = [cell("bm25-flat", "scifact", ndcg=0.679, recall=0.925), cell("bm25-flat", "nfcorpus", ndcg=0.32, recall=0.24),
             cell("splade", "scifact", ndcg=0.70, recall=0.94), cell("splade", "nfcorpus", status="failed", error="boom"),
             cell("dense", "scifact", ndcg=0.645, recall=0.95), cell("dense", "nfcorpus", ndcg=0.33, recall=0.26),
             cell(PWN, "scifact", ndcg=0.5, recall=0.5)]  # (PWN, nfcorpus): no cell -> missing
    configs = {"bm25-flat": {"kind": "bm25"}, "splade": {"kind": "sparse", "model": "splade-tiny"},
               "dense": {"kind": "dense", "model": "minilm", "refine": True}, PWN: {"kind": "bm25", "stopwords": PWN}}
    commands = reproduce_commands("beir", ["scifact", "nfcorpus"], configs, "out", k=1000,
                                  metrics=["ndcg@10", "recall@100"])
    images = plot_leaderboard(cells, tmp_path / "plots")
    path = write_leaderboard_html(cells, tmp_path / "page", commands=commands, images=images,
                                  reference={("bm25-flat", "scifact"): {"ndcg@10": 0.6789}},
                                  command="retriever beir --root beir --datasets scifact,nfcorpus")
    return path, commands


def offline(browser, on: bool) -> None:  # noqa: F811 (fixture)
    """Chromium's network emulation: every request fails while on."""
    if on:
        browser.driver.execute_cdp_cmd("Network.enable", {})
    browser.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": on, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    if not on:
        browser.driver.execute_cdp_cmd("Network.disable", {})


def order(browser) -> list[str]:  # noqa: F811 (fixture)
    return browser.attributes("table.leaderboard tr.run", "data-config")


def sort_by(browser, column: int) -> str:  # noqa: F811 (fixture)
    """Click the header of ``column``; its aria-sort afterwards."""
    header = browser.find_all("table.leaderboard th")[column]
    header.click()
    return header.get_attribute("aria-sort")


def test_the_page_offline_in_a_browser(browser, tmp_path):  # noqa: F811 (fixture)
    path, commands = browser_page(tmp_path)
    offline(browser, True)
    try:
        browser.open(path.as_uri())
        browser.wait_for("table.leaderboard tr.run")
        loaded = browser.driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert loaded == [True, True]  # both plots, inlined: nothing fetched
        assert browser.driver.execute_script("return window.__pwned === undefined")

        # one row per run, with its commands (textContent: the <details> is closed)
        assert order(browser) == ["bm25-flat", "splade", "dense", PWN]
        for row in browser.find_all("table.leaderboard tr.run"):
            codes = row.find_elements("css selector", "code.command")
            got = {c.get_attribute("data-dataset"): c.get_attribute("textContent") for c in codes}
            assert got == commands[row.get_attribute("data-config")]
        assert browser.find_all("code.run-command")[0].get_attribute("textContent").startswith("retriever beir ")

        # numbers best first, then reversed; failed / missing cells last either way
        assert sort_by(browser, 1) == "descending" and order(browser) == ["splade", "bm25-flat", "dense", PWN]
        assert sort_by(browser, 1) == "ascending" and order(browser) == [PWN, "dense", "bm25-flat", "splade"]
        assert sort_by(browser, 2) == "descending" and order(browser) == ["dense", "bm25-flat", "splade", PWN]
        assert sort_by(browser, 2) == "ascending" and order(browser) == ["bm25-flat", "dense", "splade", PWN]
        assert browser.attributes("table.leaderboard th[aria-sort]", "aria-sort") == ["ascending"]
        # names A-Z, then Z-A
        assert sort_by(browser, 0) == "ascending"
        names = order(browser)
        assert [n for n in names if n != PWN] == ["bm25-flat", "dense", "splade"]
        assert sort_by(browser, 0) == "descending" and order(browser) == names[::-1]

        # another metric: shown values change, and a sorted score column re-sorts by it
        assert sort_by(browser, 1) == "descending"
        browser.select("select#metric", "recall@100")
        assert order(browser) == ["dense", "splade", "bm25-flat", PWN]
        shown = browser.texts("table.leaderboard tr.run[data-config=dense] td.score span.v")
        assert [t for t in shown if t] == ["0.9500", "0.2600", "0.6050"]  # hidden spans have no text

        # copy: the button reports it
        browser.find_all("tr.run[data-config=dense] summary")[0].click()
        button = browser.find_all("tr.run[data-config=dense] button.copy")[0]
        button.click()
        from selenium.webdriver.support.wait import WebDriverWait

        WebDriverWait(browser.driver, 5).until(lambda _: button.text == "copied")
        assert browser.errors() == []
    finally:
        offline(browser, False)


def test_the_committed_example_page_matches_its_json():
    folder = Path(__file__).resolve().parents[1] / "docs" / "leaderboard"
    page = (folder / "leaderboard.html").read_text(encoding="utf-8")
    doc = parse(page)
    data = json.loads((folder / "leaderboard.json").read_text(encoding="utf-8"))
    assert all(u.startswith("data:image/png;base64,") for u in resource_urls(doc, page))
    rows = doc.one("table", "leaderboard").select("tr", "run")
    assert [r.attrs["data-config"] for r in rows] == data["configs"]
    for row in rows:
        assert [c.attrs["data-dataset"] for c in row.select("code", "command")] == data["datasets"]
    for c in data["cells"]:
        if c["status"] == "ok":
            span = doc.one("tr", "run", data_config=c["config"]).one("td", "score", data_dataset=c["dataset"])
            assert float(span.one("span", "v", data_metric="ndcg@10").attrs["data-value"]) == c["metrics"]["ndcg@10"]
