"""The ``sparse`` index kind end to end, against brute-force dot products of the same vectors."""

import json
import math
import shutil

import numpy as np
import pytest

from indexing.errors import DataError
from indexing.impacts import build_impact_index, quantize_weights
from indexing.inverted import InvertedIndex
from indexing.manifest import IndexFormatError, IndexWriter
from retriever import Retriever
from retriever.encoders.models import fingerprint
from retriever.encoders.splade import SpladeEncoder, SpladeSettings
from tests.conftest import DOCS, TINY_VOCAB

QUERY_TEXTS = {
    "a": "does vitamin d prevent fractures",
    "b": "why does coffee keep you awake",
    "c": "how does an inverted index work",
    "d": "",
}
pytestmark = pytest.mark.usefixtures("one_torch_thread")
DOC_TEXTS = [f"{d['title']} {d['text']}" for d in DOCS]  # how the index reads a titled doc
DOC_IDS = [d["_id"] for d in DOCS]


def encoder(model_dir, **settings) -> SpladeEncoder:
    return SpladeEncoder(str(model_dir), settings=SpladeSettings(**settings), device="cpu")


def doc_matrix(vectors, vocab_size: int, quantize: str, scale: float) -> np.ndarray:
    """Dense (docs, vocab) float64 matrix of the quantised document vectors."""
    m = np.zeros((len(vectors), vocab_size))
    for row, (ids, weights) in enumerate(vectors):
        m[row, ids] = quantize_weights(weights, quantize, scale)
    return m


def oracle(matrix: np.ndarray, q_ids, q_weights, divide_by: float, k: int):
    """Brute-force top k: (docid, score) by score descending, then index order; matches only."""
    q = np.zeros(matrix.shape[1])
    q[np.asarray(q_ids, dtype=np.int64)] = np.asarray(q_weights, dtype=np.float64)
    scores = matrix @ q / divide_by
    order = sorted((i for i in range(len(scores)) if scores[i] > 0), key=lambda i: (-scores[i], i))
    return [(DOC_IDS[i], scores[i]) for i in order[:k]]


def assert_same_ranking(hits, expected):
    assert [h.docid for h in hits] == [d for d, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("quantize, scale", [("float", 100.0), ("uint8", 50.0), ("uint8", 800.0),
                                             ("uint16", 100.0), ("uint16", 7.0)])
def test_search_equals_brute_force_over_quantised_vectors(tiny_mlm, beir_dir, tmp_path, quantize, scale):
    r = Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), quantize=quantize,
                        scale=scale, doc_max_length=32, query_max_length=16, batch_size=4, device="cpu")
    enc = encoder(tiny_mlm, doc_max_length=32, query_max_length=16)
    matrix = doc_matrix(enc.encode_documents(DOC_TEXTS), enc.vocab_size, quantize, scale)
    divide_by = 1.0 if quantize == "float" else scale
    run = r.search_batch(QUERY_TEXTS, k=4, threads=2)
    assert list(run) == list(QUERY_TEXTS)
    for qid, text in QUERY_TEXTS.items():
        [(q_ids, q_weights)] = enc.encode_queries([text])
        expected = oracle(matrix, q_ids, q_weights, divide_by, k=4)
        assert len(expected) == 4
        hits = r.search(text, k=4)
        assert_same_ranking(hits, expected)
        # batch encoding pads queries together: equal up to float noise
        assert list(run[qid]) == [h.docid for h in hits]
        np.testing.assert_allclose(list(run[qid].values()), [h.score for h in hits], atol=1e-5)
    stats = r.manifest["impacts"]
    assert stats["quantize"] == quantize and stats["postings"] == int(np.count_nonzero(matrix))
    assert stats["scale"] == (None if quantize == "float" else scale)
    top = {"float": math.inf, "uint8": 255, "uint16": 65535}[quantize]
    clipped = sum(int((np.rint(w.astype(np.float64) * scale) > top).sum())
                  for _, w in enc.encode_documents(DOC_TEXTS))
    assert stats["clipped_weights"] == clipped
    if (quantize, scale) == ("uint8", 800.0):
        assert clipped > 0


def test_doc_top_k_and_search_weights_on_a_model_index(tiny_mlm, beir_dir, tmp_path):
    r = Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), doc_top_k=10,
                        quantize="float", device="cpu")
    enc = encoder(tiny_mlm, doc_top_k=10)
    vectors = enc.encode_documents(DOC_TEXTS)
    assert all(len(ids) == 10 for ids, _ in vectors)
    matrix = doc_matrix(vectors, enc.vocab_size, "float", 1.0)
    assert r.manifest["impacts"]["postings"] == 10 * len(DOCS)
    terms = {"vitamin": 1.5, "coffee": 0.5, "##s": 2.0, "not-a-token": 9.0}
    ids = [enc.vocab.index(t) for t in ("vitamin", "coffee", "##s")]
    assert_same_ranking(r.search_weights(terms, k=6), oracle(matrix, ids, [1.5, 0.5, 2.0], 1.0, k=6))


def test_manifest_holds_encoder_settings_and_fingerprint(tiny_mlm, beir_dir, tmp_path):
    r = Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), doc_max_length=48,
                        query_max_length=20, doc_top_k=30, query_top_k=5, scale=80.0, device="cpu")
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m == {**r.manifest}
    assert m["kind"] == "sparse" and m["doc_count"] == len(DOCS) and m["vocabulary"] == "model"
    assert m["encoder"] == encoder(tiny_mlm, doc_max_length=48, query_max_length=20, doc_top_k=30,
                                   query_top_k=5).config()
    assert m["encoder"]["fingerprint"] == fingerprint(str(tiny_mlm))
    assert (m["encoder"]["doc_max_length"], m["encoder"]["doc_top_k"]) == (48, 30)
    assert m["query"] == {"mode": "model", "max_length": 20}
    assert m["impacts"]["quantize"] == "uint16" and m["impacts"]["scale"] == 80.0
    assert m["impacts"]["mean_doc_terms"] == 30
    assert (tmp_path / "idx" / "docids.txt").read_text().split() == DOC_IDS


def test_a_query_model_that_does_not_match_is_refused(tiny_mlm, tiny_mlm_other, beir_dir, tmp_path):
    model_a = tmp_path / "model-a"
    shutil.copytree(tiny_mlm, model_a)
    built = Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(model_a), device="cpu")
    expected = built.search_batch(QUERY_TEXTS, k=6)
    with pytest.raises(IndexFormatError, match="fingerprint"):
        Retriever.load(tmp_path / "idx", model=str(tiny_mlm_other))

    moved = tmp_path / "elsewhere" / "model-a"
    shutil.move(str(model_a), moved)
    with pytest.raises(IndexFormatError, match=r"model=") as err:
        Retriever.load(tmp_path / "idx")
    assert str(model_a) in str(err.value)
    reloaded = Retriever.load(tmp_path / "idx", model=str(moved))
    assert reloaded.search_batch(QUERY_TEXTS, k=6) == expected
    with pytest.raises(IndexFormatError, match="fingerprint"):
        Retriever.load(tmp_path / "idx", model=str(tiny_mlm_other))


def test_idf_query_mode_equals_a_hand_computation(tiny_mlm, beir_dir, tmp_path):
    r = Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), query_mode="idf",
                        doc_top_k=60, quantize="uint16", scale=100.0, device="cpu")
    assert r.manifest["query"]["mode"] == "idf"
    enc = encoder(tiny_mlm, doc_top_k=60)
    matrix = doc_matrix(enc.encode_documents(DOC_TEXTS), enc.vocab_size, "uint16", 100.0)
    df = (matrix > 0).sum(axis=0)
    n = len(DOCS)
    assert df.min() == 0 and df.max() == n and len(set(df.tolist())) == n + 1  # every df occurs
    tok = enc.tokenizer
    for text in ["vitamin d fractures", "coffee and sleep", "sleep sleep sleep ;", "the"]:
        tokens = sorted(set(tok.convert_tokens_to_ids(tok.tokenize(text))))
        idf = [math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) if df[t] else 0.0 for t in tokens]
        expected = oracle(matrix, tokens, idf, 100.0, k=n)
        assert expected  # the toy query matches something
        assert_same_ranking(r.search(text, k=n), expected)


def test_inference_free_search_batch_of_no_queries(tiny_mlm, beir_dir, tmp_path):
    r = Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), query_mode="idf",
                        device="cpu")
    assert r.search_batch({}, k=3) == {}


def test_learned_query_weights_from_json(tiny_mlm, beir_dir, tmp_path):
    table = {"vitamin": 2.0, "fracture": 1.0, "##s": 0.25, "coffee": 0.5, "[CLS]": 5.0}
    weights_file = tmp_path / "w.json"
    weights_file.write_text(json.dumps(table))
    r = Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), query_mode="learned",
                        query_weights=str(weights_file), quantize="float", device="cpu")
    enc = encoder(tiny_mlm)
    matrix = doc_matrix(enc.encode_documents(DOC_TEXTS), enc.vocab_size, "float", 1.0)
    # "tea" has no learned weight: dropped; [CLS] is special: never a query term; repeats count once
    ids = [enc.vocab.index(t) for t in ("vitamin", "fracture", "##s", "coffee")]
    expected = oracle(matrix, ids, [2.0, 1.0, 0.25, 0.5], 1.0, k=6)
    assert_same_ranking(r.search("vitamin fractures coffee tea vitamin", k=6), expected)
    assert r.search("tea", k=6) == []


def test_learned_weights_with_an_unknown_token_are_refused(tiny_mlm, beir_dir, tmp_path):
    weights_file = tmp_path / "w.json"
    weights_file.write_text(json.dumps({"vitamin": 1.0, "notawordpiece": 2.0}))
    with pytest.raises(ValueError, match="notawordpiece"):
        Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), query_mode="learned",
                        query_weights=str(weights_file), device="cpu")
    assert not (tmp_path / "idx").exists()
    wrong_shape = tmp_path / "w.npy"
    np.save(wrong_shape, np.ones(7, dtype=np.float32))
    with pytest.raises(ValueError, match=f"expected {len(TINY_VOCAB)} weights"):
        Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), query_mode="learned",
                        query_weights=str(wrong_shape), device="cpu")
    with pytest.raises(ValueError, match="query_weights"):
        Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), query_mode="learned")
    with pytest.raises(ValueError, match="query_mode"):
        Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), query_mode="bm25")


@pytest.mark.parametrize("quantize, scale", [("int8", 100.0), ("uint8", 0.0), ("uint16", -1.0)])
def test_bad_quantisation_is_refused(tiny_mlm, beir_dir, tmp_path, quantize, scale):
    with pytest.raises(ValueError, match="quantize|scale"):
        Retriever.build(beir_dir, tmp_path / "idx", kind="sparse", model=str(tiny_mlm), quantize=quantize,
                        scale=scale)
    assert not (tmp_path / "idx").exists()


VECTOR_DOCS = [
    {"id": "v1", "contents": "vitamin d", "vector": {"vitamin": 1.25, "d": 0.5, "bone": 0.004}},
    {"id": "v2", "contents": "coffee", "vector": {"coffee": 2.0, "caffeine": 1.5, "d": 0.125}},
    {"id": "v3", "contents": "both", "vector": {"vitamin": 0.75, "coffee": 0.75, "sleep": 3}},
    {"id": "v4", "vector": {}},
]


def write_vectors(path, docs=VECTOR_DOCS, lines=None):
    lines = lines if lines is not None else [json.dumps(d) for d in docs]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("quantize, scale", [("float", 1.0), ("uint16", 100.0), ("uint8", 20.0)])
def test_precomputed_vectors_search_by_weights(tmp_path, quantize, scale):
    corpus = write_vectors(tmp_path / "vectors.jsonl")
    r = Retriever.build(corpus, tmp_path / "idx", kind="sparse", vectors=True, quantize=quantize, scale=scale)
    assert r.manifest["vocabulary"] == "collection" and r.manifest["encoder"] is None
    assert r.docids == ["v1", "v2", "v3", "v4"]
    assert r.doc("v1") == {"title": "", "text": "vitamin d"}
    query = {"vitamin": 1.0, "d": 2.0, "coffee": 0.5, "bone": 1.0, "unknown": 4.0}

    def impact(w):
        return float(w) if quantize == "float" else min(round(w * scale), 255 if quantize == "uint8" else 65535) / scale

    scores = {d["id"]: sum(query.get(t, 0.0) * impact(w) for t, w in d["vector"].items()) for d in VECTOR_DOCS}
    expected = sorted(((d, s) for d, s in scores.items() if s > 0), key=lambda x: -x[1])
    hits = r.search_weights(query, k=10)
    assert [h.docid for h in hits] == [d for d, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)
    with pytest.raises(ValueError, match="search_weights"):
        r.search("vitamin")
    with pytest.raises(ValueError, match="search_weights"):
        r.search_batch({"q": "vitamin"})
    with pytest.raises(ValueError, match="no query model|takes no query model"):
        Retriever.load(tmp_path / "idx", model="whatever")


def test_a_quantised_build_says_how_many_weights_it_clipped(tmp_path, caplog):
    """uint8 at scale 20 holds weights up to 12.75: "sleep": 3 fits, a weight of 13 or 400 does not
    (both would be stored as 255 and rank as equals), and the build says so, not only the manifest."""
    docs = [*VECTOR_DOCS[:3], {"id": "v5", "vector": {"sleep": 13.0, "d": 400.0, "coffee": 12.75}}]
    corpus = write_vectors(tmp_path / "vectors.jsonl", docs)
    with caplog.at_level("WARNING", logger="retriever"):
        r = Retriever.build(corpus, tmp_path / "idx", kind="sparse", vectors=True, quantize="uint8", scale=20.0)
    assert r.manifest["impacts"]["clipped_weights"] == 2
    assert "2 of 11 stored weights were above 12.75 (uint8 holds 255 / scale 20)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="retriever"):
        Retriever.build(corpus, tmp_path / "f", kind="sparse", vectors=True, quantize="float")
        Retriever.build(corpus, tmp_path / "u16", kind="sparse", vectors=True, quantize="uint16", scale=100.0)
    assert "stored weights were above" not in caplog.text


@pytest.mark.parametrize("bad, message", [
    ('{"id": "x1", "vector": {"a": 1.0}', "malformed JSON"),
    ('{"id": "x1", "contents": "no vector"}', "vector"),
    ('{"id": "x1", "vector": [1, 2]}', "vector"),
    ('{"id": "x1", "vector": {"a": "1.0"}}', "must be a finite number"),
    ('{"id": "x1", "vector": {"a": true}}', "must be a finite number"),
    ('{"id": "x1", "vector": {"a": 1e999}}', "must be a finite number"),
    ('{"id": "x1", "vector": {"a": -0.5}}', "negative"),
])
def test_malformed_vector_lines_name_file_and_line(tmp_path, bad, message):
    corpus = write_vectors(tmp_path / "vectors.jsonl", lines=[json.dumps(VECTOR_DOCS[0]), bad])
    with pytest.raises(DataError, match=message) as err:
        Retriever.build(corpus, tmp_path / "idx", kind="sparse", vectors=True)
    assert str(err.value).startswith(f"{corpus}:2: ") and err.value.line == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.jsonl"]  # no index, no temp dir


def test_precomputed_vectors_with_a_model_take_text_queries(tiny_mlm, tmp_path):
    docs = [{"id": "a", "vector": {"vitamin": 1.0, "##s": 0.5, "sleep": 0.25}},
            {"id": "b", "vector": {"coffee": 2.0, "not-in-the-model": 1.0}},
            {"id": "c", "vector": {"vitamin": 0.3, "coffee": 0.2, "the": 1.0}}]
    corpus = write_vectors(tmp_path / "vectors.jsonl", docs)
    r = Retriever.build(corpus, tmp_path / "idx", kind="sparse", vectors=True, model=str(tiny_mlm),
                        quantize="float", query_max_length=16, device="cpu")
    assert r.manifest["vocabulary"] == "collection" and r.manifest["query"]["mode"] == "model"
    enc = encoder(tiny_mlm, query_max_length=16)
    [(ids, weights)] = enc.encode_queries(["vitamin coffee"])
    query = {enc.vocab[i]: float(w) for i, w in zip(ids, weights)}  # model ids -> collection terms
    scores = {d["id"]: sum(query.get(t, 0.0) * w for t, w in d["vector"].items()) for d in docs}
    expected = sorted(scores.items(), key=lambda x: -x[1])
    hits = r.search("vitamin coffee", k=3)
    assert [h.docid for h in hits] == [d for d, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)


def test_vectors_need_a_model_for_inference_free_queries(tiny_mlm, tmp_path):
    corpus = write_vectors(tmp_path / "vectors.jsonl")
    with pytest.raises(ValueError, match="needs --model"):
        Retriever.build(corpus, tmp_path / "idx", kind="sparse", vectors=True, query_mode="idf")
    with pytest.raises(ValueError, match="--model"):
        Retriever.build(corpus, tmp_path / "idx", kind="sparse")
    assert not (tmp_path / "idx").exists()


# -- indexing.impacts -------------------------------------------------------------------------
def test_quantize_weights_by_hand():
    w = np.array([0.004, 0.006, 1.234, 700.0, 0.0], dtype=np.float32)
    assert quantize_weights(w, "uint8", 100.0).tolist() == [0, 1, 123, 255, 0]
    assert quantize_weights(w, "uint8", 100.0).dtype == np.uint8
    assert quantize_weights(w, "uint16", 100.0).tolist() == [0, 1, 123, 65535, 0]
    assert quantize_weights(w, "uint16", 100.0).dtype == np.uint16
    f = quantize_weights(w.astype(np.float64), "float", 100.0)
    assert f.dtype == np.float32 and f.tolist() == w.tolist()


def random_vectors(num_docs=40, vocab=25, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_docs):
        ids = np.sort(rng.choice(vocab, size=rng.integers(0, 9), replace=False)).astype(np.int32)
        weights = rng.choice([0.0, 0.001, 0.3, 1.7, 4.0], size=len(ids)) * rng.uniform(0.5, 1.5, len(ids))
        out.append((ids, weights.astype(np.float32)))
    return out


@pytest.mark.parametrize("quantize", ["float", "uint8", "uint16"])
def test_streaming_chunk_size_does_not_change_the_index(tmp_path, quantize):
    vectors = random_vectors()
    terms = [f"t{i}" for i in range(25)]
    built = {}
    for chunk in (3, 10**7):
        with IndexWriter(tmp_path / f"idx{chunk}") as writer:
            index, stats = build_impact_index(iter(vectors), writer, lambda: terms, quantize, 100.0,
                                              chunk_postings=chunk)
            built[chunk] = ([np.array(a) for a in (index.offsets, index.docs, index.impacts)], stats)
    (small, small_stats), (big, big_stats) = built[3], built[10**7]
    for a, b in zip(small, big):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert small_stats == big_stats
    # and both equal the in-memory construction from (term, doc, impact) triples
    t = np.concatenate([ids for ids, _ in vectors])
    d = np.concatenate([np.full(len(ids), i) for i, (ids, _) in enumerate(vectors)])
    v = np.concatenate([quantize_weights(w, quantize, 100.0) for _, w in vectors])
    ref = InvertedIndex.from_postings(terms, t, d, v, len(vectors))
    offsets, docs, impacts = small
    np.testing.assert_array_equal(offsets, ref.offsets)
    np.testing.assert_array_equal(docs, ref.docs)
    np.testing.assert_array_equal(impacts, ref.impacts)
    assert impacts.dtype == {"float": np.float32, "uint8": np.uint8, "uint16": np.uint16}[quantize]
    assert (impacts > 0).all() and small_stats["postings"] == int((v > 0).sum()) < len(v)
    for s, e in zip(offsets[:-1], offsets[1:]):
        assert (np.diff(docs[s:e]) > 0).all()
