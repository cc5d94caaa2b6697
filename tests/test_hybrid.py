"""Hybrid indexes: built and composed, fused search, explain, tuning never reads test."""

import json

import pytest
from click.testing import CliRunner

from eval.beir import carve_dev
from retriever import Retriever, cli
from eval.fusion import fuse_one
from retriever.kinds.hybrid import FusionSettings, compose

QUERIES = {"q1": "does vitamin D prevent fractures", "q2": "why does coffee keep you awake",
           "q3": "how does an inverted index work"}


@pytest.fixture
def parts(tiny_mlm, beir_dir, tmp_path, one_torch_thread):
    sparse = Retriever.build(beir_dir, tmp_path / "bm25")
    dense = Retriever.build(beir_dir, tmp_path / "dense", kind="dense", model=str(tiny_mlm), faiss="Flat",
                            device="cpu", doc_max_length=64)
    return sparse, dense


@pytest.mark.parametrize("method, weights", [("rrf", [1.0, 1.0]), ("minmax", [0.3, 0.7]), ("zscore", [0.5, 0.5])])
def test_composed_hybrid_equals_fusing_the_parts(parts, tmp_path, method, weights):
    sparse, dense = parts
    h = Retriever.load(compose(sparse.path, dense.path, tmp_path / "h", method=method, weights=weights, depth=5))
    assert h.kind == "hybrid" and len(h) == 6
    for qid, text in QUERIES.items():
        want = fuse_one([{x.docid: x.score for x in sparse.search(text, 5)},
                         {x.docid: x.score for x in dense.search(text, 5)}], method, weights, depth=5, k=4)
        assert {x.docid: x.score for x in h.search(text, k=4)} == pytest.approx(want)
    assert h.search_batch(QUERIES, k=4)["q2"] == pytest.approx(
        {x.docid: x.score for x in h.search(QUERIES["q2"], k=4)})


def test_explain_shows_each_component(parts, tmp_path):
    sparse, dense = parts
    h = Retriever.load(compose(sparse.path, dense.path, tmp_path / "h", method="rrf"))
    hits = h.search("vitamin D fractures", k=6, explain=True)
    top = hits[0]
    ranks = {n: p["rank"] for n, p in top.parts.items()}
    expected = sum(1 / (60 + r) for r in ranks.values() if r)
    assert top.score == pytest.approx(expected)
    assert set(top.parts) == {"sparse", "dense"}
    missing = [x for x in hits if x.parts["sparse"]["rank"] is None]
    assert all(x.parts["sparse"]["score"] is None for x in missing)  # dense-only documents
    with pytest.raises(ValueError, match="hybrid"):
        sparse.search("x", explain=True)


def test_build_from_corpus_and_cli(tiny_mlm, beir_dir, tmp_path, one_torch_thread):
    res = CliRunner().invoke(cli.main, ["index", str(beir_dir), str(tmp_path / "h"), "--kind", "hybrid",
                                        "--dense-model", str(tiny_mlm), "--method", "minmax",
                                        "--weights", "0.4,0.6", "--device", "cpu", "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    h = Retriever.load(tmp_path / "h")
    assert h.manifest["fusion"] == {"method": "minmax", "weights": [0.4, 0.6], "depth": 1000, "rrf_k": 60}
    assert [c["kind"] for c in h.manifest["components"]] == ["bm25", "dense"]
    assert (tmp_path / "h" / "sparse" / "manifest.json").is_file()
    assert h.search("coffee", k=3) and h.doc("d3")["title"] == "Coffee"
    res = CliRunner().invoke(cli.main, ["search", str(tmp_path / "h"), "coffee", "--explain", "-k", "2"])
    assert res.exit_code == 0 and "sparse: #" in res.output


def test_tune_fusion_stores_the_best_and_refuses_test(parts, beir_dir, tmp_path):
    sparse, dense = parts
    compose(sparse.path, dense.path, tmp_path / "h")
    # a dev split of the toy data
    (beir_dir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    res = CliRunner().invoke(cli.main, ["tune-fusion", str(tmp_path / "h"), "--dataset", str(beir_dir),
                                        "--split", "test"])
    assert res.exit_code == 2 and "test split" in res.output
    res = CliRunner().invoke(cli.main, ["tune-fusion", str(tmp_path / "h"), "--dataset", str(beir_dir),
                                        "--split", "dev"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "h" / "manifest.json").read_text())
    assert m["fusion_tuning"]["split"] == "dev" and m["fusion_tuning"]["queries"] == 2
    assert FusionSettings(**m["fusion"])  # a valid setting
    assert Retriever.load(tmp_path / "h").search("coffee", k=2)


def test_tuning_reads_only_the_dev_queries(parts, tmp_path, monkeypatch):
    """tune() sees only the queries it is given: spy on the component searches."""
    from retriever.kinds.hybrid import tune

    sparse, dense = parts
    h = Retriever.load(compose(sparse.path, dense.path, tmp_path / "h"))
    seen = []
    for _, r in h.searcher.components:
        original = r.search_batch
        monkeypatch.setattr(r, "search_batch", lambda q, k=1000, threads=1, _o=original: (seen.append(set(q)), _o(q, k, threads))[1])
    results = tune(h.searcher, {"q2": {"d3": 1}}, {"q2": QUERIES["q2"]})
    assert seen == [{"q2"}, {"q2"}] and results[0][1] >= results[-1][1]


def test_carve_dev_is_deterministic_and_disjoint():
    qrels = {f"q{i}": {"d": 1} for i in range(200)}
    rest, dev = carve_dev(qrels, 0.2, seed=0)
    assert set(rest).isdisjoint(dev) and set(rest) | set(dev) == set(qrels)
    assert 20 < len(dev) < 60
    assert carve_dev(qrels, 0.2, seed=0) == (rest, dev)
    assert carve_dev(qrels, 0.2, seed=1)[1] != dev


def test_composing_different_corpora_is_refused(parts, beir_dir, tmp_path):
    sparse, dense = parts
    other = Retriever.build(beir_dir / "corpus.jsonl", tmp_path / "other", fields="multifield")
    (tmp_path / "small.jsonl").write_text('{"id": "z", "contents": "x"}\n')
    small = Retriever.build(tmp_path / "small.jsonl", tmp_path / "small")
    with pytest.raises(ValueError, match="different documents"):
        compose(small.path, dense.path, tmp_path / "h")
    assert compose(other.path, dense.path, tmp_path / "h2")  # same documents: fine


def test_component_kinds_are_checked(parts, tmp_path):
    sparse, dense = parts
    with pytest.raises(ValueError, match="dense part of a hybrid must be dense"):
        compose(sparse.path, sparse.path, tmp_path / "h")
    with pytest.raises(ValueError, match="sparse part of a hybrid must be bm25 or sparse"):
        compose(dense.path, dense.path, tmp_path / "h")
    assert not (tmp_path / "h").exists()


def test_composed_hybrid_is_self_contained(parts, tmp_path):
    """Components are linked in: the manifest names only paths inside the hybrid, and the
    hybrid keeps working when the indexes it was composed from are deleted."""
    import shutil

    sparse, dense = parts
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(sparse.path, a)
    shutil.copytree(dense.path, b)
    h = compose(a, b, tmp_path / "h")
    before = Retriever.load(h).search_batch(QUERIES, k=5)
    m = json.loads((h / "manifest.json").read_text())
    assert [c["path"] for c in m["components"]] == ["sparse", "dense"]
    shutil.rmtree(a)
    shutil.rmtree(b)
    assert Retriever.load(h).search_batch(QUERIES, k=5) == before


def test_components_are_checked_against_their_checksums(parts, tmp_path):
    """A hybrid loaded with verify (the default) checks its components' files (listed in its own
    manifest): a same-size change in a component is refused at load."""
    sparse, dense = parts
    h = compose(sparse.path, dense.path, tmp_path / "h")
    target = h / "sparse" / "docids.txt"
    if target.is_symlink() or not target.is_file():
        target = next(p for p in (h / "sparse").resolve().iterdir() if p.name == "docids.txt")
    data = bytearray(target.read_bytes())
    data[0] = ord("x") if data[0] != ord("x") else ord("y")  # same size: only the checksum notices
    target.write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum does not match"):
        Retriever.load(h)


def test_fusion_bounds_at_compose_load_and_in_the_cli(parts, beir_dir, tmp_path):
    """Weights whose fused scores overflow (every hit inf, eval silently wrong) and an rrf_k past
    2**31 (OverflowError in every later search) are refused where they enter."""
    from indexing.manifest import IndexFormatError, read_manifest, write_manifest

    sparse, dense = parts
    with pytest.raises(ValueError, match="at most 1e\\+06"):
        compose(sparse.path, dense.path, tmp_path / "inf", method="sum", weights=[1e308, 1e308])
    with pytest.raises(ValueError, match="must be >= 0"):
        compose(sparse.path, dense.path, tmp_path / "inf", method="sum", weights=[1.0, -0.5])
    with pytest.raises(ValueError, match="rrf_k must be an integer from 0 to 2147483648"):
        compose(sparse.path, dense.path, tmp_path / "bigk", rrf_k=10**400)
    assert not (tmp_path / "inf").exists() and not (tmp_path / "bigk").exists()
    for flags in (["--weights", "1e308,1e308", "--method", "sum"], ["--rrf-k", "1" + "0" * 400]):
        res = CliRunner().invoke(cli.main, ["hybrid", str(sparse.path), str(dense.path), str(tmp_path / "c"), *flags])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    res = CliRunner().invoke(cli.main, ["index", str(beir_dir), str(tmp_path / "b"), "--kind", "hybrid",
                                        "--dense-model", "unused", "--rrf-k", str(2**31 + 1)])
    assert res.exit_code == 2 and not (tmp_path / "b").exists(), res.output
    # a manifest that already holds one (re-sealed, as an older version could have written it)
    h = compose(sparse.path, dense.path, tmp_path / "h")
    manifest = read_manifest(h)
    manifest["fusion"]["rrf_k"] = 10**400
    write_manifest(h, manifest)
    with pytest.raises(IndexFormatError, match="fusion settings: rrf_k must be"):
        Retriever.load(h)


def test_tune_fusion_stores_nothing_without_tuning_queries_or_any_signal(parts, beir_dir, tmp_path):
    sparse, dense = parts
    h = compose(sparse.path, dense.path, tmp_path / "h")
    before = (h / "manifest.json").read_bytes()
    dev = beir_dir / "qrels" / "dev.tsv"
    # no qrels query in queries.jsonl: "0 tuning queries", and the first grid setting was stored
    dev.write_text("query-id\tcorpus-id\tscore\nzz1\td1\t1\nzz2\td3\t1\n")
    res = CliRunner().invoke(cli.main, ["tune-fusion", str(h), "--dataset", str(beir_dir), "--split", "dev"])
    assert res.exit_code == 1 and "no tuning queries" in res.output and "Traceback" not in res.output, res.output
    assert "note: 2/2 qrels queries not in the queries" in res.stderr
    assert (h / "manifest.json").read_bytes() == before
    # judged documents outside the corpus: every setting scores 0, nothing to choose from
    dev.write_text("query-id\tcorpus-id\tscore\nq1\tzz1\t1\nq2\tzz3\t1\n")
    res = CliRunner().invoke(cli.main, ["tune-fusion", str(h), "--dataset", str(beir_dir), "--split", "dev"])
    assert res.exit_code == 1 and "every setting scores 0" in res.output, res.output
    assert "2/2 judged docs not in the corpus" in res.stderr
    assert (h / "manifest.json").read_bytes() == before


def test_a_composed_hybrid_reads_its_components_stored_texts(parts, tmp_path):
    sparse, dense = parts
    h = Retriever.load(compose(sparse.path, dense.path, tmp_path / "h"))
    for docid in sparse.docids:
        assert h.doc(docid) == sparse.doc(docid) is not None
    from retriever.kinds.hybrid import _component_store

    class Rows:  # a component that ordered its documents otherwise (reordered at build)
        def get(self, i):
            return {"row": i}

    mapped = _component_store(tmp_path, Rows(), ["b", "c", "a"], ["a", "b", "c"])
    assert [mapped.get(i)["row"] for i in range(3)] == [2, 0, 1] and len(mapped) == 3
