"""The search service over HTTP against the Python API, measured in one run.

    python scripts/bench_service.py [--dataset DIR] [--work DIR] [--model minilm]
                                    [--clients 1,16] [--out docs/bench_service.json]

Builds (or reuses, under $RETRIEVER_BENCH_WORK, default /tmp/retriever-bench) a BM25 and a
MiniLM (Flat) index of BEIR SciFact, then for each index:

- the Python API in this process: ``search(text, k=10)`` over the test queries one by one, and
  ``search_batch`` of all of them (q/s);
- ``retriever serve`` in a child process, loaded by N concurrent clients (threads here, each
  with its own keep-alive HTTP/1.1 connection, ``GET /search?q=&k=10&index=``), every test query
  once per client level after a warm-up: requests/s, p50 and p99 latency, and the ratio of
  requests/s to the API's one-by-one q/s.

Four server configurations show the design choices: ``default`` (MiniLM micro-batched with a
2 ms window, BM25 straight to the library), ``no-batching`` (``--max-batch 1``: every MiniLM
query alone), ``bm25-batched`` (``--batch-kinds bm25,dense``: BM25 through the batcher too) and
``bm25-batched-window-0`` (the same with no window). The load generator shares the machine's
cores with the server; the load average is recorded. Results: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset  # noqa: E402
from retriever import Retriever  # noqa: E402

K = 10
CONFIGS = {
    "default": [],
    "no-batching": ["--max-batch", "1"],
    "bm25-batched": ["--batch-kinds", "bm25,dense"],
    "bm25-batched-window-0": ["--batch-kinds", "bm25,dense", "--batch-window-ms", "0"],
}


def load_average() -> float:
    return os.getloadavg()[0]


def build_once(dataset: Path, out: Path, **options) -> Retriever:
    if (out / "manifest.json").is_file():
        return Retriever.load(out, verify=False)
    return Retriever.build(dataset, out, progress=True, **options)


def api_rates(r: Retriever, texts: list[str]) -> dict:
    """q/s of the Python API: one query at a time, and one batch of all of them."""
    for t in texts[:10]:
        r.search(t, k=K)
    start = time.perf_counter()
    for t in texts:
        r.search(t, k=K)
    single = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    r.search_batch({str(i): t for i, t in enumerate(texts)}, k=K)
    batch = len(texts) / (time.perf_counter() - start)
    return {"search_qps": single, "search_batch_qps": batch}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, paths: list[Path], flags: list[str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        cmd = [sys.executable, "-m", "retriever.cli", "serve", *map(str, paths), "--port", str(self.port),
               "--no-access-log", "--no-verify", *flags]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()}")
            try:
                conn = HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start: {log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def get_hits(conn: HTTPConnection, index: str, text: str) -> list[dict]:
    conn.request("GET", "/search?" + urlencode({"q": text, "k": K, "index": index}))
    res = conn.getresponse()
    body = res.read()
    if res.status != 200:
        raise RuntimeError(f"{res.status}: {body[:200]!r}")
    return json.loads(body)


def load_run(port: int, index: str, texts: list[str], clients: int) -> dict:
    """Every text once, spread over ``clients`` threads: requests/s and latency percentiles."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    next_one = iter(range(len(texts)))

    def client() -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while True:
            with lock:
                i = next(next_one, None)
            if i is None:
                break
            start = time.perf_counter()
            try:
                get_hits(conn, index, texts[i])
            except Exception as e:  # noqa: BLE001 (counted, reported)
                errors.append(repr(e))
                conn.close()
                conn = HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {"clients": clients, "requests": len(latencies), "errors": len(errors),
            "rps": len(latencies) / took, "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/beir/scifact")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("RETRIEVER_BENCH_WORK", "/tmp/retriever-bench")))
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--clients", default="1,16", help="comma-separated client counts")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="server configurations to run")
    ap.add_argument("--queries", type=int, default=0, help="use only the first N test queries (a quick check)")
    ap.add_argument("--out", type=Path, help="write the numbers as JSON")
    args = ap.parse_args()
    if not (args.dataset / "corpus.jsonl").is_file():
        print(f"no BEIR SciFact at {args.dataset}; give --dataset", file=sys.stderr)
        return 2
    work = args.work / "service-scifact"
    levels = [int(c) for c in args.clients.split(",")]
    report = {"load_before": load_average(), "cores": os.cpu_count(), "k": K, "api": {}, "http": {}}
    ds = BeirDataset(args.dataset)
    texts = list(ds.split_queries("test").values())
    texts = texts[:args.queries] if args.queries > 0 else texts
    indexes = {
        "bm25": build_once(args.dataset, work / "bm25"),
        "minilm": build_once(args.dataset, work / "minilm", kind="dense", model=args.model, faiss="Flat"),
    }
    for name, r in indexes.items():
        report["api"][name] = api_rates(r, texts)
        print(f"API {name}: search {report['api'][name]['search_qps']:.0f} q/s, "
              f"search_batch {report['api'][name]['search_batch_qps']:.0f} q/s", flush=True)
    for config in args.configs.split(","):
        server = Server([r.path for r in indexes.values()], CONFIGS[config], work / f"server-{config}.log")
        try:
            conn = HTTPConnection("127.0.0.1", server.port, timeout=60)
            for name, r in indexes.items():  # warm-up, and the same hits as the API
                for t in texts[:20]:
                    got = [h["docid"] for h in get_hits(conn, name, t)]
                    if got != [h.docid for h in r.search(t, k=K)]:
                        raise RuntimeError(f"{config} {name}: HTTP hits differ from the API's for {t!r}")
            conn.close()
            for name in indexes:
                for clients in levels:
                    row = load_run(server.port, name, texts, clients)
                    row["vs_api_search"] = row["rps"] / report["api"][name]["search_qps"]
                    report["http"].setdefault(config, {}).setdefault(name, []).append(row)
                    print(f"HTTP {config:<12} {name:<6} {clients:>3} clients: {row['rps']:7.0f} req/s  "
                          f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
                          f"{row['vs_api_search']:.2f}x API search  errors {row['errors']}", flush=True)
        finally:
            server.stop()
    report["load_after"] = load_average()
    print(f"load average: {report['load_before']:.2f} before, {report['load_after']:.2f} after "
          f"({report['cores']} cores)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
