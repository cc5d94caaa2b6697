"""SPLADE training: regularisers by hand, warm-up, MLM-head tying, inference-free queries, and the
trained model indexing as a sparse model."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_training import write_train_set

from retriever import cli
from training.encoders import SpladeTrainEncoder
from training.losses import FLOPSLoss, L1Loss, idf_penalty_weights, quadratic_warmup


def test_flops_and_l1_by_hand():
    reps = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    # column means 2, 0, 1 -> 4 + 0 + 1
    assert FLOPSLoss()(reps).item() == pytest.approx(5.0)
    # per-row L1 3 and 3 -> mean 3
    assert L1Loss()(reps).item() == pytest.approx(3.0)
    weighted = FLOPSLoss(torch.tensor([0.5, 7.0, 2.0]))(reps)
    assert weighted.item() == pytest.approx(0.5 * 4 + 2.0 * 1)


def test_idf_aware_flops_weights_by_hand():
    idf = torch.tensor([1.0, 2.0, 4.0, 0.0])  # the last token never occurs in the corpus
    w = idf_penalty_weights(idf)
    mean = (1 + 2 + 4) / 3
    assert w.tolist() == pytest.approx([mean**2, (mean / 2) ** 2, (mean / 4) ** 2, (mean / 4) ** 2])
    # a common token (low IDF) pays more than a rare one for the same activation
    reps = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert FLOPSLoss(w)(reps).item() == pytest.approx(mean**2 + (mean / 4) ** 2)
    assert idf_penalty_weights(torch.tensor([0.001, 10.0]), max_weight=100.0)[0].item() == 100.0


def test_quadratic_warmup():
    assert [quadratic_warmup(s, 4) for s in range(6)] == pytest.approx([0, 1 / 16, 4 / 16, 9 / 16, 1, 1])
    assert quadratic_warmup(0, 0) == 1.0


def test_training_encoding_matches_the_index_encoder(tiny_mlm, one_torch_thread):
    from retriever.encoders.splade import SpladeEncoder

    texts = ["vitamin d bone fracture", "coffee keeps people awake late"]
    enc = SpladeTrainEncoder(str(tiny_mlm), max_length=32)
    enc.eval()
    with torch.no_grad():
        train_side = enc.encode(enc.tokenize(texts, "doc"), "doc")
    ref = SpladeEncoder(str(tiny_mlm), device="cpu").encode_plain(texts, 32)
    assert torch.allclose(train_side, ref, atol=1e-5)


def test_a_plain_encoder_gets_an_mlm_head_tied_to_its_embeddings(tiny_mlm, tmp_path, one_torch_thread):
    from transformers import AutoModelForMaskedLM, BertModel

    plain = tmp_path / "plain"
    BertModel.from_pretrained(tiny_mlm).save_pretrained(plain)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        if (tiny_mlm / f).is_file():
            shutil.copy(tiny_mlm / f, plain / f)
    enc = SpladeTrainEncoder(str(plain), max_length=32)
    assert enc.built_head
    out, emb = enc.model.get_output_embeddings(), enc.model.get_input_embeddings()
    assert out.weight is emb.weight
    dense = enc.model.cls.predictions.transform.dense
    assert torch.equal(dense.weight, torch.eye(dense.in_features)) and not dense.bias.any()
    # a training step keeps them tied, and the saved model loads as a masked LM with the same head
    loss = enc.encode(enc.tokenize(["vitamin d"], "doc"), "doc").sum()
    loss.backward()
    with torch.no_grad():
        emb.weight -= 0.1 * emb.weight.grad
    assert out.weight is emb.weight
    enc.save(tmp_path / "saved")
    back = AutoModelForMaskedLM.from_pretrained(tmp_path / "saved")
    assert torch.allclose(back.get_output_embeddings().weight, emb.weight.detach())
    # a checkpoint with its own head is left alone
    assert not SpladeTrainEncoder(str(tiny_mlm), max_length=32).built_head


def test_inference_free_queries_are_learned_token_weights(tiny_mlm, one_torch_thread):
    idf = torch.linspace(0.5, 2.0, 190)
    enc = SpladeTrainEncoder(str(tiny_mlm), inference_free=True, idf=idf, lambda_q=1.0)
    batch = enc.tokenize(["vitamin vitamin d", "coffee"], "query")
    q = enc.encode(batch, "query")
    tok = enc.tokenizer
    for row, text in enumerate(["vitamin vitamin d", "coffee"]):
        ids = set(tok(text, add_special_tokens=False)["input_ids"])
        nz = set(torch.nonzero(q[row]).flatten().tolist())
        assert nz == ids  # each distinct token once, no [CLS]/[SEP]
        for i in ids:
            assert q[row, i].item() == pytest.approx(idf[i].item())
    # gradient reaches the per-token weights; queries are not regularised in this mode
    q.sum().backward()
    assert enc.query_weights.grad is not None and enc.query_weights.grad.abs().sum() > 0
    _, parts = enc.regularizer(q, q, step=10)
    assert "flops_q" not in parts
    fixed = SpladeTrainEncoder(str(tiny_mlm), inference_free=True, idf=idf, query_weighting="idf")
    assert not fixed.query_weights.requires_grad


def test_regularizer_parts_and_warmup(tiny_mlm, one_torch_thread):
    enc = SpladeTrainEncoder(str(tiny_mlm), lambda_q=2.0, lambda_d=3.0, flops_warmup=4, query_regularizer="l1")
    q = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    d = torch.tensor([[2.0, 2.0]])
    total, parts = enc.regularizer(q, d, step=2)
    assert parts["l1_q"].item() == pytest.approx(2.0) and parts["flops_d"].item() == pytest.approx(8.0)
    assert total.item() == pytest.approx(0.25 * (2.0 * 2.0 + 3.0 * 8.0))
    assert enc.stats(q, d) == {"nnz_q": 1.5, "nnz_d": 2.0}


def test_cli_trains_inference_free_splade_and_it_indexes(tiny_mlm, tmp_path, one_torch_thread):
    ds, negatives = write_train_set(tmp_path / "ds")
    out = tmp_path / "model"
    result = CliRunner().invoke(cli.main, [
        "train", "splade", "--model", str(tiny_mlm), "--dataset", str(ds), "--negatives", str(negatives),
        "--out", str(out), "--batch-size", "3", "--group-size", "3", "--max-steps", "3", "--lr", "1e-3",
        "--max-length", "32", "--dev-fraction", "0.3", "--device", "cpu", "--inference-free", "--idf-flops",
        "--lambda-d", "0.01", "--flops-warmup", "2", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows and all("flops_d" in r and "nnz_d" in r and "nnz_q" in r for r in train_rows)
    assert [r["reg_factor"] for r in train_rows] == pytest.approx([0.0, 0.25, 1.0])
    weights = np.load(out / "query_weights.npy")
    assert weights.shape == (190,) and (weights >= 0).all()
    resolved = json.loads((out / "training_config.json").read_text())
    assert resolved["temperature"] == 1.0 and resolved["encoder"]["inference_free"]
    assert resolved["distill_rescale"] is True  # splade's default: its dot products have no fixed scale
    idx = tmp_path / "idx"
    result = CliRunner().invoke(cli.main, ["index", str(ds), str(idx), "--kind", "sparse", "--model", str(out),
                                           "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["query"]["mode"] == "learned"  # declared by the trained model directory
    from retriever.api import Retriever

    r = Retriever.load(idx)
    hits = r.search("vitamin d bone", k=3)
    assert len(hits) == 3 and all(math.isfinite(h.score) for h in hits)


def test_max_projection_matches_autograd_of_the_plain_formula():
    from retriever.encoders.splade import MaxProjection

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)  # any padding side
    weight = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 7, generator=g, dtype=torch.float64)

    def plain(h, w, b_):
        logits = (h @ w.t() + b_).masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return torch.log1p(torch.relu(logits.amax(dim=1)))

    def fast(h, w, b_):
        return torch.log1p(torch.relu(MaxProjection.apply(h, mask, w, b_)))

    ref = plain(hidden, weight, bias)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (hidden, weight, bias))
    out = fast(hidden, weight, bias)
    grads = torch.autograd.grad((out * upstream).sum(), (hidden, weight, bias))
    assert torch.allclose(out, ref)
    assert (ref > 0).any() and (ref == 0).any()  # both sides of the relu are exercised
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b)
    assert torch.autograd.gradcheck(lambda h, w, b_: MaxProjection.apply(h, mask, w, b_), (hidden, weight, bias))
