"""Dense encoder: pooling, masking, prefixes, sentence-transformers settings (tiny random BERT)."""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from retriever.encoders.dense import DenseEncoder, DenseSettings, resolve_settings, sentence_transformers_settings

TEXTS = ["vitamin d and bone fractures", "coffee", "", "sleep " * 200, "the search engine index works"]


def manual(model_dir, texts, pooling, normalize=False, max_length=64, prefix=""):
    """Encode one text at a time (no padding at all) and pool by hand."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    for t in texts:
        batch = tok([prefix + t], truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            h = model(**batch).last_hidden_state[0]
        v = {"cls": h[0], "mean": h.mean(0), "last": h[-1]}[pooling]
        if normalize:
            v = v / v.norm()
        out.append(v.numpy())
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_pooling_equals_unpadded_manual_computation(tiny_mlm, one_torch_thread, pooling, batch_size):
    enc = DenseEncoder(str(tiny_mlm), settings=DenseSettings(pooling=pooling, doc_max_length=64),
                       batch_size=batch_size, device="cpu")
    got = enc.encode_documents(TEXTS)
    assert got.shape == (len(TEXTS), enc.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, manual(tiny_mlm, TEXTS, pooling), atol=2e-5)


def test_normalisation_prefixes_and_query_settings(tiny_mlm, one_torch_thread):
    s = DenseSettings(pooling="mean", normalize=True, query_prefix="query: ", doc_prefix="passage: ",
                      doc_max_length=32, query_max_length=8)
    enc = DenseEncoder(str(tiny_mlm), settings=s, device="cpu")
    docs = enc.encode_documents(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(docs, manual(tiny_mlm, TEXTS, "mean", True, 32, "passage: "), atol=2e-5)
    queries = enc.encode_queries(TEXTS)
    np.testing.assert_allclose(queries, manual(tiny_mlm, TEXTS, "mean", True, 8, "query: "), atol=2e-5)
    assert not np.allclose(docs, queries)
    assert enc.encode_queries([]).shape == (0, enc.dim)
    cfg = enc.config()
    assert cfg["query_prefix"] == "query: " and cfg["pooling"] == "mean" and len(cfg["fingerprint"]) == 64


def _as_sentence_transformers(src, dst, pooling_key="pooling_mode_cls_token", normalize=True, prompts=None):
    shutil.copytree(src, dst)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (dst / "modules.json").write_text(json.dumps(modules))
    (dst / "1_Pooling").mkdir()
    flags = {k: False for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens")}
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags, pooling_key: True}))
    (dst / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    if prompts:
        (dst / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return dst


def test_sentence_transformers_directories_configure_themselves(tiny_mlm, tmp_path, one_torch_thread):
    st = _as_sentence_transformers(tiny_mlm, tmp_path / "st", prompts={"query": "q: ", "document": "d: "})
    found = sentence_transformers_settings(str(st))
    assert found == {"normalize": True, "pooling": "cls", "doc_max_length": 48, "query_max_length": 48,
                     "query_prefix": "q: ", "doc_prefix": "d: "}
    enc = DenseEncoder(str(st), device="cpu")
    assert enc.settings == DenseSettings("cls", True, "q: ", "d: ", 48, 48)
    np.testing.assert_allclose(enc.encode_documents(TEXTS), manual(st, TEXTS, "cls", True, 48, "d: "), atol=2e-5)
    # explicit settings win over the directory's
    assert resolve_settings(str(st), pooling="mean", normalize=False).pooling == "mean"
    assert sentence_transformers_settings(str(tiny_mlm)) == {}
    assert resolve_settings(str(tiny_mlm)) == DenseSettings()


def test_unsupported_sentence_transformers_pooling_is_refused(tiny_mlm, tmp_path):
    st = _as_sentence_transformers(tiny_mlm, tmp_path / "st", pooling_key="pooling_mode_max_tokens")
    with pytest.raises(ValueError, match="unsupported pooling"):
        sentence_transformers_settings(str(st))
    with pytest.raises(ValueError, match="pooling must be"):
        DenseSettings(pooling="max")


def _with_dense_module(st, weight, bias=None, activation="torch.nn.modules.linear.Identity"):
    """Insert a sentence-transformers Dense module after pooling (before Normalize)."""
    from safetensors.torch import save_file

    modules = json.loads((st / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (st / "modules.json").write_text(json.dumps(modules))
    (st / "2_Dense").mkdir()
    (st / "2_Dense" / "config.json").write_text(json.dumps({
        "in_features": weight.shape[1], "out_features": weight.shape[0], "bias": bias is not None,
        "activation_function": activation}))
    state = {"linear.weight": torch.from_numpy(weight)}
    if bias is not None:
        state["linear.bias"] = torch.from_numpy(bias)
    save_file(state, str(st / "2_Dense" / "model.safetensors"))
    return st


def test_a_dense_module_projects_pooled_vectors_before_normalisation(tiny_mlm, tmp_path, one_torch_thread):
    from retriever.encoders.models import fingerprint

    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((16, 32)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    plain = _as_sentence_transformers(tiny_mlm, tmp_path / "plain")
    for name, activation, act in (("identity", "torch.nn.modules.linear.Identity", lambda x: x),
                                  ("tanh", "torch.nn.modules.activation.Tanh", np.tanh)):
        st = _with_dense_module(_as_sentence_transformers(tiny_mlm, tmp_path / activation), w, b, activation)
        enc = DenseEncoder(str(st), device="cpu")
        assert enc.dim == 16
        pooled = manual(st, TEXTS, "cls", False, 48, "")
        want = act(pooled @ w.T + b)
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(enc.encode_documents(TEXTS), want, atol=2e-5)
        assert fingerprint(str(st)) != fingerprint(str(plain))  # the module's weights are part of the model
        # saved and read back: same layout (Dense before Normalize), same vectors
        enc.model.save(tmp_path / f"saved-{name}")
    saved = tmp_path / "saved-tanh"
    types = [m["type"].rsplit(".", 1)[-1] for m in json.loads((saved / "modules.json").read_text())]
    assert types == ["Transformer", "Pooling", "Dense", "Normalize"]
    np.testing.assert_allclose(DenseEncoder(str(saved), device="cpu").encode_documents(TEXTS),
                               DenseEncoder(str(tmp_path / "torch.nn.modules.activation.Tanh"),
                                            device="cpu").encode_documents(TEXTS), atol=1e-6)
    assert fingerprint(str(plain)) == fingerprint(str(tiny_mlm))  # no Dense module: the fingerprint it always had


def test_unknown_sentence_transformers_modules_and_bad_dense_modules_are_refused(tiny_mlm, tmp_path):
    st = _as_sentence_transformers(tiny_mlm, tmp_path / "st")
    modules = json.loads((st / "modules.json").read_text())
    (st / "modules.json").write_text(json.dumps(modules + [{"idx": 3, "name": "3", "path": "3_X",
                                                            "type": "sentence_transformers.models.LayerNorm"}]))
    with pytest.raises(ValueError, match="LayerNorm.*not supported"):
        DenseEncoder(str(st), device="cpu")
    w = np.zeros((4, 32), dtype=np.float32)
    relu = _with_dense_module(_as_sentence_transformers(tiny_mlm, tmp_path / "relu"), w,
                              activation="torch.nn.modules.activation.ReLU")
    with pytest.raises(ValueError, match="2_Dense/config.json: activation"):
        DenseEncoder(str(relu), device="cpu")
    wrong = _with_dense_module(_as_sentence_transformers(tiny_mlm, tmp_path / "wrong"), w)
    cfg = json.loads((wrong / "2_Dense" / "config.json").read_text())
    (wrong / "2_Dense" / "config.json").write_text(json.dumps({**cfg, "in_features": 8}))
    with pytest.raises(ValueError, match="weights do not match"):
        DenseEncoder(str(wrong), device="cpu")


def test_int8_cpu_path_stays_close_to_float(tiny_mlm, one_torch_thread):
    s = DenseSettings(pooling="mean", normalize=True, doc_max_length=64)
    exact = DenseEncoder(str(tiny_mlm), settings=s, device="cpu").encode_documents(TEXTS)
    int8 = DenseEncoder(str(tiny_mlm), settings=s, device="cpu", quantize_int8=True)
    approx = int8.encode_documents(TEXTS)
    assert int8.config()["int8"] is True
    assert (approx * exact).sum(axis=1).min() > 0.9  # cosine to the float vectors
    assert not np.array_equal(approx, exact)
