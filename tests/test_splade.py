"""SPLADE encoding: the fast path against the textbook formula, on a tiny random masked LM."""

import math

import numpy as np
import pytest
import torch

from retriever.encoders.models import fingerprint
from retriever.encoders.splade import SpladeEncoder, SpladeSettings, TokenWeightQueryEncoder, idf_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LONG = " ".join(["vitamin d supplements reduce hip fractures in older adults"] * 8)  # ~100 tokens
TEXTS = [
    "coffee keeps people awake",
    "",
    LONG,
    "sleep",
    "an inverted index maps each term to the documents that contain it.",
    "vitamin d vitamin d vitamin d",
    "zzzz qqqq",  # unknown words: [UNK] tokens
]


def make_encoder(model_dir, batch_size=32, **settings) -> SpladeEncoder:
    return SpladeEncoder(str(model_dir), settings=SpladeSettings(**settings), batch_size=batch_size,
                         device="cpu")


def dense(vectors, vocab_size: int) -> torch.Tensor:
    out = torch.zeros(len(vectors), vocab_size)
    for row, (ids, weights) in enumerate(vectors):
        out[row, torch.from_numpy(ids.astype(np.int64))] = torch.from_numpy(weights)
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_fast_path_equals_the_textbook_formula_in_input_order(tiny_mlm, batch_size):
    enc = make_encoder(tiny_mlm, batch_size=batch_size, doc_max_length=24, query_max_length=12)
    assert len(enc.tokenizer(LONG)["input_ids"]) > 24  # really truncated
    expected = enc.encode_plain(TEXTS, 24)
    assert expected.shape == (len(TEXTS), enc.vocab_size)
    got = dense(enc.encode_documents(TEXTS), enc.vocab_size)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    queries = dense(enc.encode_queries(TEXTS), enc.vocab_size)
    torch.testing.assert_close(queries, enc.encode_plain(TEXTS, 12), atol=1e-5, rtol=0)
    # the rows differ from each other, so a permutation could not pass the comparison above
    assert len({tuple(row.round(decimals=4).tolist()) for row in expected}) == len(TEXTS)


def test_padding_does_not_change_a_vector(tiny_mlm):
    enc = make_encoder(tiny_mlm, batch_size=8, doc_max_length=64)
    alone = enc.encode_documents(["coffee keeps people awake"])[0]
    padded = enc.encode_documents(["coffee keeps people awake", LONG])[0]
    np.testing.assert_array_equal(alone[0], padded[0])
    np.testing.assert_allclose(alone[1], padded[1], atol=1e-6, rtol=0)
    # and the textbook formula agrees whether the text is padded or not
    plain = enc.encode_plain(["coffee keeps people awake", LONG], 64)[0]
    torch.testing.assert_close(dense([alone], enc.vocab_size)[0], plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("text", ["", "vitamin"])
def test_special_tokens_count_like_every_attended_token(tiny_mlm, text):
    enc = make_encoder(tiny_mlm)
    ids = enc.tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == enc.tokenizer.cls_token_id and ids[0, -1] == enc.tokenizer.sep_token_id
    with torch.inference_mode():
        logits = enc.model.model(input_ids=ids).logits[0]  # (tokens, vocab), no padding at all
    all_tokens = torch.log1p(torch.relu(logits)).amax(dim=0)
    got = dense(enc.encode_documents([text]), enc.vocab_size)[0]
    torch.testing.assert_close(got, all_tokens, atol=1e-5, rtol=0)
    if ids.shape[1] > 2:  # dropping [CLS]/[SEP] would give a different vector
        inner = torch.log1p(torch.relu(logits[1:-1])).amax(dim=0)
        assert (got - inner).abs().max() > 1e-3


def test_vectors_are_sorted_unique_non_negative_and_typed(tiny_mlm):
    enc = make_encoder(tiny_mlm, batch_size=2)
    vectors = enc.encode_documents(TEXTS)
    assert len(vectors) == len(TEXTS)
    for ids, weights in vectors:
        assert ids.dtype == np.int32 and weights.dtype == np.float32 and ids.shape == weights.shape
        assert len(ids) > 0
        assert (np.diff(ids) > 0).all()  # ascending, hence unique
        assert ids.min() >= 0 and ids.max() < enc.vocab_size
        assert (weights > 0).all()  # zeros are not stored, negatives never occur
    assert len(enc.vocab) == enc.vocab_size == len(enc.tokenizer)
    assert enc.vocab[enc.tokenizer.convert_tokens_to_ids("vitamin")] == "vitamin"


@pytest.mark.parametrize("k", [1, 5, 40])
def test_top_k_keeps_the_k_heaviest_terms(tiny_mlm, k):
    full_enc = make_encoder(tiny_mlm)
    pruned_enc = make_encoder(tiny_mlm, doc_top_k=k, query_top_k=k + 1)
    full = full_enc.encode_documents(TEXTS)
    for (ids, weights), (fids, fweights) in zip(pruned_enc.encode_documents(TEXTS), full):
        assert len(ids) == min(k, len(fids))  # random weights: no ties
        heaviest = np.sort(fids[np.argsort(-fweights, kind="stable")[:k]])
        np.testing.assert_array_equal(ids, heaviest)
        np.testing.assert_allclose(weights, fweights[np.searchsorted(fids, ids)], atol=1e-6)
    for ids, _ in pruned_enc.encode_queries(TEXTS):
        assert 0 < len(ids) <= k + 1


def test_empty_inputs(tiny_mlm):
    enc = make_encoder(tiny_mlm)
    assert enc.encode_documents([]) == []
    assert enc.encode_queries([]) == []
    [(ids, weights)] = enc.encode_documents([""])
    assert len(ids) == len(weights) > 0  # [CLS] and [SEP] still speak
    [(qids, _)] = enc.encode_queries([""])
    np.testing.assert_array_equal(qids, ids)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="doc_max_length"):
        SpladeSettings(doc_max_length=1)
    with pytest.raises(ValueError, match="query_max_length"):
        SpladeSettings(query_max_length=0)
    with pytest.raises(ValueError, match="query_top_k"):
        SpladeSettings(query_top_k=-1)


def test_config_records_everything_that_changes_the_vectors(tiny_mlm):
    enc = make_encoder(tiny_mlm, doc_max_length=40, query_max_length=9, doc_top_k=7, query_top_k=3)
    cfg = enc.config()
    assert cfg["fingerprint"] == fingerprint(str(tiny_mlm)) and len(cfg["fingerprint"]) == 64
    assert cfg["model"] == str(tiny_mlm.absolute())
    assert {k: cfg[k] for k in ("doc_max_length", "query_max_length", "doc_top_k", "query_top_k")} == {
        "doc_max_length": 40, "query_max_length": 9, "doc_top_k": 7, "query_top_k": 3}
    assert cfg["pooling"] == "max" and cfg["activation"] == "log1p_relu"


def test_idf_weights_by_hand():
    df = np.array([0, 1, 3, 5, 2])
    got = idf_weights(df, 5)
    expected = [0.0, math.log(1 + 4.5 / 1.5), math.log(1 + 2.5 / 3.5), math.log(1 + 0.5 / 5.5),
                math.log(1 + 3.5 / 2.5)]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[1] > got[4] > got[2] > got[3] > 0  # rarer terms weigh more


def test_token_weight_queries_weight_each_distinct_token_once(tiny_mlm):
    enc = make_encoder(tiny_mlm)
    tok = enc.tokenizer
    table = np.arange(len(tok), dtype=np.float32) + 1.0  # every token, specials included, non-zero
    zero = tok.convert_tokens_to_ids(".")
    table[zero] = 0.0
    qenc = TokenWeightQueryEncoder(tok, table, max_length=64)
    [(ids, weights)] = qenc.encode_queries(["vitamin d fractures, vitamin D fractures. zzzz"])
    expected = sorted(tok.convert_tokens_to_ids(["vitamin", "d", "fracture", "##s", ","]))
    assert ids.dtype == np.int32 and ids.tolist() == expected  # no [CLS]/[SEP]/[UNK], no "."
    np.testing.assert_array_equal(weights, table[expected])
    assert qenc.encode_queries([""])[0][0].size == 0
    [(short, _)] = TokenWeightQueryEncoder(tok, table, max_length=3).encode_queries(["coffee sleep tea"])
    assert short.tolist() == [tok.convert_tokens_to_ids("coffee")]  # [CLS] coffee [SEP]


def test_token_weight_queries_of_no_texts(tiny_mlm):
    tok = make_encoder(tiny_mlm).tokenizer
    assert TokenWeightQueryEncoder(tok, np.ones(len(tok), np.float32)).encode_queries([]) == []
