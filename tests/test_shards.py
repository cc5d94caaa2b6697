"""Sharded indexes (issue 15): a sharded index returns what one index returns (BM25, SPLADE,
dense Flat exactly; IVF-PQ with a shared quantizer as good as one index with it), built in this
process, in local processes or on Ray; searched in threads or by Ray actors; resumable, and
refused clearly when a shard is missing or damaged."""

import codecs
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

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY_WORDS, write_beir
from eval.beir import BeirDataset
from indexing.corpus_ranges import iter_range, split_ranges, split_rows
from indexing.errors import DataError
from indexing.manifest import IndexFormatError, read_manifest
from retriever import Retriever, cli
from retriever.kinds.hybrid import compose
from retriever.kinds.sharded import merge_top_k

ROOT = Path(__file__).resolve().parent.parent
WORDS = [w for w in TINY_WORDS if w.isalpha()]


# small encoding blocks and batches, so that shards hold several blocks and a block several batches
BLOCKS = {"encode_block": 16, "batch_size": 4}


def make_corpus(root: Path, docs: int = 150, seed: int = 0) -> Path:
    """A BEIR directory of ``docs`` documents drawn from the tiny model's words (so every model
    token is known), some sharing texts (ties), and 12 queries."""
    rng = random.Random(seed)
    rows = []
    for i in range(docs):
        text = " ".join(rng.choices(WORDS, k=rng.randint(4, 30))) if i % 10 else "vitamin d bone health"
        rows.append({"_id": f"doc{rng.randint(0, 10**6):07d}-{i}", "title": " ".join(rng.choices(WORDS, k=3)),
                     "text": text})
    queries = [{"_id": f"q{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))} for i in range(12)]
    return write_beir(root, rows, queries)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("shards") / "corpus")


def queries(corpus: Path) -> dict:
    return BeirDataset(corpus).queries()


def assert_same_runs(a: dict, b: dict, tol: float = 0.0) -> None:
    """The same doc ids in the same order for every query; scores within ``tol``."""
    assert a.keys() == b.keys()
    for q in a:
        assert list(a[q]) == list(b[q]), q
        assert np.allclose(list(a[q].values()), list(b[q].values()), rtol=0, atol=tol), q


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session (token authentication left as Ray sets it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


# -- units --------------------------------------------------------------------------------------

def test_merge_keeps_the_tie_rule():
    a = [("b", 3.0), ("a", 1.0)]
    b = [("c", 3.0), ("a0", 1.0), ("z", 0.5)]
    assert merge_top_k([a, b], 4) == [("b", 3.0), ("c", 3.0), ("a", 1.0), ("a0", 1.0)]


def test_byte_ranges_read_every_line_once_in_order(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"_id": f"d{i}", "text": "x" * (i % 7)}) for i in range(50)]
    path.write_text("\ufeff" + "\n".join(lines[:20]) + "\n\n" + "\n".join(lines[20:]), encoding="utf-8")
    for n in (1, 3, 7, 50):
        ranges = split_ranges(path, n)
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        ids = [d.docid for r in ranges for d in iter_range(path, r)]
        assert ids == [f"d{i}" for i in range(50)], n


def test_range_errors_name_the_real_line(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [json.dumps({"_id": f"d{i}", "text": "t"}) for i in range(30)]
    rows[25] = '{"_id": "d25", "text": 3}'
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ranges = split_ranges(path, 3)
    with pytest.raises(DataError, match=r"c\.jsonl:26: "):
        for r in ranges:
            list(iter_range(path, r))


# -- sharded == unsharded -------------------------------------------------------------------------

def test_bm25_shards_analyse_each_document_once(corpus, tmp_path, monkeypatch):
    from indexing.analysis import Analyzer

    calls = []
    analyse = Analyzer.__call__
    monkeypatch.setattr(Analyzer, "__call__", lambda self, text: calls.append(text) or analyse(self, text))
    Retriever.build(corpus, tmp_path / "one", kind="bm25")
    assert len(calls) == 150  # flat: one call per document (title and text together)
    calls.clear()
    Retriever.build(corpus, tmp_path / "three", kind="bm25", shards=3)
    assert len(calls) == 150  # the statistics and the impacts come from one analysis


def test_bm25_shard_refuses_analysis_of_other_documents(corpus, tmp_path):
    from indexing import bm25
    from indexing.manifest import IndexWriter
    from retriever.kinds import bm25 as kind

    settings = kind.Settings()
    docs = list(iter_range(corpus / "corpus.jsonl", (0, (corpus / "corpus.jsonl").stat().st_size)))
    state = bm25.analyse(docs[:10], settings.analyzer(), settings.params(), tmp_path)
    state.save()
    with IndexWriter(tmp_path / "idx") as writer:
        with pytest.raises(ValueError, match=r"document 3 .* not the one analysed"):
            kind.write(iter(docs[:2] + docs[5:12]), writer, settings, analysed=tmp_path)
        with pytest.raises(ValueError, match="10 documents analysed, 9 read"):
            kind.write(iter(docs[:9]), writer, settings, analysed=tmp_path)


@pytest.mark.parametrize("fields", ["flat", "multifield"])
def test_bm25_sharded_scores_every_document_as_one_index(corpus, tmp_path, fields):
    one = Retriever.build(corpus, tmp_path / "one", kind="bm25", fields=fields)
    sharded = Retriever.build(corpus, tmp_path / "three", kind="bm25", fields=fields, shards=3)
    assert [e["doc_count"] for e in sharded.manifest["shards"]] and len(sharded.manifest["shards"]) == 3
    assert sharded.docids == one.docids  # corpus order: global row = offset + local row
    qs = queries(corpus)
    assert_same_runs(sharded.search_batch(qs, k=len(one)), one.search_batch(qs, k=len(one)))
    assert sharded.manifest["shared"]["collection"]["doc_count"] == [
        one.manifest["field_stats"][f]["doc_count"] for f in one.manifest["field_stats"]]
    # each shard is a complete index, loadable alone, scoring its documents as the whole does
    alone = Retriever.load(tmp_path / "three" / "shards" / "001")
    row = sharded.manifest["shards"][1]["offset"]
    assert alone.docids[0] == one.docids[row]
    hits = alone.search("vitamin d bone health", k=3)
    full = dict((h.docid, h.score) for h in one.search("vitamin d bone health", k=len(one)))
    assert hits and all(full[h.docid] == h.score for h in hits)
    assert sharded.doc(one.docids[-1]) == one.doc(one.docids[-1])


def test_sparse_sharded_equals_unsharded(corpus, tmp_path, tiny_mlm, one_torch_thread):
    one = Retriever.build(corpus, tmp_path / "one", kind="sparse", model=str(tiny_mlm), **BLOCKS, device="cpu")
    sharded = Retriever.build(corpus, tmp_path / "three", kind="sparse", model=str(tiny_mlm), **BLOCKS, device="cpu",
                              shards=3)
    qs = queries(corpus)
    assert_same_runs(sharded.search_batch(qs, k=len(one)), one.search_batch(qs, k=len(one)))  # bit for bit


def test_dense_flat_sharded_equals_unsharded(corpus, tmp_path, tiny_mlm, one_torch_thread):
    one = Retriever.build(corpus, tmp_path / "one", kind="dense", model=str(tiny_mlm), **BLOCKS, faiss="Flat", device="cpu")
    sharded = Retriever.build(corpus, tmp_path / "three", kind="dense", model=str(tiny_mlm), **BLOCKS, faiss="Flat",
                              device="cpu", shards=3)
    qs = queries(corpus)
    assert_same_runs(sharded.search_batch(qs, k=len(one)), one.search_batch(qs, k=len(one)), 1e-5)
    assert [h.docid for h in sharded.search("vitamin d", k=5)] == [h.docid for h in one.search("vitamin d", k=5)]


def test_ivf_pq_shards_share_one_quantizer(corpus, tmp_path, tiny_mlm, one_torch_thread):
    spec = "IVF4,PQ8x4"
    Retriever.build(corpus, tmp_path / "one", kind="dense", model=str(tiny_mlm), **BLOCKS, faiss=spec, device="cpu",
                    shards=1)
    three = Retriever.build(corpus, tmp_path / "three", kind="dense", model=str(tiny_mlm), **BLOCKS, faiss=spec, device="cpu",
                            shards=3)
    q_one = (tmp_path / "one" / "shared" / "quantizer.faiss").read_bytes()
    assert q_one == (tmp_path / "three" / "shared" / "quantizer.faiss").read_bytes()
    assert three.manifest["shared"]["quantizer"]["factory"] == "IVF4,PQ8x4"
    unsharded = Retriever.load(tmp_path / "one" / "shards" / "000")  # one complete index, same quantizer
    qs = queries(corpus)
    a, b = three.search_batch(qs, k=10), unsharded.search_batch(qs, k=10)
    agree = sum(set(a[q]) == set(b[q]) for q in qs) / len(qs)
    assert agree >= 0.99


def test_local_processes_build_the_same_index(corpus, tmp_path):
    one = Retriever.build(corpus, tmp_path / "inproc", kind="bm25", shards=3)
    two = Retriever.build(corpus, tmp_path / "procs", kind="bm25", shards=3, workers=2)
    qs = queries(corpus)
    assert_same_runs(two.search_batch(qs, k=50), one.search_batch(qs, k=50))


def test_hybrid_composes_sharded_components(corpus, tmp_path, tiny_mlm, one_torch_thread):
    common = dict(model=str(tiny_mlm), **BLOCKS, faiss="Flat", device="cpu")
    Retriever.build(corpus, tmp_path / "bm25", kind="bm25")
    Retriever.build(corpus, tmp_path / "dense", kind="dense", **common)
    Retriever.build(corpus, tmp_path / "bm25-s", kind="bm25", shards=2)
    Retriever.build(corpus, tmp_path / "dense-s", kind="dense", shards=3, **common)
    plain = Retriever.load(compose(tmp_path / "bm25", tmp_path / "dense", tmp_path / "h"))
    sharded = Retriever.load(compose(tmp_path / "bm25-s", tmp_path / "dense-s", tmp_path / "hs"))
    qs = queries(corpus)
    a, b = sharded.search_batch(qs, k=20), plain.search_batch(qs, k=20)
    assert all(list(a[q]) == list(b[q]) for q in qs)


# -- Ray ------------------------------------------------------------------------------------------

def test_ray_build_and_actor_search_equal_in_process(corpus, tmp_path, ray_cluster, tiny_mlm):
    local = Retriever.build(corpus, tmp_path / "local", kind="bm25", shards=3)
    on_ray = Retriever.build(corpus, tmp_path / "ray", kind="bm25", shards=3, workers=2, ray="auto")
    qs = queries(corpus)
    assert_same_runs(on_ray.search_batch(qs, k=100), local.search_batch(qs, k=100))
    actors = Retriever.load(tmp_path / "ray", ray="auto", groups=1, replicas=2)  # two actors of 3 shards
    for _ in range(2):  # every replica serves a batch
        assert_same_runs(actors.search_batch(qs, k=100), local.search_batch(qs, k=100))
    assert actors.search("vitamin d bone", k=5) == local.search("vitamin d bone", k=5)
    assert actors.doc(local.docids[7]) == local.doc(local.docids[7])
    dense = Retriever.build(corpus, tmp_path / "dense", kind="dense", model=str(tiny_mlm), **BLOCKS, faiss="Flat",
                            device="cpu", shards=3)
    on_actor = Retriever.load(tmp_path / "dense", ray="auto", groups=1)  # (groups of shards: the bench)
    assert_same_runs(on_actor.search_batch(qs, k=50), dense.search_batch(qs, k=50), 1e-6)


def test_a_worker_killed_mid_build_is_retried(tmp_path, ray_cluster):
    corpus = make_corpus(tmp_path / "big", docs=1500, seed=3)
    clean = Retriever.build(corpus, tmp_path / "clean", kind="bm25", shards=3)
    out = tmp_path / "killed"
    shards = Path(str(out) + ".partial") / "shards"
    killed = []

    def kill_first_writer() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for lock in shards.glob("*.lock") if shards.is_dir() else []:
                try:
                    pid = int(lock.read_text().strip())
                except (OSError, ValueError):
                    continue
                os.kill(pid, signal.SIGKILL)  # the Ray actor writing this shard, mid-build
                killed.append(lock.name)
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=kill_first_writer)
    watcher.start()
    built = Retriever.build(corpus, out, kind="bm25", shards=3, workers=2, ray="auto")
    watcher.join()
    assert killed, "no shard writer was caught mid-build"
    qs = queries(corpus)
    assert_same_runs(built.search_batch(qs, k=200), clean.search_batch(qs, k=200))
    assert not shards.parent.exists()


# -- the driver killed, then --resume --------------------------------------------------------------

DIE_AFTER_FIRST_SHARD = textwrap.dedent("""
    import os, signal, sys
    from retriever import kinds
    from retriever.shards.build import build_sharded
    kind = kinds.get("bm25")
    build_sharded("bm25", sys.argv[1], sys.argv[2], kind.make_settings(), shards=3, overwrite=len(sys.argv) > 3,
                  on_shard=lambda i: os.kill(os.getpid(), signal.SIGKILL))
""")


def test_resume_rebuilds_only_the_missing_shards(corpus, tmp_path):
    out = tmp_path / "idx"
    proc = subprocess.run([sys.executable, "-c", DIE_AFTER_FIRST_SHARD, str(corpus), str(out)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()
    work = Path(str(out) + ".partial")
    done = work / "shards" / "000"
    assert (done / "manifest.json").is_file() and not (work / "shards" / "001" / "manifest.json").exists()
    mtimes = {p.relative_to(done): p.stat().st_mtime_ns for p in done.rglob("*")}
    shared = {p.name: p.stat().st_mtime_ns for p in (work / "shared").iterdir()}
    time.sleep(0.01)
    with pytest.raises(ValueError, match="other settings"):  # another plan is not resumed
        Retriever.build(corpus, out, kind="bm25", fields="multifield", shards=3, resume=True)
    resumed = Retriever.build(corpus, out, kind="bm25", shards=3, resume=True)
    assert {p.relative_to(out / "shards" / "000"): p.stat().st_mtime_ns
            for p in (out / "shards" / "000").rglob("*")} == mtimes
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shared").iterdir()} == shared
    clean = Retriever.build(corpus, tmp_path / "clean", kind="bm25", shards=3)
    qs = queries(corpus)
    assert_same_runs(resumed.search_batch(qs, k=100), clean.search_batch(qs, k=100))


def test_a_failed_sharded_build_says_where_its_parts_wait_for_resume(corpus, tmp_path, monkeypatch, caplog):
    """A sharded build that failed (a full disk) kept OUT.partial for --resume without a word."""
    import errno

    from retriever.shards.worker import ShardWorker

    real = ShardWorker.build

    def full_disk_on_shard_1(self, shard, *args, **kwargs):
        if shard == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, shard, *args, **kwargs)

    monkeypatch.setattr(ShardWorker, "build", full_disk_on_shard_1)
    out = tmp_path / "idx"
    with pytest.raises(OSError, match="could not be written"):
        Retriever.build(corpus, out, kind="bm25", shards=3)
    assert f"its finished parts are kept in {out}.partial" in caplog.text and "--resume" in caplog.text
    monkeypatch.undo()
    assert Retriever.build(corpus, out, kind="bm25", shards=3, resume=True).search("a", k=1) is not None


def test_resume_builds_a_finished_shard_damaged_since_again(corpus, tmp_path):
    """A finished shard waiting in OUT.partial and damaged since is checked and built again; it
    was assembled and swapped in over the good index, which the load after the swap then refused."""
    out = tmp_path / "idx"
    good = Retriever.build(corpus, out, kind="bm25", shards=3)
    qs = queries(corpus)
    before = good.search_batch(qs, k=100)
    proc = subprocess.run([sys.executable, "-c", DIE_AFTER_FIRST_SHARD, str(corpus), str(out), "overwrite"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    postings = Path(str(out) + ".partial") / "shards" / "000" / "postings.npy"
    data = bytearray(postings.read_bytes())
    data[-1] ^= 1  # same size: only the checksum notices
    postings.write_bytes(bytes(data))
    resumed = Retriever.build(corpus, out, kind="bm25", shards=3, resume=True, overwrite=True)
    assert_same_runs(resumed.search_batch(qs, k=100), before)
    assert Retriever.load(out).search_batch(qs, k=100) == resumed.search_batch(qs, k=100)  # (verified load)


def test_workers_end_when_the_driver_is_killed(tmp_path):
    """A worker's watch thread ends it once its driver is gone (killed with -9, workers were left
    alive forever, blocked on a pipe, each holding its encoder)."""
    script = textwrap.dedent('''
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import os, time; from retriever.shards.runners import _exit_with_the_driver; "
            "_exit_with_the_driver(os.getppid(), every_s=0.05); time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
    ''')
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker = int(driver.stdout.readline())
    time.sleep(0.5)
    assert _alive(worker)  # (running: the watch thread started)
    driver.kill()
    driver.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _alive(worker):
        time.sleep(0.05)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, reaped by init soon, counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


# -- damaged shards -------------------------------------------------------------------------------

def test_missing_or_corrupt_shards_are_named(corpus, tmp_path):
    out = tmp_path / "idx"
    Retriever.build(corpus, out, kind="bm25", shards=3)
    postings = max((p for p in (out / "shards" / "002").iterdir() if p.suffix == ".npy"), key=lambda p: p.stat().st_size)
    data = bytearray(postings.read_bytes())
    data[-1] ^= 0xFF
    postings.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="shards/002"):
        Retriever.load(out)
    (out / "shards" / "002" / "docids.txt").rename(out / "gone.txt")
    with pytest.raises(IndexFormatError, match="shards/002"):
        Retriever.load(out, verify=False)
    other = tmp_path / "other"
    Retriever.build(corpus, other, kind="bm25", shards=3, k1=1.2)
    os.rename(out / "shards" / "001", tmp_path / "moved")
    with pytest.raises(IndexFormatError, match="shard shards/001 is missing"):
        Retriever.load(out, verify=False)
    os.rename(other / "shards" / "001", out / "shards" / "001")
    with pytest.raises(IndexFormatError, match="shard shards/001 is not the index"):
        Retriever.load(out, verify=False)
    assert read_manifest(other, verify=False)["backend"] == "sharded"


# -- CLI --------------------------------------------------------------------------------------------

def test_cli_builds_searches_and_describes_a_sharded_index(corpus, tmp_path):
    out = tmp_path / "idx"
    runner = CliRunner()
    res = runner.invoke(cli.main, ["index", str(corpus), str(out), "--shards", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "3 shards" in res.output
    res = runner.invoke(cli.main, ["search", str(out), "vitamin d bone health", "-k", "3"])
    assert res.exit_code == 0 and "vitamin" in res.output, res.output
    res = runner.invoke(cli.main, ["info", str(out), "--verify"])
    assert res.exit_code == 0 and "shards" in res.output and "checksums  ok" in res.output, res.output
    res = runner.invoke(cli.main, ["index", str(corpus), str(tmp_path / "x"), "--resume"])
    assert res.exit_code == 2 and "--shards" in res.output
    res = runner.invoke(cli.main, ["eval", "--index", str(corpus / "nothing"), "--dataset", str(corpus),
                                   "--replicas", "2"])
    assert res.exit_code == 2 and "--ray" in res.output


def test_a_duplicate_across_shards_names_both_lines(tmp_path):
    rows = [{"_id": f"d{i}", "text": "vitamin d bone health"} for i in range(30)] + [{"_id": "d3", "text": "again"}]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match="duplicate doc id 'd3' \\(first on line 4\\)") as e:
        Retriever.build(corpus, tmp_path / "idx", kind="bm25", shards=3)
    assert str(e.value).startswith(f"{corpus}:31:")
    assert not (tmp_path / "idx").exists()


def test_row_ranges_cut_at_whole_encoding_blocks(tmp_path):
    lines = ['{"_id": "d%d", "text": "x"}' % i for i in range(23)]
    lines.insert(5, "   ")  # blank lines are not documents
    lines.insert(0, "")
    path = tmp_path / "c.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + ("\n".join(lines) + "\n").encode())
    ranges = split_rows(path, 3, 4)  # 6 blocks of 4 (the last holds 3): 2 per range
    assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    ids = [[d.docid for d in iter_range(path, r)] for r in ranges]
    assert ids == [[f"d{i}" for i in range(0, 8)], [f"d{i}" for i in range(8, 16)],
                   [f"d{i}" for i in range(16, 23)]]
    assert [len(list(iter_range(path, r))) for r in split_rows(path, 4, 8)] == [0, 8, 8, 7]
    with pytest.raises(ValueError, match="too few documents for 4 shards .* encoding blocks of 8"):
        Retriever.build(path, tmp_path / "idx", kind="dense", model="unused", shards=4, encode_block=8)


def test_sharded_sparse_encodes_every_document_as_one_index(tmp_path, tiny_mlm):
    """Shards cut at encoding blocks: every stored impact equals the unsharded index's, although
    length-sorted batches would otherwise mix different neighbours."""
    corpus = make_corpus(tmp_path / "c", docs=100, seed=5)
    one = Retriever.build(corpus, tmp_path / "one", kind="sparse", model=str(tiny_mlm), device="cpu", **BLOCKS)
    three = Retriever.build(corpus, tmp_path / "three", kind="sparse", model=str(tiny_mlm), device="cpu",
                            shards=3, **BLOCKS)
    index = one.searcher.index
    for shard in three.searcher.groups[0].searchers:
        part = shard.index
        for term, t in part.term_ids.items():
            local = [shard.docids[d] for d in part.docs[part.offsets[t]:part.offsets[t + 1]]]
            mine = dict(zip(local, part.impacts[part.offsets[t]:part.offsets[t + 1]].tolist()))
            u = index.term_ids[term]
            full = dict(zip((one.docids[d] for d in index.docs[index.offsets[u]:index.offsets[u + 1]]),
                            index.impacts[index.offsets[u]:index.offsets[u + 1]].tolist()))
            assert all(full[d] == v for d, v in mine.items()), term


def test_shards_merge_quantised_scores_in_the_order_one_index_gives(tmp_path):
    """Two sums that differ in float32 but are equal once divided by the scale: one index ranks
    them by the sum; the shards' merge must too, not by doc id."""
    w1, w2 = 2.0924041271209717, 0.6974679827690125  # 25 * w1 vs 75 * w2: adjacent float32 sums
    rows = [{"id": "zz", "vector": {"t1": 0.25}}]
    rows += [{"id": f"f{i:02d}", "vector": {"t3": 1.0}} for i in range(20)]
    rows += [{"id": "aa", "vector": {"t2": 0.75}}]
    corpus = tmp_path / "vectors.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    one = Retriever.build(corpus, tmp_path / "one", kind="sparse", vectors=True)
    two = Retriever.build(corpus, tmp_path / "two", kind="sparse", vectors=True, shards=2)
    hits = one.search_weights({"t1": w1, "t2": w2}, k=2)
    assert [h.docid for h in hits] == ["zz", "aa"] and hits[0].score == hits[1].score
    assert two.search_weights({"t1": w1, "t2": w2}, k=2) == hits
    assert two.search_weights({"t1": w1, "t2": w2}, k=1) == hits[:1]


def test_impossible_shard_counts_are_refused_before_any_cut(tmp_path):
    """More shards than the file has bytes (or than an index holds) is refused at once, leaving
    nothing behind: 10**20 shards looped over every cut, growing memory, before."""
    from retriever import Retriever

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": "words here"}) + "\n" for i in range(5)))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="at most 65,536"):
        Retriever.build(corpus, tmp_path / "a", kind="bm25", shards=10**20)
    with pytest.raises(ValueError, match=r"too few lines for 1000 shards \(\d+ bytes\)"):
        Retriever.build(corpus, tmp_path / "b", kind="bm25", shards=1000)
    assert time.perf_counter() - t0 < 30  # (refused, not cut: the loop took minutes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_a_shard_group_opens_only_the_generation_the_driver_loaded(corpus, tmp_path):
    """A Ray actor restarted after the index was rebuilt would open the new shards while the driver
    and the other actors search the old ones (results of neither generation): it refuses."""
    from indexing.manifest import CHECKSUM_KEY
    from retriever.shards.ray_search import ShardGroupActor

    out = tmp_path / "idx"
    loaded = Retriever.build(corpus, out, kind="bm25", shards=3)
    generation = loaded.manifest[CHECKSUM_KEY]
    assert ShardGroupActor(str(out), [0, 1], {}, generation).ready()
    Retriever.build(corpus, out, kind="bm25", k1=1.2, shards=3, overwrite=True)
    with pytest.raises(IndexFormatError, match="rebuilt since it was loaded; load it again"):
        ShardGroupActor(str(out), [0, 1], {}, generation)
