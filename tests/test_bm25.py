"""BM25 scores equal Lucene's formula, including its one-byte document lengths."""

import math

import numpy as np
import pytest

from indexing.corpus import Doc
from indexing.analysis import Analyzer
from indexing.bm25 import (LENGTH_TABLE, BM25Params, build_bm25_index, byte_to_length,
                           length_to_byte, quantize_lengths, query_weights)
from oracles import dense_scores


def test_small_lengths_are_exact_and_large_ones_round_down():
    for n in range(32):
        assert byte_to_length(length_to_byte(n)) == n
    # 100 - 24 = 76 = 0b1001100: 4 significant bits 1001, shift 3 -> 0b1001 << 3 = 72; 24 + 72 = 96
    assert byte_to_length(length_to_byte(100)) == 96
    assert length_to_byte(2**31 - 1) == 255
    assert np.all(np.diff(LENGTH_TABLE) > 0)
    for n in [0, 5, 24, 40, 100, 161, 1000, 123456]:
        code = length_to_byte(n)
        assert quantize_lengths(np.array([n]))[0] == code
        assert byte_to_length(code) <= n < byte_to_length(code + 1) if code < 255 else True


def _bm25(tf, dl, avgdl, df, n, k1=0.9, b=0.4):
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


DOCS = [
    Doc("a", "Cats", "cats chase mice. mice run"),   # flat: cat cat chase mice mice run (6)
    Doc("b", "", "dogs chase cats"),                  # flat: dog chase cat (3)
    Doc("c", "Birds", "birds sing"),                  # flat: bird bird sing (3)
]


def test_flat_scores_match_the_formula(tmp_path):
    index, docids, info = build_bm25_index(DOCS, Analyzer(), BM25Params(), tmp_path)
    assert docids == ["a", "b", "c"]
    avgdl = (6 + 3 + 3) / 3
    assert info["field_stats"]["contents"]["avgdl"] == pytest.approx(avgdl)
    scores = dense_scores(index, query_weights(Analyzer(), "cats chasing mice"))
    expected = [
        _bm25(2, 6, avgdl, 2, 3) + _bm25(1, 6, avgdl, 2, 3) + _bm25(2, 6, avgdl, 1, 3),
        _bm25(1, 3, avgdl, 2, 3) + _bm25(1, 3, avgdl, 2, 3),
        0.0,
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_repeated_query_terms_count_twice(tmp_path):
    index, _, _ = build_bm25_index(DOCS, Analyzer(), BM25Params(), tmp_path)
    once = dense_scores(index, query_weights(Analyzer(), "birds"))
    twice = dense_scores(index, query_weights(Analyzer(), "birds birds"))
    np.testing.assert_allclose(twice, 2 * once, rtol=1e-6)


def test_multifield_sums_fields_with_their_own_statistics(tmp_path):
    index, _, info = build_bm25_index(DOCS, Analyzer(), BM25Params(fields="multifield"), tmp_path)
    # title field: doc b has no title, so N = 2 and avgdl = (1 + 1) / 2 for that field
    assert info["field_stats"]["title"]["doc_count"] == 2
    text_avgdl = (5 + 3 + 2) / 3
    scores = dense_scores(index, {"cat": 1.0})
    expected_a = _bm25(1, 1, 1.0, 1, 2) + _bm25(1, 5, text_avgdl, 2, 3)
    expected_b = _bm25(1, 3, text_avgdl, 2, 3)
    np.testing.assert_allclose(scores, [expected_a, expected_b, 0.0], rtol=1e-6)


def test_long_documents_use_lucene_rounded_lengths(tmp_path):
    long_doc = Doc("long", "", "word " * 99 + "needle")  # 100 tokens, stored as 96
    short = Doc("s", "", "other text")
    index, _, _ = build_bm25_index([long_doc, short], Analyzer(), BM25Params(), tmp_path)
    avgdl = (100 + 2) / 2
    got = dense_scores(index, {"needl": 1.0})[0]
    assert got == pytest.approx(_bm25(1, 96, avgdl, 1, 2), rel=1e-6)
    assert got != pytest.approx(_bm25(1, 100, avgdl, 1, 2), rel=1e-6)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="fields"):
        BM25Params(fields="title")
    with pytest.raises(ValueError, match="k1"):
        BM25Params(k1=-1)


@pytest.mark.parametrize("fields", ["flat", "multifield"])
def test_streamed_chunks_give_the_same_index(tmp_path, fields):
    """Spilling postings every few postings must not change a single impact."""
    docs = [Doc(f"d{i}", f"title {i % 7} cats", " ".join(["cats", "dogs", f"w{i % 13}", "mice"][: 1 + i % 4]))
            for i in range(60)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, _, _ = build_bm25_index(docs, Analyzer(), BM25Params(fields=fields), tmp_path / "a")
    many, _, _ = build_bm25_index(docs, Analyzer(), BM25Params(fields=fields), tmp_path / "b",
                                  chunk_postings=7)
    assert one.terms == many.terms
    np.testing.assert_array_equal(one.offsets, many.offsets)
    np.testing.assert_array_equal(one.docs, many.docs)
    np.testing.assert_array_equal(one.impacts, many.impacts)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["postings_docs.npy", "postings_impacts.npy"]


def test_queries_are_analysed_with_the_version_the_index_was_built_with(tmp_path):
    """New indexes record analysis version 3; an index recording none (built before it) analyses
    its queries with version 1, as its documents were: "ΟΔΟΣ" is "οδοσ" in one, "οδος" in the other."""
    import json

    from indexing.manifest import IndexFormatError, read_manifest, write_manifest
    from retriever import Retriever

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": i, "text": t}) for i, t in
                                [("greek", "ΟΔΟΣ"), ("other", "a road elsewhere")]) + "\n", encoding="utf-8")
    out = tmp_path / "idx"
    r = Retriever.build(corpus, out, kind="bm25")
    assert read_manifest(out)["analyzer"]["version"] == 3
    assert [h.docid for h in r.search("οδοσ", 5)] == ["greek"]
    manifest = read_manifest(out)
    del manifest["analyzer"]["version"]  # as an index built before versions records it
    write_manifest(out, manifest)
    assert Retriever.load(out).search("ΟΔΟΣ", 5) == []  # "οδος" under version 1: not the indexed term
    manifest["analyzer"]["version"] = 7
    write_manifest(out, manifest)
    with pytest.raises(IndexFormatError, match="manifest.json: analyzer: analysis version must be one of"):
        Retriever.load(out)


def test_an_index_analysed_under_other_unicode_tables_is_noted_at_load(tmp_path, caplog):
    """The regex module's Unicode version decides some characters' tokens (a pictograph is a token
    under one version, nothing under the next): an index records its tables, and a load under
    tables that differ warns, once; the same tables under another regex release say nothing."""
    import json
    import logging

    from indexing.analysis import unicode_tables
    from indexing.manifest import read_manifest, write_manifest
    from retriever import Retriever
    from retriever.kinds import bm25

    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "text": "text"}) + "\n", encoding="utf-8")
    out = tmp_path / "idx"
    Retriever.build(corpus, out, kind="bm25")
    manifest = read_manifest(out)
    assert manifest["unicode_tables"] == unicode_tables()
    bm25._noted.clear()
    for recorded, warned in (({**unicode_tables(), "regex": "2023.1.1"}, False),
                             ({"regex": "2023.1.1", "unicode": "15.0.0", "sha256": "0" * 64}, True)):
        manifest["unicode_tables"] = recorded
        write_manifest(out, manifest)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="retriever"):
            Retriever.load(out)
            Retriever.load(out)
        assert caplog.text.count("built with other Unicode tables") == (1 if warned else 0), caplog.text
