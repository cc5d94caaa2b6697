"""Each hole of the reliability issue, reproduced and closed: kernels, corrupt postings, manifests
that point outside their index, concurrent writers, one generation per reader, k, settings,
guards, and errors that are one line instead of a traceback."""

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexing.inverted import POSTINGS_DOCS, InvertedIndex
from indexing.manifest import (CHECKSUM_KEY, IndexBusyError, IndexFormatError, IndexWriter, WriterLock,
                               leftovers, manifest_digest, read_manifest, sha256_file)
from oracles import dense_scores, top_k
from retriever import Retriever, cli
from retriever.api import verify_index
from eval.fusion import fuse_one
from retriever.kinds.hybrid import compose


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def one_line_error(res, code=1):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res.output


def rewrite(root: Path, edit) -> None:
    """Edit a manifest and re-seal it (sizes, checksums, its own checksum), as an adversary who
    knows the format would: the checks under test must not rely on the seal."""
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    files = m.get("files")
    for name, info in (files.items() if isinstance(files, dict) else []):
        p = root / name
        if p.is_file() and not p.is_symlink() and Path(os.path.abspath(p)).is_relative_to(root):
            info.update(bytes=p.stat().st_size, sha256=sha256_file(p))
    m[CHECKSUM_KEY] = manifest_digest(m)
    (root / "manifest.json").write_text(json.dumps(m))


@pytest.fixture
def bm25(beir_dir, tmp_path):
    return Retriever.build(beir_dir, tmp_path / "idx")


# -- kernels ------------------------------------------------------------------------------------

def test_zero_contributions_are_recorded_once():
    """Every posting's contribution is 0: the old kernel appended each document once per posting
    (60 entries into a buffer of 3) and wrote past it."""
    terms = [f"t{i}" for i in range(20)]
    offsets = np.arange(0, 61, 3, dtype=np.int64)
    docs = np.tile(np.arange(3, dtype=np.int32), 20)
    index = InvertedIndex(terms, offsets, docs, np.zeros(60, np.float32), num_docs=3)
    for _ in range(50):
        ids, scores = index.top_k({t: 1.0 for t in terms}, 10)
        assert len(ids) == 0
    impacts = np.zeros(60, np.float32)
    impacts[5] = 2.0  # term 1, doc 2
    index = InvertedIndex(terms, offsets, docs, impacts, num_docs=3)
    ids, scores = index.top_k({t: 1.0 for t in terms}, 10)
    assert ids.tolist() == [2] and scores.tolist() == [2.0]


def test_denormal_weights_rank_as_the_oracle(bm25):
    index = bm25.searcher.index
    query = {"vitamin": 1e-45, "fractur": 1e-45, "coffe": 1e-45}
    want = top_k(dense_scores(index, query), 10)
    assert [bm25.docids.index(h.docid) for h in bm25.search_weights(query, k=10)] == want


@pytest.mark.parametrize("weight", [math.inf, -math.inf, math.nan, 1e39])
def test_non_finite_query_weights_are_refused(bm25, weight):
    with pytest.raises(ValueError, match="finite"):
        bm25.search_weights({"vitamin": weight}, k=5)


def test_zero_and_negative_weights_are_ignored(bm25):
    assert bm25.search_weights({"vitamin": 0.0, "coffe": -1.0}, k=5) == []


@pytest.mark.parametrize("k1", ["inf", "nan", "-1"])
def test_bm25_parameters_must_be_finite(beir_dir, tmp_path, k1):
    with pytest.raises(ValueError):
        Retriever.build(beir_dir, tmp_path / "i", k1=float(k1))
    one_line_error(run("index", beir_dir, tmp_path / "j", "--k1", k1, "--quiet"), code=2)
    assert not (tmp_path / "i").exists() and not (tmp_path / "j").exists()


# -- corrupt postings ---------------------------------------------------------------------------

def as_uncompressed(root: Path) -> None:
    """Write an index's postings again in the uncompressed layout of formats 1 and 2 (CSR; the
    block-max lists are computed on load), as an index of those formats holds them. The packed
    layout's corruptions: tests/test_compressed_postings.py."""
    index = Retriever.load(root).searcher.index.uncompressed()
    for name in ("term_ptr.npy", "postings.npy", "impact_table.npy", "doc_norms.npy", "norm_table.npy"):
        (root / name).unlink(missing_ok=True)
    np.save(root / "offsets.npy", index.offsets)
    np.save(root / POSTINGS_DOCS, index.docs)
    np.save(root / "postings_impacts.npy", index.impacts)

    def edit(m):
        m["files"] = {p.name: {} for p in root.iterdir() if p.name != "manifest.json"}
        m["postings"]["format"] = "csr"

    rewrite(root, edit)


@pytest.mark.parametrize("bad_id", [10**6, -1, 6])
def test_out_of_range_doc_ids_fail_cleanly(bm25, bad_id):
    """Postings edited and the manifest re-sealed, so --verify's checksums pass: the bounds are
    what stops the kernel writing outside its buffer."""
    root = bm25.path
    as_uncompressed(root)
    docs = np.load(root / POSTINGS_DOCS)
    docs[0] = bad_id
    np.save(root / POSTINGS_DOCS, docs)
    rewrite(root, lambda m: None)
    r = Retriever.load(root)  # cheap checks pass: the structure is sound
    term = r.searcher.index.terms[0]
    with pytest.raises(IndexFormatError, match="outside the collection"):
        r.search_weights({term: 1.0}, k=5)
    with pytest.raises(IndexFormatError, match="doc ids outside"):
        verify_index(root)
    out = one_line_error(run("info", root, "--verify"))
    assert "doc ids outside" in out


def test_unordered_postings_and_bad_offsets_are_found(bm25):
    root = bm25.path
    as_uncompressed(root)
    offsets = np.load(root / "offsets.npy")
    long_term = int(np.argmax(np.diff(offsets)))
    docs = np.load(root / POSTINGS_DOCS)
    s = offsets[long_term]
    docs[s], docs[s + 1] = docs[s + 1], docs[s]
    np.save(root / POSTINGS_DOCS, docs)
    rewrite(root, lambda m: None)
    with pytest.raises(IndexFormatError, match="not ascending"):
        verify_index(root)
    offsets[-1] += 5
    np.save(root / "offsets.npy", offsets)
    rewrite(root, lambda m: None)
    with pytest.raises(IndexFormatError, match="offsets run from"):
        Retriever.load(root)


# -- manifests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/../../x", "./docids.txt", ""])
def test_manifest_cannot_name_files_outside_the_index(bm25, name):
    size = os.path.getsize("/etc/passwd")
    rewrite(bm25.path, lambda m: m["files"].update({name: {"bytes": size, "sha256": "0" * 64}}))
    with pytest.raises(IndexFormatError) as err:
        Retriever.load(bm25.path)
    assert str(size) not in str(err.value)


def test_symbolic_links_in_an_index_are_refused(bm25, tmp_path):
    secret = tmp_path / "secret.npy"
    np.save(secret, np.arange(3))
    link = bm25.path / "extra.npy"
    link.symlink_to(secret)
    rewrite(bm25.path, lambda m: m["files"].update({"extra.npy": {"bytes": 1, "sha256": "0" * 64}}))
    with pytest.raises(IndexFormatError, match="symbolic link"):
        Retriever.load(bm25.path)


def test_a_hand_edited_manifest_is_detected(bm25):
    path = bm25.path / "manifest.json"
    m = json.loads(path.read_text())
    m["analyzer"]["stemmer"] = "none"  # would analyse queries unlike the documents
    path.write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="manifest checksum"):
        Retriever.load(bm25.path)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("kind"), "field 'kind' is missing"),
    (lambda m: m.update(kind="graph"), "unknown index kind 'graph'"),
    (lambda m: m.update(kind=7), "field 'kind' must be str"),
    (lambda m: m.pop("analyzer"), "field 'analyzer' is missing"),
    (lambda m: m["bm25"].update(k1="high"), "field 'bm25.k1' must be number"),
    (lambda m: m.update(doc_count=-1), "doc_count"),
    (lambda m: m.update(files=[]), "field 'files' must be dict"),
    (lambda m: m.update(format_version=99), "format version 99"),
])
def test_manifest_schema_errors_name_the_field(bm25, edit, message):
    rewrite(bm25.path, edit)
    with pytest.raises(IndexFormatError, match=message):
        Retriever.load(bm25.path)


def test_old_format_still_loads(bm25):
    """Format 1 (no manifest checksum) indexes keep loading."""
    m = json.loads((bm25.path / "manifest.json").read_text())
    m["format_version"] = 1
    m.pop(CHECKSUM_KEY)
    (bm25.path / "manifest.json").write_text(json.dumps(m))
    assert Retriever.load(bm25.path).search("vitamin", k=2)


def test_hybrid_components_stay_inside(bm25, tmp_path, tiny_mlm, beir_dir, one_torch_thread):
    dense = Retriever.build(beir_dir, tmp_path / "dense", kind="dense", model=str(tiny_mlm),
                            faiss="Flat", device="cpu", doc_max_length=32)
    h = compose(bm25.path, dense.path, tmp_path / "h")
    for path in ("../idx", str(bm25.path)):
        def edit(m, path=path):
            m["components"][0]["path"] = path
        rewrite(h, edit)
        with pytest.raises(IndexFormatError, match="outside|absolute"):
            Retriever.load(h)


# -- writers and readers ------------------------------------------------------------------------

def test_a_second_writer_fails_at_once(beir_dir, tmp_path):
    out = tmp_path / "idx"
    with IndexWriter(out) as first:
        with pytest.raises(IndexBusyError, match="another process"):
            IndexWriter(out, overwrite=True)
        res = run("index", beir_dir, out, "--overwrite", "--quiet")
        assert "another process" in one_line_error(res)
        first.abort()
    Retriever.build(beir_dir, out)  # the lock is gone with its writer
    assert not Path(str(out) + ".lock").exists()


def test_stale_build_directories_are_reported_and_removed(beir_dir, tmp_path):
    out = tmp_path / "idx"
    Retriever.build(beir_dir, out)
    stale = tmp_path / "idx.tmp-deadbeef"
    (stale / "x").mkdir(parents=True)
    assert "leftovers  1" in run("info", out).output
    Retriever.build(beir_dir, out, overwrite=True)
    assert leftovers(out) == [] and not stale.exists()
    (out / "heads.tmp-deadbeef" / "x").mkdir(parents=True)  # a `retriever heads` killed mid-write
    assert "leftovers  1 directories of interrupted heads builds (heads.tmp-deadbeef)" in run("info", out).output
    (tmp_path / "idx.partial" / "shards").mkdir(parents=True)  # a killed sharded build's work
    assert "leftovers  idx.partial: an interrupted sharded build" in run("info", out).output


def test_a_loaded_retriever_reads_its_own_generation(beir_dir, tmp_path):
    out = tmp_path / "idx"
    r = Retriever.build(beir_dir, out)
    before = r.doc("d3")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": "changed " * i}) + "\n"
                             for i in range(1, 9)))
    Retriever.build(other, out, overwrite=True)
    assert r.doc("d3") == before  # the old offsets read the old file, not the new one
    assert r.search("coffee", k=1)[0].docid == "d3"
    assert Retriever.load(out).doc("d3")["text"].startswith("changed")


def test_store_fusion_takes_the_writer_lock(bm25, tmp_path, tiny_mlm, beir_dir, one_torch_thread):
    from retriever.kinds.hybrid import FusionSettings, store_fusion

    dense = Retriever.build(beir_dir, tmp_path / "dense", kind="dense", model=str(tiny_mlm),
                            faiss="Flat", device="cpu", doc_max_length=32)
    h = compose(bm25.path, dense.path, tmp_path / "h")
    lock = WriterLock(h.absolute())
    with pytest.raises(IndexBusyError):
        store_fusion(h, FusionSettings("minmax", [0.5, 0.5]))
    lock.release()
    store_fusion(h, FusionSettings("minmax", [0.5, 0.5]))
    assert read_manifest(h)["fusion"]["method"] == "minmax"


def test_tune_fusion_stores_nothing_into_an_index_rebuilt_meanwhile(bm25, tmp_path, tiny_mlm, beir_dir,
                                                                   one_torch_thread):
    from retriever.kinds.hybrid import FusionSettings, store_fusion

    dense = Retriever.build(beir_dir, tmp_path / "dense", kind="dense", model=str(tiny_mlm),
                            faiss="Flat", device="cpu", doc_max_length=32)
    h = compose(bm25.path, dense.path, tmp_path / "h")
    tuned_on = read_manifest(h)
    store_fusion(h, FusionSettings("minmax", [0.3, 0.7]), tuned_on=tuned_on)  # unchanged: stored
    assert read_manifest(h)["fusion"]["weights"] == [0.3, 0.7]
    tuned_on = read_manifest(h)
    other = Retriever.build(beir_dir, tmp_path / "bm25-b", k1=1.5, b=0.3)  # other postings
    compose(other.path, dense.path, h, overwrite=True)  # rebuilt while a tuning ran
    before = (h / "manifest.json").read_bytes()
    with pytest.raises(IndexBusyError, match="rebuilt while it was tuned"):
        store_fusion(h, FusionSettings("zscore", [0.9, 0.1]), tuned_on=tuned_on)
    assert (h / "manifest.json").read_bytes() == before


# -- k and depth --------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3", None])
def test_k_must_be_a_positive_integer(bm25, k):
    with pytest.raises(ValueError, match="must be"):
        bm25.search("vitamin", k=k)
    with pytest.raises(ValueError, match="must be"):
        bm25.search_batch({"q": "vitamin"}, k=k)


def test_huge_k_is_clamped_before_allocating(beir_dir, tmp_path, tiny_mlm, one_torch_thread):
    dense = Retriever.build(beir_dir, tmp_path / "dense", kind="dense", model=str(tiny_mlm),
                            faiss="Flat", device="cpu", doc_max_length=32)
    assert len(dense.search("vitamin", k=2**31)) == 6
    assert len(dense.search_batch({"a": "x", "b": "y"}, k=2**40)["a"]) == 6


def test_cli_k_and_depth_rules(bm25, beir_dir, tmp_path):
    one_line_error(run("search", bm25.path, "vitamin", "-k", "0"), code=2)
    one_line_error(run("eval", "--index", bm25.path, "--dataset", beir_dir, "-k", "0"), code=2)
    one_line_error(run("mine", bm25.path, "--dataset", beir_dir, "--depth", "-1", "--out", tmp_path / "n"), code=2)
    one_line_error(run("fuse", tmp_path / "r.trec", "--out", tmp_path / "f", "-k", "0"), code=2)


# -- settings and guards ------------------------------------------------------------------------

def test_fusion_settings_are_checked(bm25, tmp_path):
    with pytest.raises(ValueError, match="rrf_k"):
        fuse_one([{"a": 1.0}], "rrf", rrf_k=-1)
    with pytest.raises(ValueError, match="finite"):
        fuse_one([{"a": 1.0}], "minmax", weights=[math.nan])
    run_file = tmp_path / "r.trec"
    run_file.write_text("q Q0 d 1 1.0 t\n")
    one_line_error(run("fuse", run_file, "--rrf-k", "-1", "--out", tmp_path / "f"), code=2)
    one_line_error(run("fuse", run_file, "--weights", "nan", "--out", tmp_path / "f"), code=2)


@pytest.mark.parametrize("split", ["../qrels/test", "./test", "TEST", "test"])
def test_test_split_guards_use_the_resolved_name(bm25, beir_dir, tmp_path, split):
    res = run("mine", bm25.path, "--dataset", beir_dir, "--split", split, "--out", tmp_path / "n.jsonl")
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert not (tmp_path / "n.jsonl").exists()
    res = run("tune-fusion", bm25.path, "--dataset", beir_dir, "--split", split)
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_hybrid_refuses_a_sparse_index_as_its_dense_part(bm25, tmp_path):
    out = one_line_error(run("hybrid", bm25.path, bm25.path, tmp_path / "h"))
    assert "must be dense" in out and not (tmp_path / "h").exists()


def test_beir_exit_status_counts_failed_cells(beir_dir, tmp_path):
    root = tmp_path / "beir"
    shutil.copytree(beir_dir, root / "toy")
    config = tmp_path / "runs.yaml"
    config.write_text("good: {kind: bm25}\nbroken: {kind: sparse}\n")  # sparse without a model
    res = run("beir", "--root", root, "--datasets", "toy", "--config", config, "--out",
              tmp_path / "lb", "--no-plots")
    assert "1 of 2 cells did not run" in one_line_error(res)
    assert (tmp_path / "lb" / "leaderboard.md").is_file()  # the table is still written


# -- one-line errors ----------------------------------------------------------------------------

def test_unwritable_targets_are_one_line(bm25, beir_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tvitamin\n")
    one_line_error(run("index", beir_dir, afile / "sub", "--quiet"))
    one_line_error(run("index", beir_dir, afile, "--quiet"))
    one_line_error(run("search", bm25.path, "--queries", queries, "--run", tmp_path), code=2)
    one_line_error(run("search", bm25.path, "--queries", tmp_path, "--run", tmp_path / "r"), code=2)
    one_line_error(run("search", bm25.path, "--queries", queries, "--run", afile / "r.trec"), code=2)
    one_line_error(run("eval", "--index", bm25.path, "--dataset", beir_dir, "--json", tmp_path), code=2)
    one_line_error(run("eval", "--index", bm25.path, "--dataset", beir_dir, "--save-run", tmp_path), code=2)


def test_debug_shows_the_traceback(tmp_path):
    res = CliRunner().invoke(cli.main, ["--debug", "search", str(tmp_path / "nope"), "q"])
    assert isinstance(res.exception, IndexFormatError)
    res = CliRunner().invoke(cli.main, ["search", str(tmp_path / "nope"), "q"],
                             env={"RETRIEVER_DEBUG": "1"})
    assert isinstance(res.exception, IndexFormatError)


def test_extreme_bm25_k1_searches_as_the_oracle(beir_dir, tmp_path):
    """k1 = 1e8 makes most impacts underflow to 0 in float32: the case that used to segfault."""
    r = Retriever.build(beir_dir, tmp_path / "k1", k1=1e8)
    index = r.searcher.index
    for text in ("vitamin D fractures", "coffee sleep caffeine", "inverted index"):
        from indexing.bm25 import query_weights
        from indexing.analysis import Analyzer

        want = top_k(dense_scores(index, query_weights(Analyzer(), text)), 10)
        assert [r.docids.index(h.docid) for h in r.search(text, k=10)] == want


def test_k_rule_on_every_kind(bm25, beir_dir, tmp_path, tiny_mlm, one_torch_thread):
    dense = Retriever.build(beir_dir, tmp_path / "dense", kind="dense", model=str(tiny_mlm),
                            faiss="Flat", device="cpu", doc_max_length=32)
    sparse = Retriever.build(beir_dir, tmp_path / "sparse", kind="sparse", model=str(tiny_mlm),
                             device="cpu", doc_max_length=32)
    hybrid = Retriever.load(compose(bm25.path, dense.path, tmp_path / "h"))
    for r in (bm25, dense, sparse, hybrid):
        for k in (0, -1):
            with pytest.raises(ValueError, match="k must be >= 1"):
                r.search("vitamin", k=k)
        assert len(r.search_batch({"q": "vitamin d"}, k=10**9)["q"]) <= 6


def test_os_errors_become_path_and_reason():
    e = PermissionError(13, "Permission denied", "/ro/out.trec")
    assert cli._os_error(e) == "/ro/out.trec: Permission denied"
    e = IsADirectoryError(21, "Is a directory", "/tmp/.x.tmp", None, "/tmp")
    assert cli._os_error(e) == "/tmp: Is a directory"
    import shutil

    e = shutil.Error([("/tmp/x/a", "/out/a", "[Errno 28] No space left on device: '/out/a'"),
                      ("/tmp/x/b", "/out/b", "[Errno 28] No space left on device: '/out/b'")])
    assert cli._os_error(e) == "/out/a: [Errno 28] No space left on device: '/out/a' (and 1 more files)"


def test_a_docstore_refused_at_open_closes_its_file_once(bm25, tmp_path):
    """A store whose offsets do not describe its file is refused; its descriptor is closed once
    (``__del__`` also runs when ``__init__`` raises, and closing the number again would close
    whatever file another thread opened with it since)."""
    import gc

    from indexing.docstore import OFFSETS, DocStore

    root = tmp_path / "copy"
    shutil.copytree(bm25.path, root)
    offsets = np.load(root / OFFSETS)
    os.remove(root / OFFSETS)
    np.save(root / OFFSETS, offsets + 1)
    with pytest.raises(IndexFormatError, match="do not describe this file") as refused:
        DocStore(root)  # the traceback keeps the half-made store alive until `del refused`
    with open(root / "other.txt", "w") as f:  # gets the lowest free number: the store's, if it closed it
        del refused
        gc.collect()  # the refused store's __del__
        f.write("still open")
        f.flush()
        os.fstat(f.fileno())


@pytest.mark.parametrize("keep", [100, 200])
def test_a_short_array_file_is_an_error_not_checksummed(tmp_path, monkeypatch, keep):
    """On a full tmpfs np.save wrote 4,096 of 4,128 bytes without raising; the manifest would
    have checksummed the short file as the array. The size is now checked after each save."""
    import numpy as np

    from indexing.manifest import IndexWriter

    real = np.save

    def short_save(path, array, allow_pickle=False):
        real(path, array, allow_pickle=allow_pickle)
        with open(path, "r+b") as f:
            f.truncate(keep)  # header cut (100) or data cut (200)

    with IndexWriter(tmp_path / "idx") as w:
        w.save_array("fine.npy", np.arange(10))
        monkeypatch.setattr(np, "save", short_save)
        with pytest.raises(OSError, match=r"could not be written \(\d+ of ([\d,]+|more) bytes; disk full\?\)") as e:
            w.save_array("short.npy", np.arange(1000))
        assert e.value.filename.endswith("short.npy")
        w.abort()


def test_a_write_the_disk_refuses_names_the_index_or_file_being_written(tmp_path, beir_dir):
    """A full disk made `retriever index` and `retriever fuse` say "Error: No space left on device"
    or "Error: 2036 requested and 992 written" (numpy's short write), naming no file. Writes past
    the process's file-size limit fail the same way; the previous index and run stay whole."""
    from click.testing import CliRunner

    from eval.trec import write_run
    from retriever import cli
    from tests.conftest import writes_fail_past

    out = tmp_path / "idx"
    Retriever.build(beir_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with writes_fail_past(300):
        result = CliRunner().invoke(cli.main, ["index", str(beir_dir), str(out), "--overwrite"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = result.output.splitlines()[-1]  # the file the refused write was for, in the build's directory
    assert error.startswith(f"Error: {out}") and ": could not be written (" in error and "disk full?" in error
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith("idx.")] == []  # no build left behind

    run = tmp_path / "run.trec"
    write_run({"q1": {"d1": 1.0}}, run)
    kept = run.read_bytes()
    with writes_fail_past(300):
        with pytest.raises(OSError, match="could not be written") as e:
            write_run({f"q{i}": {f"d{j}": float(j) for j in range(50)} for i in range(50)}, run)
    assert e.value.filename == str(run) and run.read_bytes() == kept
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".run.trec.")] == []


def test_a_full_disk_leaves_no_lock_file_and_no_bare_error(tmp_path):
    """The writer lock wrote its holder's pid outside any handler: on a full disk every writer
    failed with a bare "No space left on device" and left a 0-byte OUT.lock (inside the index
    for `heads`). The pid is only for the message; the lock is taken and released without it."""
    from tests.conftest import writes_fail_past

    out = tmp_path / "idx"
    with writes_fail_past(0):
        lock = WriterLock(out)
    with pytest.raises(IndexBusyError, match="another process"):
        WriterLock(out)
    lock.release()
    assert list(tmp_path.iterdir()) == []
