"""The Python API and the index directory contract."""

import json
import os
import shutil

import numpy as np
import pytest

from indexing.errors import DataError
from indexing.manifest import IndexFormatError
from retriever import Hit, Retriever


def test_build_search_and_batch(beir_dir, tmp_path):
    r = Retriever.build(beir_dir, tmp_path / "idx", kind="bm25")
    hits = r.search("does vitamin D prevent fractures", k=3)
    assert all(isinstance(h, Hit) for h in hits)
    assert hits[0].docid in {"d1", "q1"} and hits[0].score > hits[-1].score
    run = r.search_batch({"a": "coffee caffeine", "b": "inverted index"}, k=2)
    assert list(run["a"])[0] in {"d3", "d4"} and "d5" in run["b"]
    assert r.search("zzz unknown words", k=5) == []
    assert r.doc("d5")["title"] == "Search engines"


def test_copied_index_answers_the_same_from_any_directory(beir_dir, tmp_path, monkeypatch):
    original = Retriever.build(beir_dir, tmp_path / "idx", kind="bm25", fields="multifield")
    queries = {"q1": "vitamin D fractures", "q2": "sleep caffeine", "q3": "documents term"}
    expected = original.search_batch(queries, k=10)
    shutil.copytree(tmp_path / "idx", tmp_path / "elsewhere" / "copy")
    shutil.rmtree(tmp_path / "idx")
    monkeypatch.chdir(tmp_path / "elsewhere")
    copy = Retriever.load("copy")
    assert copy.search_batch(queries, k=10, threads=2) == expected
    assert copy.manifest["bm25"]["fields"] == "multifield"


def test_manifest_records_settings_and_checksums(beir_dir, tmp_path):
    r = Retriever.build(beir_dir, tmp_path / "idx", k1=1.2, b=0.75)
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m["format_version"] == 3 and m["kind"] == "bm25" and m["doc_count"] == 6
    assert m["bm25"] == {"k1": 1.2, "b": 0.75, "fields": "flat"}
    assert m["analyzer"]["stemmer"] == "porter"
    assert set(m["files"]) >= {"docids.txt", "term_ptr.npy", "postings.npy", "impact_table.npy"}
    assert m["postings"]["format"] == "packed-v1"
    assert len(m["corpus"]["fingerprint"]) == 64
    assert (tmp_path / "idx" / "docids.txt").read_text().split() == ["d1", "d2", "d3", "d4", "d5", "q1"]
    assert len(r) == 6


def test_corrupt_or_foreign_indexes_are_refused(beir_dir, tmp_path):
    Retriever.build(beir_dir, tmp_path / "idx")
    impacts = tmp_path / "idx" / "postings.npy"
    data = bytearray(impacts.read_bytes())
    data[-1] ^= 0xFF
    impacts.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum"):
        Retriever.load(tmp_path / "idx")
    impacts.write_bytes(bytes(data[:-4]))
    with pytest.raises(IndexFormatError, match="bytes"):
        Retriever.load(tmp_path / "idx")
    manifest = tmp_path / "idx" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        Retriever.load(tmp_path / "idx")
    with pytest.raises(IndexFormatError, match="no such index"):
        Retriever.load(tmp_path / "missing")
    with pytest.raises(IndexFormatError, match="not a retriever index"):
        Retriever.load(beir_dir)


def test_existing_index_is_kept_unless_overwrite(beir_dir, tmp_path):
    out = tmp_path / "idx"
    Retriever.build(beir_dir, out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        Retriever.build(beir_dir, out)
    assert (out / "manifest.json").read_bytes() == before
    Retriever.build(beir_dir, out, overwrite=True, fields="multifield")
    assert Retriever.load(out).manifest["bm25"]["fields"] == "multifield"
    with pytest.raises(FileExistsError, match="not an index"):
        Retriever.build(beir_dir, beir_dir, overwrite=True)


def test_a_failed_build_leaves_the_old_index_and_no_debris(beir_dir, tmp_path):
    out = tmp_path / "idx"
    Retriever.build(beir_dir, out)
    before = Retriever.load(out).search("vitamin", k=3)
    with open(beir_dir / "corpus.jsonl", "a") as f:
        f.write('{"_id": "bad", "text": \n')
    with pytest.raises(DataError, match=r"corpus.jsonl:7: malformed JSON"):
        Retriever.build(beir_dir, out, overwrite=True)
    assert Retriever.load(out).search("vitamin", k=3) == before
    assert sorted(os.listdir(tmp_path)) == ["idx", "toy"]


def test_empty_corpus_and_bad_options(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no documents"):
        Retriever.build(tmp_path / "empty.jsonl", tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
    (tmp_path / "one.jsonl").write_text('{"id": "x", "contents": "hello world"}\n')
    with pytest.raises(TypeError, match="unknown option"):
        Retriever.build(tmp_path / "one.jsonl", tmp_path / "idx", pooling="mean")
    with pytest.raises(ValueError, match="unknown index kind"):
        Retriever.build(tmp_path / "one.jsonl", tmp_path / "idx", kind="colbert")
    r = Retriever.build(tmp_path / "one.jsonl", tmp_path / "idx")
    assert r.search("hello") [0].docid == "x"


def test_lone_surrogates_in_queries_are_a_clear_error(tmp_path):
    """JSON can carry "\\ud800" into a Python str; no tokenizer can encode it, nor a run file
    hold it: every entry point refuses it as ValueError naming the query."""
    (tmp_path / "one.jsonl").write_text('{"id": "x", "contents": "hello world"}\n')
    r = Retriever.build(tmp_path / "one.jsonl", tmp_path / "idx")
    with pytest.raises(ValueError, match="not valid Unicode text.*character 6"):
        r.search("hello \ud800")
    with pytest.raises(ValueError, match="query 'q1' is not valid Unicode"):
        r.search_batch({"q1": "\udc80"})
    with pytest.raises(ValueError, match="a query id is not valid Unicode"):
        r.search_batch({"\ud800": "hello"})
    assert r.search("hello \u00e9\U0001f600")[0].docid == "x"  # (astral characters are fine)


def test_batch_threads_weights_and_unknown_documents_are_clear_errors(tmp_path):
    (tmp_path / "one.jsonl").write_text('{"id": "x", "contents": "hello world"}\n')
    r = Retriever.build(tmp_path / "one.jsonl", tmp_path / "idx")
    for threads in ("2", 2.0, True, None, 0):  # one rule for every kind (dense took "2" as a TypeError)
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            r.search_batch({"q": "hello"}, threads=threads)
    assert r.search_batch({"q": "hello"}, threads=np.int64(2)) == {"q": {"x": pytest.approx(r.search("hello")[0].score)}}
    for weight in ("1.5", None, True, [1.0]):
        with pytest.raises(ValueError, match="the weight of term 'hello' must be a number"):
            r.search_weights({"hello": weight})
    with pytest.raises(KeyError, match="no document 'nope' in"):
        r.doc("nope")
    assert r.doc("x")["text"] == "hello world"
