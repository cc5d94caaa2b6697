"""The search service (``retriever serve``, ``retriever.service``).

- Through FastAPI's TestClient: every endpoint answers in the Python API's shapes with the API's
  results, every kind of bad input is a 4xx with a one-line ``detail``, an unexpected error is a
  JSON 500 without a traceback, a reload swaps generations, a failed startup is one line.
- The micro-batcher alone (asyncio): concurrent queries become one ``search_batch`` call, split
  by k; a failing query fails only its own request.
- One real server (``python -m retriever.cli serve ...`` on a free port): every endpoint over
  HTTP, concurrent requests (batched for the neural index), a reload under load (a thread
  rebuilds the index from another corpus and reloads it while clients search: no request fails,
  every result set comes from one generation), and the HTML page in headless Chromium, whose
  rendered hits must equal the API's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from browser import browser  # noqa: F401  (the fixture)
from click.testing import CliRunner
from conftest import DOCS, write_beir
from fastapi.testclient import TestClient

from retriever import Retriever, cli
from retriever.service import create_app
from retriever.service.batcher import MicroBatcher

ROOT = Path(__file__).resolve().parent.parent
EXTRA_DOC = {"_id": "x/y#1?%", "title": "Slash", "text": "A document whose id needs escaping in a URL."}
QUERIES = ["does vitamin D prevent fractures", "why does coffee keep you awake", "inverted index terms",
           "sleep hours adults", "sunlight skin"]


def generation_docs(prefix: str) -> list[dict]:
    """The toy documents with ids ``{prefix}-d1``...: which corpus answered shows in every hit."""
    return [{**d, "_id": f"{prefix}-{d['_id']}"} for d in DOCS]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_mlm) -> dict[str, Path]:
    """Indexes of every kind over the toy corpus: toy (bm25), dense, hybrid, nodocs (bm25, no text)."""
    import torch

    root = tmp_path_factory.mktemp("service")
    corpus = write_beir(root / "corpus", docs=DOCS + [EXTRA_DOC])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Retriever.build(corpus, root / "toy")
        Retriever.build(corpus, root / "dense", kind="dense", model=str(tiny_mlm), faiss="Flat", device="cpu")
        Retriever.build(corpus, root / "hybrid", kind="hybrid", dense_model=str(tiny_mlm), device="cpu")
        Retriever.build(corpus, root / "nodocs", store_docs=False)
    finally:
        torch.set_num_threads(before)
    return {name: root / name for name in ("toy", "dense", "hybrid", "nodocs")}


@pytest.fixture(scope="module")
def client(built, booting_server):  # the real server boots (imports torch) while these tests run
    app = create_app([built[n] for n in ("toy", "dense", "hybrid", "nodocs")], window_ms=5, max_queries=4)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def api(built) -> dict[str, Retriever]:
    return {name: Retriever.load(path) for name, path in built.items()}


def hits_json(hits) -> list[dict]:
    return [{"docid": h.docid, "score": h.score} for h in hits]


def assert_one_line_error(response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, detail
    assert fragment in detail, detail


# -- every endpoint, through TestClient ---------------------------------------------------------

def test_health_and_index_summaries(client, api):
    assert client.get("/health").json() == {"status": "ok", "indexes": ["toy", "dense", "hybrid", "nodocs"]}
    summaries = {s["name"]: s for s in client.get("/indexes").json()}
    for name, r in api.items():
        s = summaries[name]
        m = r.manifest
        assert (s["kind"], s["backend"], s["doc_count"], s["settings"], s["created"]) == \
            (m["kind"], m["backend"], m["doc_count"], m["settings"], m["created"])
        assert s["generation"] == 1
    assert summaries["toy"]["batching"] is None  # BM25 goes straight to the library
    assert summaries["dense"]["batching"]["max_batch"] == 32 and summaries["hybrid"]["batching"]


@pytest.mark.parametrize("name", ["toy", "dense", "hybrid"])
def test_get_search_returns_the_apis_hits(client, api, name):
    for q in QUERIES:
        for k in (1, 3, 1000):
            res = client.get("/search", params={"q": q, "k": k, "index": name})
            assert res.status_code == 200, res.text
            assert res.json() == hits_json(api[name].search(q, k=k)), (name, q, k)
            assert res.headers["x-index-generation"] == "1"
    default = client.get("/search", params={"q": QUERIES[0]}).json()  # the first index, k = 10
    assert default == hits_json(api["toy"].search(QUERIES[0], k=10))


def test_post_search_returns_the_apis_run_best_first(client, api):
    queries = {"a": QUERIES[0], "b": QUERIES[1], "empty": ""}
    for name in ("toy", "dense", "hybrid"):
        res = client.post("/search", json={"queries": queries, "k": 3, "index": name})
        assert res.status_code == 200, res.text
        run, expected = res.json(), api[name].search_batch(queries, k=3)
        assert list(run) == list(expected)
        for qid in queries:  # the same documents in the same order, best first
            assert list(run[qid].items()) == list(expected[qid].items())
            assert list(run[qid].values()) == sorted(run[qid].values(), reverse=True)


def test_explain_gives_component_scores_and_ranks(client, api):
    res = client.get("/search", params={"q": QUERIES[0], "k": 4, "index": "hybrid", "explain": "true"})
    assert res.status_code == 200, res.text
    expected = [{"docid": h.docid, "score": h.score, "parts": h.parts}
                for h in api["hybrid"].search(QUERIES[0], k=4, explain=True)]
    assert res.json() == expected and set(expected[0]["parts"]) == {"sparse", "dense"}


def test_doc_returns_the_stored_text(client):
    assert client.get("/doc/d1").json() == {"docid": "d1", "title": DOCS[0]["title"], "text": DOCS[0]["text"]}
    odd = client.get("/doc/" + quote(EXTRA_DOC["_id"], safe=""), params={"index": "dense"})
    assert odd.status_code == 200 and odd.json()["text"] == EXTRA_DOC["text"]
    assert_one_line_error(client.get("/doc/nope"), 404, "no document 'nope' in index toy")
    assert_one_line_error(client.get("/doc/d1", params={"index": "nodocs"}), 404, "stores no document text")
    # by query parameter, as the page asks (a browser resolves /doc/.. to / and /doc/. to /doc/)
    by_query = client.get("/doc", params={"docid": EXTRA_DOC["_id"], "index": "dense"})
    assert by_query.status_code == 200 and by_query.json() == odd.json()
    assert_one_line_error(client.get("/doc", params={"docid": ".."}), 404, "no document '..' in index toy")
    assert_one_line_error(client.get("/doc", params={"docid": "d1", "id": "x"}), 422, "id: extra inputs")


def test_the_page_is_self_contained(client):
    res = client.get("/")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    page = res.text
    assert 'id="q"' in page and 'id="k"' in page and 'id="index"' in page
    assert "http:" not in page and "https:" not in page  # nothing from the network
    assert re.findall(r"""(?:src|href)=["']([^"']*)""", page) == ["data:,"]
    csp = res.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    import base64
    import hashlib

    script = page[page.index("<script>") + 8:page.index("</script>")]  # its one script, allowed by hash
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in csp and page.count("<script") == 1


BAD_GETS = [
    ({"q": "x", "k": 0}, 422, "k must be >= 1, got 0"),
    ({"q": "x", "k": -3}, 422, "k must be >= 1"),
    ({"q": "x", "k": "abc"}, 422, "k: input should be a valid integer"),
    ({"q": "x", "k": "1.5"}, 422, "k: input should be a valid integer"),
    ({"k": 3}, 422, "q: field required"),
    ({"q": "x", "index": "nope"}, 404, "no index named 'nope'; serving: toy, dense, hybrid, nodocs"),
    ({"q": "x", "explain": "true"}, 422, "explain=true needs a hybrid index; toy is a bm25 index"),
    ({"q": "x", "explain": "maybe"}, 422, "explain: "),
    ({"q": "x", "kk": 3}, 422, "kk: extra inputs are not permitted"),
    ({"q": "x" * 10_001}, 422, "q: string should have at most 10000 characters"),
]


@pytest.mark.parametrize("params,status,fragment", BAD_GETS)
def test_bad_search_parameters_are_a_4xx(client, params, status, fragment):
    assert_one_line_error(client.get("/search", params=params), status, fragment)


BAD_BODIES = [
    ({"queries": {}}, 422, "queries is empty"),
    ({"queries": {"a": 1}}, 422, "queries.a: input should be a valid string"),
    ({"queries": {"a": None}}, 422, "queries.a: input should be a valid string"),
    ({"queries": ["a", "b"]}, 422, "queries: input should be a valid dictionary"),
    ({"queries": {"a": "x"}, "k": 0}, 422, "k must be >= 1, got 0"),
    ({"queries": {"a": "x"}, "k": "10"}, 422, "k: input should be a valid integer"),
    ({"queries": {"a": "x"}, "k": 2.5}, 422, "k: input should be a valid integer"),
    ({"queries": {"a": "x"}, "k": True}, 422, "k: input should be a valid integer"),
    ({"k": 3}, 422, "queries: field required"),
    ({"queries": {"a": "x"}, "index": "nope"}, 404, "no index named 'nope'"),
    ({"queries": {"a": "x"}, "depth": 3}, 422, "depth: extra inputs are not permitted"),
    ({"queries": {str(i): "x" for i in range(5)}}, 413, "5 queries in one request; this server takes at most 4"),
    ([1, 2], 422, "input should be a valid dictionary"),
    ({"queries": {"a": "\ud800 x"}}, 422, "query 'a' is not valid Unicode text (a lone surrogate"),
    ({"queries": {"\udfff": "x"}}, 422, "a query id is not valid Unicode text"),
]


@pytest.mark.parametrize("body,status,fragment", BAD_BODIES)
def test_bad_batches_are_a_4xx(client, body, status, fragment):
    sent = json.dumps(body)  # (ASCII escapes: a lone surrogate travels as JSON allows)
    assert_one_line_error(client.post("/search", content=sent, headers={"content-type": "application/json"}),
                          status, fragment)


def test_other_bad_requests_are_a_4xx(client):
    bad_json = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert_one_line_error(bad_json, 422, "the body is not valid JSON")
    assert_one_line_error(client.post("/reload", params={"index": "nope"}), 404, "no index named 'nope'")
    assert_one_line_error(client.get("/doc/d1", params={"index": "nope"}), 404, "no index named 'nope'")
    assert client.get("/nowhere").status_code == 404


def test_an_unexpected_error_is_a_json_500_and_logged(built, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug\nwith a second line")

    with TestClient(create_app([built["toy"]])) as c:
        r = c.app.state.indexes.get("toy").current.retriever
        r.search = broken
        with caplog.at_level("ERROR", logger="retriever.service"):
            res = c.get("/search", params={"q": "x"})
        assert_one_line_error(res, 500, "internal error (RuntimeError)")
        assert "a bug" not in res.text
        assert "Traceback" in caplog.text and "a bug" in caplog.text  # the server's log has it
        assert c.get("/search", params={"q": "x", "k": 0}).status_code == 422  # still serving


def test_a_body_past_the_limit_is_a_413_before_it_is_parsed(built):
    with TestClient(create_app([built["toy"]], max_body_bytes=2000)) as c:
        small = json.dumps({"queries": {"a": "vitamin"}}).encode()
        assert c.post("/search", content=small, headers={"content-type": "application/json"}).status_code == 200
        big = json.dumps({"queries": {str(i): "vitamin d " * 20 for i in range(20)}}).encode()
        assert len(big) > 2000
        assert_one_line_error(c.post("/search", content=big, headers={"content-type": "application/json"}), 413,
                              f"request body too large ({len(big)} bytes); this server reads at most 2000")

        def chunks():  # no Content-Length: counted as it arrives
            for i in range(0, len(big), 500):
                yield big[i:i + 500]

        assert_one_line_error(c.post("/search", content=chunks(), headers={"content-type": "application/json"}),
                              413, "request body too large; this server reads at most 2000")
        assert c.get("/health").status_code == 200
    assert create_app([built["toy"]], max_queries=1000).user_middleware  # (default: 16 KB a query, >= 1 MB)
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app([built["toy"]], max_body_bytes=0)


def test_reload_swaps_the_generation(tmp_path):
    a = write_beir(tmp_path / "a", docs=generation_docs("a"))
    b = write_beir(tmp_path / "b", docs=generation_docs("b"))
    live = tmp_path / "live"
    Retriever.build(a, live)
    with TestClient(create_app([live])) as c:
        first = c.get("/search", params={"q": "vitamin"}).json()
        assert first and all(h["docid"].startswith("a-") for h in first)
        Retriever.build(b, live, overwrite=True)  # what `retriever index B live --overwrite` does
        still = c.get("/search", params={"q": "vitamin"})
        assert still.json() == first and still.headers["x-index-generation"] == "1"  # not reloaded yet
        assert c.get("/doc/a-d1").status_code == 200  # the loaded generation's own stored text
        res = c.post("/reload", params={"index": "live"})
        assert res.status_code == 200 and res.json()["reloaded"][0]["generation"] == 2
        after = c.get("/search", params={"q": "vitamin"})
        assert after.headers["x-index-generation"] == "2"
        assert [h["docid"] for h in after.json()] == ["b-" + h["docid"][2:] for h in first]
        assert_one_line_error(c.get("/doc/a-d1"), 404, "no document 'a-d1'")
        import shutil

        shutil.rmtree(live)  # an index that cannot be loaded: the old generation keeps serving
        assert_one_line_error(c.post("/reload"), 503, "could not reload live")
        assert c.get("/search", params={"q": "vitamin"}).json() == after.json()
        assert c.get("/indexes").json()[0]["generation"] == 2


def test_startup_errors_are_one_line(built, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(built["toy"], bad)
    text = (bad / "docs.jsonl").read_text(encoding="utf-8")
    (bad / "docs.jsonl").write_text(text.replace("Vitamin", "Vitamon", 1), encoding="utf-8")  # same size
    app = create_app([bad])
    with pytest.raises(Exception, match="checksum"), TestClient(app):
        pass
    assert app.state.startup_error.startswith("cannot serve the indexes: ") and "\n" not in app.state.startup_error
    for settings, message in (({"window_ms": float("nan")}, "window_ms"), ({"max_batch": 0}, "max_batch"),
                              ({"threads": 1.5}, "threads")):
        with pytest.raises(ValueError, match=message):
            create_app([built["toy"]], **settings)
    with pytest.raises(ValueError, match="two indexes are named 'toy'"):
        create_app([built["toy"], built["toy"].parent / "." / "toy"])
    res = CliRunner().invoke(cli.main, ["serve", str(tmp_path / "missing")])
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0 and "no such index" in res.output
    res = CliRunner().invoke(cli.main, ["serve", str(built["toy"]), "--batch-kinds", "dense,dens"])
    assert res.exit_code == 2 and "unknown index kind dens" in res.output


def test_serve_without_the_extra_names_it(monkeypatch, built):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` fails as if not installed
    res = CliRunner().invoke(cli.main, ["serve", str(built["toy"])])
    assert res.exit_code == 1
    assert res.output.strip() == ("Error: retriever serve needs fastapi and uvicorn (uvicorn is missing): "
                                  "pip install 'retriever[serve]'")


# -- the micro-batcher --------------------------------------------------------------------------

class RecordingRetriever:
    """search_batch scores each document by its query's length; records every call."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[list[str], int]] = []
        self.fail_on = fail_on

    def search_batch(self, queries, k=10):
        self.calls.append((list(queries.values()), k))
        if self.fail_on in queries.values():
            raise ValueError(f"cannot search {self.fail_on!r}")
        return {qid: {f"{text}-{i}": float(len(text) - i) for i in range(k)} for qid, text in queries.items()}


def run_batcher(fn, window: float = 0.05, max_batch: int = 32):
    async def main():
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(pool, window, max_batch)
            batcher.start()
            try:
                return await fn(batcher)
            finally:
                await batcher.close()

    return asyncio.run(main())


def test_concurrent_queries_are_searched_in_one_batch_per_k():
    r = RecordingRetriever()

    async def fire(batcher):
        texts = [f"q{i}" * (i + 1) for i in range(6)]
        results = await asyncio.gather(*(batcher.search(r, t, 3 if i % 2 else 2) for i, t in enumerate(texts)))
        return texts, results, (batcher.batches, batcher.queries)

    texts, results, counts = run_batcher(fire)
    assert sorted(len(c[0]) for c in r.calls) == [3, 3] and {c[1] for c in r.calls} == {2, 3}
    assert counts == (2, 6)
    for i, (t, res) in enumerate(zip(texts, results)):  # each request gets its own query's answer
        assert res == {f"{t}-{j}": float(len(t) - j) for j in range(3 if i % 2 else 2)}


def test_a_failing_query_fails_only_its_own_request():
    r = RecordingRetriever(fail_on="bad")

    async def fire(batcher):
        return await asyncio.gather(*(batcher.search(r, t, 2) for t in ("good", "bad", "fine")),
                                    return_exceptions=True)

    good, bad, fine = run_batcher(fire)
    assert good == {"good-0": 4.0, "good-1": 3.0} and fine == {"fine-0": 4.0, "fine-1": 3.0}
    assert isinstance(bad, ValueError) and "cannot search 'bad'" in str(bad)


def test_batches_are_capped_and_a_lone_query_waits_one_window():
    r = RecordingRetriever()

    async def fire(batcher):
        await asyncio.gather(*(batcher.search(r, str(i), 1) for i in range(10)))
        start = time.perf_counter()
        await batcher.search(r, "alone", 1)
        return time.perf_counter() - start

    alone = run_batcher(fire, window=0.02, max_batch=4)
    assert [len(c[0]) for c in r.calls] == [4, 4, 2, 1]
    assert alone < 1.0  # one window (20 ms) plus scheduling, not a stall


# -- one real server ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m retriever.cli serve`` in a child process (started at once; ``wait_ready``
    before use); ``request`` speaks HTTP/1.1 to it."""

    def __init__(self, paths: dict[str, Path], log: Path, *flags: str) -> None:
        self.paths = paths
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "retriever.cli", "serve", *map(str, paths.values()),
               "--port", str(self.port), "--no-access-log", *flags]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 90) -> Server:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"retriever serve exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"retriever serve did not answer within {timeout:.0f} s:\n{self.log.read_text()}")
            time.sleep(0.05)

    def request(self, method: str, path: str, body=None, conn: HTTPConnection | None = None):
        """(status, headers, decoded JSON or text) of one request, on ``conn`` when given."""
        own = conn is None
        conn = conn or HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            res = conn.getresponse()
            data = res.read()
            kind = res.getheader("Content-Type", "")
            return res.status, {k.lower(): v for k, v in res.getheaders()}, \
                json.loads(data) if kind.startswith("application/json") else data.decode()
        finally:
            if own:
                conn.close()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


@pytest.fixture(scope="module")
def booting_server(built, tmp_path_factory):
    """A real server over toy (bm25), dense (tiny model), hybrid and live (bm25, rebuilt by a
    test), started now; ``server`` waits until it answers."""
    root = tmp_path_factory.mktemp("served")
    Retriever.build(write_beir(root / "a", docs=generation_docs("a")), root / "live")
    paths = {"toy": built["toy"], "dense": built["dense"], "hybrid": built["hybrid"], "live": root / "live"}
    s = Server(paths, root / "server.log", "--batch-window-ms", "20")
    s.corpora = {"a": root / "a", "b": write_beir(root / "b", docs=generation_docs("b"))}
    yield s
    log = s.stop()
    assert s.proc.returncode == 0, log
    assert "Traceback" not in log, log  # no request ever failed unexpectedly


@pytest.fixture(scope="module")
def server(booting_server) -> Server:
    return booting_server.wait_ready()


def test_real_server_endpoints_and_concurrent_requests(server, api):
    req = server.request
    status, _, health = req("GET", "/health")
    assert status == 200 and health["indexes"] == ["toy", "dense", "hybrid", "live"]
    status, _, listed = req("GET", "/indexes")
    assert [s["name"] for s in listed] == health["indexes"] and listed[1]["kind"] == "dense"
    status, headers, hits = req("GET", "/search?" + urlencode({"q": QUERIES[0], "k": 3}))
    assert status == 200 and hits == hits_json(api["toy"].search(QUERIES[0], k=3))
    assert headers["x-index-generation"] == "1"
    status, _, run = req("POST", "/search", {"queries": {"a": QUERIES[1]}, "k": 2, "index": "hybrid"})
    assert status == 200 and run == api["hybrid"].search_batch({"a": QUERIES[1]}, k=2)
    status, _, explained = req("GET", "/search?" + urlencode({"q": QUERIES[1], "index": "hybrid", "explain": "true"}))
    assert status == 200 and explained[0]["parts"]["dense"]["rank"] is not None
    status, _, doc = req("GET", "/doc/" + quote(EXTRA_DOC["_id"], safe=""))
    assert status == 200 and doc["title"] == "Slash"
    status, headers, page = req("GET", "/")
    assert status == 200 and "<form" in page
    for path, body, code in (("/search?q=x&k=0", None, 422), ("/search?q=x&index=nope", None, 404),
                             ("/doc/nope", None, 404), ("/search", {"queries": {}}, 422),
                             ("/search", {"queries": {"a": 3}}, 422)):
        status, _, err = req("POST" if body is not None else "GET", path, body)
        assert status == code and "\n" not in err["detail"], (path, err)

    # concurrent requests to the neural index: batched, each answered as the API answers it alone
    status, _, before = req("GET", "/indexes")
    texts = [f"{q} {w}" for q in QUERIES for w in ("vitamin", "coffee", "sleep", "index")]
    results: dict[str, list] = {}
    errors: list = []

    def one(text: str) -> None:
        try:
            code, _, body = req("GET", "/search?" + urlencode({"q": text, "k": 4, "index": "dense"}))
        except Exception as e:  # noqa: BLE001 (collected and reported below)
            errors.append((text, repr(e)))
            return
        if code == 200:
            results[text] = body
        else:
            errors.append((text, code, body))

    threads = [threading.Thread(target=one, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == len(texts)
    for text, hits in results.items():
        expected = api["dense"].search(text, k=4)
        assert [h["docid"] for h in hits] == [h.docid for h in expected], text
        assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], abs=1e-5)
    status, _, after = req("GET", "/indexes")
    stats = after[1]["batching"]
    queries = stats["queries"] - before[1]["batching"]["queries"]
    batches = stats["batches"] - before[1]["batching"]["batches"]
    assert queries == len(texts) and batches < queries, stats  # requests shared batches


def test_reload_under_load_drops_nothing_and_mixes_no_generations(server):
    """Client threads search `live` in a loop (GET and POST) while another thread rebuilds it from
    the other corpus (what `retriever index ... --overwrite` runs) and calls POST /reload, four
    times. No request may fail; every result set must come from one corpus (one doc-id prefix)."""
    stop = threading.Event()
    failures: list = []
    served: dict[int, int] = {}
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = HTTPConnection("127.0.0.1", server.port, timeout=30)
        i = 0
        while not stop.is_set():
            try:
                if i % 3 == 2:
                    code, headers, body = server.request(
                        "POST", "/search", {"queries": {"x": QUERIES[0], "y": QUERIES[1]}, "k": 4, "index": "live"},
                        conn=conn)
                    docids = [d for ranked in body.values() for d in ranked] if code == 200 else []
                else:
                    code, headers, body = server.request(
                        "GET", "/search?" + urlencode({"q": QUERIES[i % 5], "k": 4, "index": "live"}), conn=conn)
                    docids = [h["docid"] for h in body] if code == 200 else []
            except Exception as e:  # noqa: BLE001 (a dropped connection is a failure to report)
                failures.append(f"client {n}: {e!r}")
                conn.close()
                conn = HTTPConnection("127.0.0.1", server.port, timeout=30)
                continue
            i += 1
            if code != 200:
                failures.append(f"client {n}: {code} {body}")
                continue
            prefixes = {d.split("-", 1)[0] for d in docids}
            generation = int(headers["x-index-generation"])
            if len(prefixes) != 1 or prefixes != {"a" if generation % 2 else "b"}:
                failures.append(f"client {n}: generation {generation} answered with {sorted(docids)}")
            with lock:
                served[generation] = served.get(generation, 0) + 1
        conn.close()

    def rebuilder() -> None:
        try:
            for round_ in range(4):
                corpus = server.corpora["b" if round_ % 2 == 0 else "a"]
                Retriever.build(corpus, server.paths["live"], overwrite=True)
                code, _, body = server.request("POST", "/reload?index=live")
                if code != 200 or body["reloaded"][0]["generation"] != round_ + 2:
                    failures.append(f"reload {round_}: {code} {body}")
                time.sleep(0.15)
        except Exception as e:  # noqa: BLE001
            failures.append(f"rebuilder: {e!r}")

    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in clients:
        t.start()
    time.sleep(0.2)
    rebuild = threading.Thread(target=rebuilder)
    rebuild.start()
    rebuild.join(120)
    stop.set()
    for t in clients:
        t.join(30)
    assert not failures, failures[:5]
    assert sorted(served) == [1, 2, 3, 4, 5] and sum(served.values()) > 40, served
    _, headers, hits = server.request("GET", "/search?" + urlencode({"q": "vitamin", "index": "live"}))
    assert headers["x-index-generation"] == "5" and all(h["docid"].startswith("a-") for h in hits)


def test_the_page_in_a_browser_shows_the_apis_hits(server, browser, api):  # noqa: F811 (fixture)
    query = "does vitamin D prevent fractures"
    browser.open(server.base + "/")
    browser.wait_for("body[data-ready]")
    assert browser.texts("#index option")[0].startswith("toy (bm25, 7 docs)")
    browser.type("#q", query)
    browser.select("#k", "5")
    browser.select("#index", "toy")
    browser.click("#go")
    browser.wait_for("#hits[data-state=done]")
    docids = browser.attributes("li.hit", "data-docid")
    scores = [float(s) for s in browser.attributes("li.hit", "data-score")]
    expected = api["toy"].search(query, k=5)
    assert docids == [h.docid for h in expected] and scores == [h.score for h in expected]
    snippets = browser.texts("li.hit .snippet")
    assert snippets[docids.index("d1")] == DOCS[0]["text"]
    assert browser.texts("#status")[0].startswith(f"{len(expected)} hits in ")
    assert "q=does+vitamin" in browser.driver.current_url  # the search is in the page's URL
    # the neural index through the page
    browser.select("#index", "dense")
    browser.click("#go")
    browser.wait_for("#hits[data-state=done]")
    dense = [h.docid for h in api["dense"].search(query, k=5)]
    assert browser.attributes("li.hit", "data-docid") == dense
    assert browser.errors() == []
    shot = os.environ.get("RETRIEVER_SERVICE_SCREENSHOT")
    if shot:
        browser.screenshot(shot)
