"""Datasets by name, offline: a prepared ir_datasets cache stands in for the network (the zip
ir_datasets would download, at the path it caches it), and a dead proxy makes any real download
fail at once."""

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from eval.datasets import cache_path, is_materialised, known, pull, resolve
from indexing.errors import DataError
from retriever import Retriever, cli

ROOT = Path(__file__).resolve().parent.parent
TINYFACTS = ROOT / "scripts" / "data" / "tinyfacts"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """RETRIEVER_HOME and IR_DATASETS_HOME in tmp; downloads go to a closed port."""
    monkeypatch.setenv("RETRIEVER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds"))
    monkeypatch.setenv("IR_DATASETS_DL_TRIES", "1")
    monkeypatch.setenv("IR_DATASETS_DL_TIMEOUT", "2")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return tmp_path


def stand_in(tmp_path: Path, name: str = "scifact", source: Path = TINYFACTS) -> None:
    """Put a BEIR zip where ir_datasets caches the download of beir/NAME."""
    target = tmp_path / "irds" / "beir" / name / "source.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as z:
        for p in sorted(source.rglob("*")):
            if p.is_file() and p.suffix in (".jsonl", ".tsv"):
                z.write(p, f"{name}/{p.relative_to(source).as_posix()}")


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def test_known_names_cover_beir_and_msmarco():
    names = known()
    assert len([n for n in names if n.startswith("beir/cqadupstack/")]) == 12
    beir = [n for n in names if n.startswith("beir/") and "cqadupstack" not in n]
    assert len(beir) == 18  # with CQADupStack as its forums: the 19 BEIR sets incl. MS MARCO
    assert "msmarco-passage/dev/small" in names


def test_a_name_materialises_once_into_beir_layout(offline):
    stand_in(offline)
    killed = cache_path("beir/scifact").with_name(cache_path("beir/scifact").name + ".tmp-dead1234")
    (killed / "qrels").mkdir(parents=True)  # what a killed pull leaves (it was kept forever)
    mask = os.umask(0o027)
    try:
        path = pull("beir/scifact")
    finally:
        os.umask(mask)
    assert not killed.exists() and list(path.parent.glob("*.tmp-*")) == []
    assert path.stat().st_mode & 0o777 == 0o750  # the umask's, not mkdtemp's 0700 (a shared RETRIEVER_HOME)
    assert path == cache_path("beir/scifact") and is_materialised("beir/scifact")
    assert sorted(p.name for p in (path / "qrels").iterdir()) == ["test.tsv", "train.tsv"]
    source = json.loads((path / "source.json").read_text())
    assert source["documents"] == 60 and source["qrels"]["test"] == 22
    before = (path / "corpus.jsonl").stat().st_mtime_ns
    assert pull("beir/scifact") == path and (path / "corpus.jsonl").stat().st_mtime_ns == before
    assert resolve("beir/scifact") == path and resolve(str(TINYFACTS)) == TINYFACTS


def test_eval_by_name_equals_eval_by_directory(offline):
    stand_in(offline)
    idx = offline / "idx"
    assert run("index", "beir/scifact", idx, "--quiet").exit_code == 0
    by_name = run("eval", "--index", idx, "--dataset", "beir/scifact", "--split", "test",
                  "--json", offline / "a.json")
    by_dir = run("eval", "--index", idx, "--dataset", cache_path("beir/scifact"), "--split", "test",
                 "--json", offline / "b.json")
    assert by_name.exit_code == 0 and by_dir.exit_code == 0, by_name.output
    a, b = (json.loads((offline / f).read_text())["metrics"] for f in ("a.json", "b.json"))
    assert a == b and a["ndcg@10"] > 0
    # and the same as the bundled files the stand-in was made of
    ref = Retriever.build(TINYFACTS, offline / "ref").search_batch({"x": "vitamin D"}, k=5)
    assert Retriever.load(idx).search_batch({"x": "vitamin D"}, k=5) == ref


def test_irds_prefix_and_the_list(offline):
    stand_in(offline)
    path = pull("irds:beir/scifact/test")
    assert [p.name for p in (path / "qrels").iterdir()] == ["test.tsv"]
    with pytest.raises(DataError, match="has no qrels to evaluate with; name one of its splits"):
        pull("irds:beir/scifact")  # (the corpus id: an AttributeError on qrels_iter, before)
    assert not cache_path("irds:beir/scifact").exists()
    res = run("datasets", "pull", "beir/scifact")
    assert res.exit_code == 0 and str(cache_path("beir/scifact")) in res.output
    listed = run("datasets", "list").output
    line = next(row for row in listed.splitlines() if row.startswith("beir/scifact "))
    assert "MB" in line and "beir/nfcorpus" in listed


def test_offline_error_names_the_dataset_and_the_path(offline):
    with pytest.raises(DataError) as err:
        pull("beir/nfcorpus")
    message = str(err.value)
    assert "beir/nfcorpus" in message and str(cache_path("beir/nfcorpus")) in message
    assert not cache_path("beir/nfcorpus").exists()  # nothing half-written is left
    (offline / "r.trec").write_text("q Q0 d 1 1.0 t\n")
    res = run("eval", "--run", offline / "r.trec", "--dataset", "beir/nfcorpus")
    assert res.exit_code == 2 and "beir/nfcorpus" in res.output and "Traceback" not in res.output


def test_files_put_by_hand_are_used(offline):
    with pytest.raises(DataError, match="not publicly downloadable"):
        pull("beir/robust04")
    shutil.copytree(TINYFACTS, cache_path("beir/robust04"))
    assert resolve("beir/robust04") == cache_path("beir/robust04")
    assert run("index", "beir/robust04", offline / "i", "--quiet").exit_code == 0


def test_the_beir_grid_takes_names(offline):
    stand_in(offline)
    config = offline / "runs.yaml"
    config.write_text("bm25: {kind: bm25}\n")
    res = run("beir", "--datasets", "beir/scifact", "--config", config, "--out", offline / "lb", "--no-plots")
    assert res.exit_code == 0, res.output
    cell = json.loads((offline / "lb" / "leaderboard.json").read_text())["cells"][0]
    assert cell["status"] == "ok" and cell["dataset"] == "beir/scifact"
    idx = offline / "idx"
    run("index", "beir/scifact", idx, "--quiet")
    run("eval", "--index", idx, "--dataset", "beir/scifact", "--json", offline / "m.json",
        "--metrics", "ndcg@10,recall@100")
    by_eval = json.loads((offline / "m.json").read_text())["metrics"]
    assert {m: cell["metrics"][m] for m in by_eval} == by_eval
    assert "retriever index beir/scifact" in (offline / "lb" / "leaderboard.html").read_text()


def test_names_that_would_name_the_cache_itself_are_refused(offline):
    for name in ("irds:.", "irds:..", "irds:"):
        with pytest.raises(DataError, match="not a dataset name"):
            cache_path(name)
    (offline / "runs.yaml").write_text("bm25: {kind: bm25}\n")
    res = run("beir", "--datasets", ",", "--config", offline / "runs.yaml", "--out", offline / "out")
    assert res.exit_code == 2 and "no dataset named in ','" in res.output  # (0 cells, exit 0, before)


def test_a_second_pull_waits_for_the_first_and_a_file_in_the_way_is_named(offline):
    """Two pulls of one name at once: the second failed with an index writer's message; it now
    waits and finds the dataset done. A file where the dataset goes got an "Offline?" hint."""
    import threading
    import time

    from indexing.manifest import WriterLock

    stand_in(offline)
    target = cache_path("beir/scifact")
    target.parent.mkdir(parents=True)
    first = WriterLock(target, what="dataset")  # a pull in progress
    done = []
    second = threading.Thread(target=lambda: done.append(pull("beir/scifact")))
    second.start()
    time.sleep(0.3)
    assert second.is_alive() and not done  # waiting, not failed
    first.release()
    second.join(60)
    assert done == [target] and is_materialised("beir/scifact")
    shutil.rmtree(target)
    target.write_text("not a dataset")
    with pytest.raises(DataError, match="is in the way of dataset beir/scifact: it is a file") as err:
        pull("beir/scifact")
    assert "Offline" not in str(err.value)


def test_a_second_grid_into_the_same_out_fails_at_once(tmp_path):
    """Two `retriever beir` into one OUT both ran every cell, each failed one on the other's index
    lock, and OUT's leaderboard showed a finished cell as failed. The second now fails at once."""
    from indexing.manifest import WriterLock

    (tmp_path / "runs.yaml").write_text("bm25: {kind: bm25}\n")
    first = WriterLock((tmp_path / "lb").absolute(), what="leaderboard directory")  # a grid running
    try:
        res = run("beir", "--root", TINYFACTS.parent, "--datasets", "tinyfacts", "--config", tmp_path / "runs.yaml",
                  "--out", tmp_path / "lb", "--no-plots")
    finally:
        first.release()
    assert res.exit_code == 1 and "writing this leaderboard directory" in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "lb" / "cells").exists()
    res = run("beir", "--root", TINYFACTS.parent, "--datasets", "tinyfacts", "--config", tmp_path / "runs.yaml",
              "--out", tmp_path / "lb", "--no-plots")
    assert res.exit_code == 0, res.output
