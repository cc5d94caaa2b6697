"""One model class per family trains and encodes: the inference encoders wrap it, training
subclasses it, and the SPLADE forward has one path (pre-hook + max projection) with or without
gradients. Tiny random models only."""

import json
import logging

import numpy as np
import pytest
import torch

from retriever.encoders.dense import DenseEncoder, DenseModel, DenseSettings
from retriever.encoders.splade import (MaxProjection, SpladeEncoder, SpladeModel, SpladeSettings,
                                       TokenWeightQueryEncoder, max_projection)
from training.encoders import DenseTrainEncoder, SpladeTrainEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["vitamin d and bone fractures", "coffee", "", "sleep " * 40, "the search engine index works"]


def test_inference_wraps_and_training_extends_the_same_model(tiny_mlm):
    dense = DenseEncoder(str(tiny_mlm), device="cpu")
    sparse = SpladeEncoder(str(tiny_mlm), device="cpu")
    assert type(dense.model) is DenseModel and type(sparse.model) is SpladeModel
    assert issubclass(DenseTrainEncoder, DenseModel) and issubclass(SpladeTrainEncoder, SpladeModel)
    assert dense.tokenizer is dense.model.tokenizer and dense.dim == dense.model.dim == 32
    assert sparse.settings is sparse.model.settings and sparse.vocab_size == sparse.model.vocab_size
    # the one encoder protocol
    qenc = TokenWeightQueryEncoder(sparse.tokenizer, np.ones(sparse.vocab_size, np.float32))
    for enc in (dense, sparse, qenc):
        assert callable(enc.encode_queries)
    for enc in (dense, sparse):
        assert callable(enc.encode_documents) and isinstance(enc.config(), dict)


@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
def test_dense_encoder_equals_the_model_encoding_each_text_alone(tiny_mlm, pooling):
    s = DenseSettings(pooling=pooling, normalize=True, query_prefix="q: ", doc_prefix="d: ",
                      doc_max_length=24, query_max_length=8)
    enc = DenseEncoder(str(tiny_mlm), settings=s, batch_size=2, device="cpu")
    model = DenseModel(str(tiny_mlm), settings=s).eval()
    for kind, got in (("doc", enc.encode_documents(TEXTS)), ("query", enc.encode_queries(TEXTS))):
        with torch.no_grad():
            alone = np.concatenate([model.encode(model.tokenize([t], kind), kind).numpy() for t in TEXTS])
        np.testing.assert_allclose(got, alone, atol=2e-5)


def test_splade_encoder_equals_the_model_encoding_each_text_alone(tiny_mlm):
    enc = SpladeEncoder(str(tiny_mlm), settings=SpladeSettings(doc_max_length=24, query_max_length=8),
                        batch_size=2, device="cpu")
    model = SpladeModel(str(tiny_mlm), settings=enc.settings).eval()
    for kind, got in (("doc", enc.encode_documents(TEXTS)), ("query", enc.encode_queries(TEXTS))):
        with torch.no_grad():
            alone = torch.cat([model.encode(model.tokenize([t], kind), kind) for t in TEXTS])
        dense = torch.zeros_like(alone)
        for row, (ids, weights) in enumerate(got):
            dense[row, torch.from_numpy(ids.astype(np.int64))] = torch.from_numpy(weights)
        torch.testing.assert_close(dense, alone, atol=1e-5, rtol=0)


def test_max_projection_is_one_computation_with_and_without_gradients():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(4, 6, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6, [0, 0, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    weight, bias = torch.randn(11, 8, generator=g), torch.randn(11, generator=g)
    with torch.no_grad():
        fast = max_projection(hidden, mask, weight, bias)
    assert fast.grad_fn is None
    w = weight.clone().requires_grad_(True)
    tracked = max_projection(hidden, mask, w, bias)
    assert type(tracked.grad_fn).__name__ == "MaxProjectionBackward"
    assert torch.equal(fast, tracked.detach())
    assert torch.equal(fast, MaxProjection.apply(hidden, mask, weight, bias))
    plain = (hidden @ weight.t() + bias).masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    torch.testing.assert_close(fast, plain)
    no_bias = max_projection(hidden, mask, weight)
    torch.testing.assert_close(no_bias, (hidden @ weight.t()).masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1))


def test_splade_model_gradients_equal_the_textbook_formula(tiny_mlm):
    """Training through the model's one forward gives the gradient of the plain formula."""
    model = SpladeModel(str(tiny_mlm)).eval()  # no dropout: both sides compute the same function
    batch = model.tokenize(TEXTS, "doc")
    upstream = torch.rand(len(TEXTS), model.vocab_size, generator=torch.Generator().manual_seed(0))

    def grads(reps):
        model.zero_grad(set_to_none=True)
        (reps * upstream).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ours = model.encode(batch, "doc")
    got = grads(ours)
    logits = model.model(**batch).logits.masked_fill(~batch["attention_mask"].bool().unsqueeze(-1), float("-inf"))
    plain = torch.log1p(torch.relu(logits.amax(dim=1)))
    expected = grads(plain)
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=0)
    assert got.keys() == expected.keys() and len(got) > 10
    for name in got:
        torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=1e-3, msg=name)


def test_kinds_are_checked(tiny_mlm):
    model = DenseModel(str(tiny_mlm), query_prefix="q: ")
    assert model.prefix("query") == "q: " and model.prefix("doc") == ""
    with pytest.raises(ValueError, match="kind must be one of query, doc"):
        model.tokenize(["x"], "passage")
    with pytest.raises(ValueError, match="kind must be one of"):
        SpladeModel(str(tiny_mlm)).max_length("documents")


def test_wrapper_arguments_are_checked_before_loading(tmp_path):
    missing = str(tmp_path / "nowhere")
    for make in (lambda: DenseEncoder(missing, batch_size=0), lambda: SpladeEncoder(missing, batch_size=True)):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            make()


def test_training_lengths_are_caps_and_the_saved_settings_stay(tiny_mlm, tmp_path):
    enc = DenseTrainEncoder(str(tiny_mlm), max_length=16, query_max_length=100, pooling="cls", normalize=True)
    assert (enc.max_length("doc"), enc.max_length("query")) == (16, 64)  # query: the settings' 64
    assert enc.tokenize(["sleep " * 40], "doc")["input_ids"].shape[1] == 16
    enc.save(tmp_path / "out")
    back = DenseModel(str(tmp_path / "out"))
    # sentence-transformers keeps one max_seq_length: the document length, read back for both
    assert back.settings == DenseSettings(pooling="cls", normalize=True, doc_max_length=256, query_max_length=256)
    assert back.config() == {"kind": "dense", "source": str(tmp_path / "out"), **back.settings.__dict__}


def test_splade_lengths_are_clamped_to_the_model_positions(tiny_mlm, caplog):
    with caplog.at_level(logging.WARNING, logger="retriever"):
        model = SpladeTrainEncoder(str(tiny_mlm), max_length=300, query_max_length=20)
    assert (model.max_length("doc"), model.max_length("query")) == (128, 20)  # 128 positions
    assert "doc_max_length 300 exceeds the 128 positions" in caplog.text


def test_inference_free_model_saves_its_query_weights(tiny_mlm, tmp_path):
    with pytest.raises(ValueError, match="inference-free queries need the corpus IDF"):
        SpladeModel(str(tiny_mlm), inference_free=True)
    with pytest.raises(ValueError, match="query weighting must be learned or idf"):
        SpladeModel(str(tiny_mlm), query_weighting="bm25")
    idf = torch.linspace(-1.0, 2.0, 190)  # some negative: saved through relu
    model = SpladeModel(str(tiny_mlm), inference_free=True, idf=idf)
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(np.load(tmp_path / "m" / "query_weights.npy"), torch.relu(idf).numpy())
    assert json.loads((tmp_path / "m" / "retriever_sparse.json").read_text()) == {
        "query_mode": "learned", "query_weights": "query_weights.npy"}
    # a plain model saves no query weights, and its queries run the model
    SpladeModel(str(tiny_mlm)).save(tmp_path / "plain")
    assert not (tmp_path / "plain" / "query_weights.npy").exists()


def test_dense_lengths_are_clamped_to_the_model_positions(tiny_mlm, caplog):
    """Past the model's positions torch fails (a tensor size mismatch): lowered with a warning, as
    SPLADE's are; the settings the model is saved with stay."""
    with caplog.at_level(logging.WARNING, logger="retriever"):
        model = DenseModel(str(tiny_mlm), settings=DenseSettings(doc_max_length=10**20, query_max_length=300))
    assert (model.doc_max_length, model.query_max_length) == (128, 128)  # 128 positions
    assert "doc_max_length 100000000000000000000 exceeds the 128 positions" in caplog.text
    assert model.settings.doc_max_length == 10**20
    enc = DenseEncoder(str(tiny_mlm), settings=DenseSettings(doc_max_length=300), device="cpu")
    assert enc.encode_documents(["sleep " * 400]).shape[0] == 1  # (torch failed on 300 tokens)


@pytest.mark.parametrize("field, value", [("query_prefix", None), ("doc_prefix", 3), ("normalize", "yes"),
                                          ("doc_max_length", 2.5), ("query_max_length", True)])
def test_dense_settings_read_back_are_type_checked(field, value):
    """Settings come back from manifests and model directories: a wrong type is a ValueError naming
    the field (a null prefix failed every query with a TypeError)."""
    with pytest.raises(ValueError, match=field):
        DenseSettings(**{field: value})
