"""Builds killed with SIGKILL, two writers at once, readers searching through rebuilds: real
processes, real signals. The promises tested here are listed in docs/RELIABILITY.md."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from indexing.corpus import CorpusFingerprint, iter_corpus
from indexing.manifest import leftovers, lock_path, read_manifest
from retriever import Retriever

ROOT = Path(__file__).resolve().parent.parent
QUERIES = {f"q{i}": f"w{i} w{i + 7} w{3 * i}" for i in range(8)}


def write_corpus(path: Path, docs: int, seed: int) -> Path:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(400)]
    with open(path, "w") as f:
        for i in range(docs):
            f.write(json.dumps({"_id": f"d{i}", "title": f"t{seed}", "text": " ".join(rng.choices(words, k=30))}) + "\n")
    return path


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def fingerprint(corpus: Path) -> str:
    fp = CorpusFingerprint()
    for doc in iter_corpus(corpus):
        fp.add(doc)
    return fp.hexdigest()


def index_command(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "retriever.cli", "index", str(corpus), str(out), "--overwrite", "--quiet"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _kill_rebuilds(tmp_path: Path, seeds: range) -> None:
    corpora = [write_corpus(tmp_path / f"c{i}.jsonl", 6000, seed=i) for i in range(2)]
    prints = [fingerprint(c) for c in corpora]
    out = tmp_path / "idx"
    Retriever.build(corpora[0], out)
    killed = 0
    for seed in seeds:
        before = tree_digest(out)
        target = seed % 2
        proc = subprocess.Popen(index_command(corpora[target], out), env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.Random(seed).uniform(0.2, 2.5))
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        assert code in (0, -signal.SIGKILL), f"seed {seed}: the build failed by itself ({code})"
        killed += code == -signal.SIGKILL
        # the previous index, byte for byte, or a complete new one: never anything in between
        m = read_manifest(out, verify=True)
        if tree_digest(out) != before:
            assert m["corpus"]["fingerprint"] == prints[target], f"seed {seed}: a mixed index"
        assert Retriever.load(out).search("w1 w2", k=3)
    assert killed >= len(seeds) // 2  # most attempts really were killed mid-build
    res = subprocess.run(index_command(corpora[1], out), env=env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert read_manifest(out)["corpus"]["fingerprint"] == prints[1]
    assert leftovers(out) == [] and not lock_path(out.absolute()).exists()


def test_sigkill_mid_build_leaves_the_previous_index(tmp_path):
    _kill_rebuilds(tmp_path, range(4))


@pytest.mark.slow
def test_sigkill_mid_build_many_seeds(tmp_path):
    _kill_rebuilds(tmp_path, range(4, 24))


SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from indexing.corpus import Doc
    from retriever import kinds
    out, ready, go = sys.argv[1:4]

    def docs():  # a build that pauses half way until the test says go
        for i in range(2000):
            if i == 1000:
                Path(ready).touch()
                while not Path(go).exists():
                    time.sleep(0.01)
            yield Doc(f"d{i}", "", f"word{i % 97} word{i % 13}")

    kind = kinds.get("bm25")
    kinds.build(kind, docs(), out, kind.make_settings(), overwrite=True)
""")


def test_two_writers_one_fails_clearly(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 500, seed=3)
    out = tmp_path / "idx"
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(out), str(ready), str(go)], env=env(),
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    assert ready.exists(), first.stderr.read() if first.poll() is not None else "the first writer never started"
    second = subprocess.run(index_command(corpus, out), env=env(), capture_output=True, text=True)
    go.touch()
    assert first.wait() == 0, first.stderr.read()
    assert second.returncode == 1
    assert "another process" in second.stderr and "Traceback" not in second.stderr
    assert len(Retriever.load(out)) == 2000  # the first writer's index, complete


REBUILDER = textwrap.dedent("""
    import sys
    from retriever import Retriever
    corpora, out, rounds = sys.argv[1:3], sys.argv[3], int(sys.argv[4])
    for i in range(rounds):
        Retriever.build(corpora[i % 2], out, overwrite=True)
""")


def test_readers_see_one_generation_while_the_index_is_rebuilt(tmp_path):
    corpora = [write_corpus(tmp_path / f"c{i}.jsonl", 1500, seed=10 + i) for i in range(2)]
    expected = []
    for i, c in enumerate(corpora):
        r = Retriever.build(c, tmp_path / f"ref{i}")
        expected.append((r.search_batch(QUERIES, k=10), f"t{10 + i}"))
    out = tmp_path / "idx"
    Retriever.build(corpora[0], out)
    held = Retriever.load(out)  # loaded once, searched throughout
    writer = subprocess.Popen([sys.executable, "-c", REBUILDER, *map(str, corpora), str(out), "12"],
                              env=env(), stderr=subprocess.PIPE, text=True)
    errors, loads, generations = [], 0, set()

    def check(r, where):
        run = r.search_batch(QUERIES, k=10)
        gen = [i for i, (want, _) in enumerate(expected) if run == want]
        assert gen, f"{where}: a result set from no single generation"
        top = next(iter(run["q1"]))
        assert r.doc(top)["title"] == expected[gen[0]][1], f"{where}: text of another generation"
        return gen[0]

    while writer.poll() is None:
        try:
            generations.add(check(Retriever.load(out), "fresh load"))
            loads += 1
            assert check(held, "held") == 0
        except Exception as e:  # noqa: BLE001 - every failure counts
            errors.append(repr(e))
    assert writer.returncode == 0, writer.stderr.read()
    assert errors == [], errors[:3]
    assert loads >= 10 and generations == {0, 1}
    assert check(Retriever.load(out), "final") == 1


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_readers_in_threads_during_rebuilds(tmp_path, monkeypatch, exchange):
    """The same in one process: searching threads while another thread rebuilds, with the atomic
    exchange and with the two-rename fallback (OUT briefly absent: readers wait for the writer)."""
    if not exchange:
        from indexing import manifest

        monkeypatch.setattr(manifest, "_exchange", lambda a, b: False)
    corpora = [write_corpus(tmp_path / f"c{i}.jsonl", 800, seed=20 + i) for i in range(2)]
    expected = [Retriever.build(c, tmp_path / f"ref{i}").search_batch(QUERIES, k=5) for i, c in enumerate(corpora)]
    out = tmp_path / "idx"
    Retriever.build(corpora[0], out)
    stop, errors = threading.Event(), []

    def reader():
        while not stop.is_set():
            try:
                assert Retriever.load(out).search_batch(QUERIES, k=5) in expected
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            Retriever.build(corpora[(i + 1) % 2], out, overwrite=True)
    finally:  # a failing build must not leave readers running into the next tests
        stop.set()
        for t in threads:
            t.join()
    assert errors == []


def test_a_write_killed_midway_leaves_a_temporary_file_the_next_write_removes(tmp_path):
    """kill -9 inside ``atomic_open`` leaves ``.F.XXXX.tmp``; the next write of F removes it once
    it is old and unlocked, and leaves a live writer's (locked) and a young one alone."""
    from indexing.io import ABANDONED_AFTER_S, atomic_write_text

    out = tmp_path / "run.trec"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from indexing.io import atomic_open
        with atomic_open({str(out)!r}) as f:
            f.write("q1 Q0 d1 1 1.0 run\\n" * 1000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    live = [x for x in tmp_path.iterdir() if x.name.startswith(".run.trec.")]
    assert len(live) == 1
    old = time.time() - 2 * ABANDONED_AFTER_S
    os.utime(live[0], (old, old))
    atomic_write_text(out, "a\n")  # the writer is alive (its lock held): its file stays
    assert live[0].exists()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert live[0].exists() and not out.read_text().startswith("q1")  # what the kill left behind
    young = tmp_path / ".run.trec.young.tmp"
    young.write_text("x")
    atomic_write_text(out, "b\n")
    assert not live[0].exists() and young.exists() and out.read_text() == "b\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == [".run.trec.young.tmp", "run.trec"]
