"""The dense index kind: exact search, resumable encoding, settings in the manifest, refusals."""

import numpy as np
import pytest
from click.testing import CliRunner

from indexing.manifest import IndexFormatError
from retriever import Retriever, cli
from retriever.encoders.dense import DenseEncoder, DenseSettings
from indexing.corpus import doc_text
from indexing.corpus import iter_corpus

QUERIES = {"a": "vitamin d fractures", "b": "coffee keeps people awake", "c": "inverted index"}


def exact(model, beir_dir, settings, k):
    enc = DenseEncoder(str(model), settings=settings, device="cpu")
    docs = list(iter_corpus(beir_dir))
    d = enc.encode_documents([doc_text(x) for x in docs])
    q = enc.encode_queries(list(QUERIES.values()))
    scores = q @ d.T
    out = {}
    for qid, row in zip(QUERIES, scores):
        order = np.lexsort((np.arange(len(row)), -row))[:k]
        out[qid] = [(docs[i].docid, float(row[i])) for i in order]
    return out


def test_flat_search_equals_exact_inner_product(tiny_mlm, beir_dir, tmp_path, one_torch_thread):
    r = Retriever.build(beir_dir, tmp_path / "idx", kind="dense", model=str(tiny_mlm), pooling="mean",
                        normalize=False, query_prefix="query: ", doc_prefix="passage: ", faiss="Flat",
                        device="cpu", doc_max_length=64, query_max_length=16)
    enc = r.manifest["encoder"]
    assert (enc["pooling"], enc["normalize"], enc["query_prefix"], enc["doc_prefix"]) == ("mean", False, "query: ", "passage: ")
    assert r.manifest["faiss"]["factory"] == "Flat" and r.manifest["doc_count"] == 6
    want = exact(tiny_mlm, beir_dir, DenseSettings("mean", False, "query: ", "passage: ", 64, 16), k=4)
    run = r.search_batch(QUERIES, k=4)
    for qid, hits in want.items():
        gaps = np.diff([s for _, s in hits])
        assert (np.abs(gaps) > 1e-4).all()  # no near-ties, so the order is meaningful
        assert list(run[qid]) == [d for d, _ in hits]
        np.testing.assert_allclose(list(run[qid].values()), [s for _, s in hits], atol=1e-5)
    assert [h.docid for h in r.search(QUERIES["a"], k=4)] == [d for d, _ in want["a"]]
    assert not (tmp_path / "idx.encoding").exists()


def test_interrupted_encoding_resumes_and_gives_the_same_index(tiny_mlm, beir_dir, tmp_path, monkeypatch,
                                                               one_torch_thread, caplog):
    opts = dict(kind="dense", model=str(tiny_mlm), faiss="Flat", device="cpu", encode_block=2, doc_max_length=64)
    reference = Retriever.build(beir_dir, tmp_path / "ref", **opts).search_batch(QUERIES, k=6)

    calls = []
    original = DenseEncoder.encode_documents

    def flaky(self, texts, progress=False):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run while block 1 is being encoded
        return original(self, texts, progress)

    monkeypatch.setattr(DenseEncoder, "encode_documents", flaky)
    with pytest.raises(KeyboardInterrupt):
        Retriever.build(beir_dir, tmp_path / "idx", **opts)
    assert not (tmp_path / "idx").exists()
    assert f"encoding 1 block of documents; it is kept in {tmp_path / 'idx.encoding'}" in caplog.text
    assert sorted(p.name for p in (tmp_path / "idx.encoding").glob("*.npy")) == ["block-000000.npy"]

    calls.clear()
    monkeypatch.setattr(DenseEncoder, "encode_documents", lambda self, texts, progress=False:
                        (calls.append(len(texts)), original(self, texts, progress))[1])
    resumed = Retriever.build(beir_dir, tmp_path / "idx", **opts)
    assert calls == [2, 2]  # blocks 1 and 2 only: block 0 came from the cache
    assert resumed.search_batch(QUERIES, k=6) == reference
    assert not (tmp_path / "idx.encoding").exists()


def test_changed_settings_do_not_reuse_the_cache(tiny_mlm, beir_dir, tmp_path, monkeypatch, one_torch_thread):
    opts = dict(kind="dense", model=str(tiny_mlm), faiss="Flat", device="cpu", encode_block=2, doc_max_length=64)
    original = DenseEncoder.encode_documents
    state = {"n": 0}

    def fail_second(self, texts, progress=False):
        state["n"] += 1
        if state["n"] == 2:
            raise RuntimeError("stop")
        return original(self, texts, progress)

    monkeypatch.setattr(DenseEncoder, "encode_documents", fail_second)
    with pytest.raises(RuntimeError):
        Retriever.build(beir_dir, tmp_path / "idx", pooling="cls", **opts)
    monkeypatch.setattr(DenseEncoder, "encode_documents", original)
    mean = Retriever.build(beir_dir, tmp_path / "idx", pooling="mean", **opts)
    fresh = Retriever.build(beir_dir, tmp_path / "fresh", pooling="mean", **opts)
    assert mean.search_batch(QUERIES, k=6) == fresh.search_batch(QUERIES, k=6)


def test_a_different_query_model_is_refused(tiny_mlm, tiny_mlm_other, beir_dir, tmp_path, one_torch_thread):
    Retriever.build(beir_dir, tmp_path / "idx", kind="dense", model=str(tiny_mlm), faiss="Flat", device="cpu",
                    doc_max_length=64)
    with pytest.raises(IndexFormatError, match="fingerprint"):
        Retriever.load(tmp_path / "idx", model=str(tiny_mlm_other))
    assert Retriever.load(tmp_path / "idx", model=str(tiny_mlm)).search("coffee", k=1)


def test_cli_builds_a_dense_index(tiny_mlm, beir_dir, tmp_path, one_torch_thread):
    res = CliRunner().invoke(cli.main, ["index", str(beir_dir), str(tmp_path / "idx"), "--kind", "dense",
                                        "--model", str(tiny_mlm), "--faiss", "HNSW8", "--no-normalize",
                                        "--pooling", "mean", "--doc-max-length", "64", "--device", "cpu",
                                        "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    r = Retriever.load(tmp_path / "idx")
    assert r.manifest["encoder"]["normalize"] is False and r.manifest["faiss"]["factory"] == "HNSW8"
    assert len(r.search("coffee sleep", k=3)) == 3
    res = CliRunner().invoke(cli.main, ["info", str(tmp_path / "idx")])
    assert "faiss" in res.output and "HNSW8" in res.output
