"""Matryoshka: the prefix loss (by hand, gradients, validation), `retriever train dense --matryoshka`,
and truncated-dimension dense indexes (`--dim D`): vectors, manifest, exact search against numpy,
IVF-PQ, refusals, older manifests, sharded and hybrid indexes over truncated vectors."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from indexing.corpus import doc_text, iter_corpus
from indexing.manifest import read_manifest, write_manifest
from retriever import Retriever, cli
from retriever.encoders.dense import DenseEncoder, DenseSettings
from tests.conftest import TINY_WORDS, write_beir
from tests.test_training import config, make_trainer, write_train_set
from training.data import Group
from training.losses import ContrastiveLoss, MatryoshkaLoss, check_matryoshka, group_targets

QUERIES = {"a": "vitamin d fractures", "b": "coffee keeps people awake", "c": "inverted index"}
TINY_DIM = 32  # hidden size of the tiny test model


# -- the loss -------------------------------------------------------------------------------
def _reps(seed=0, n=3, g=2, dim=12, normalize=True):
    gen = torch.Generator().manual_seed(seed)
    q, d = torch.randn(n, dim, generator=gen), torch.randn(n * g, dim, generator=gen)
    if normalize:
        q, d = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(d, dim=-1)
    return q.requires_grad_(True), d.requires_grad_(True)


def _contrastive(q, d, n=3, g=2):
    return ContrastiveLoss(0.05)(q @ d.t(), group_targets(n, g))


def test_one_prefix_of_full_width_is_the_plain_loss():
    q, d = _reps()
    total, parts = MatryoshkaLoss([12], normalize=True)(q, d, _contrastive)
    assert torch.equal(total, _contrastive(q, d)) and list(parts) == [12]


@pytest.mark.parametrize("normalize", [True, False])
def test_several_prefixes_are_the_weighted_sum_computed_by_hand(normalize):
    q, d = _reps(normalize=normalize)
    loss = MatryoshkaLoss([4, 12, 8], [0.5, 1.0, 2.0], normalize=normalize)
    assert loss.dims == (12, 8, 4) and loss.weights == (1.0, 2.0, 0.5)  # descending, weights follow
    total, parts = loss(q, d, _contrastive)

    def cut(x, k):
        x = x[:, :k]
        return x / x.norm(dim=1, keepdim=True) if normalize else x

    by_hand = {k: _contrastive(cut(q, k), cut(d, k)) for k in (12, 8, 4)}
    assert total.item() == pytest.approx(1.0 * by_hand[12].item() + 2.0 * by_hand[8].item()
                                         + 0.5 * by_hand[4].item(), rel=1e-6)
    for k in (12, 8, 4):
        assert parts[k].item() == pytest.approx(by_hand[k].item(), rel=1e-6)
    if normalize:  # each prefix really is re-normalised: its loss differs from the raw cut's
        raw = _contrastive(q[:, :4], d[:, :4])
        assert abs(raw.item() - by_hand[4].item()) > 1e-3


def test_gradients_reach_every_trained_prefix_and_nothing_beyond():
    q, d = _reps(dim=16)
    total, _ = MatryoshkaLoss([8, 4], normalize=True)(q, d, _contrastive)
    total.backward()
    for x in (q, d):
        assert x.grad[:, :8].abs().sum(dim=0).gt(0).all()   # every trained component moves
        assert torch.count_nonzero(x.grad[:, 8:]) == 0       # components of no prefix do not
    # a zero weight drops its prefix from the total (but still reports it)
    q2, d2 = _reps(dim=16)
    total2, parts2 = MatryoshkaLoss([8, 4], [1.0, 0.0], normalize=True)(q2, d2, _contrastive)
    assert total2.item() == pytest.approx(parts2[8].item()) and 4 in parts2


@pytest.mark.parametrize("dims, weights, match", [
    ([], None, "at least one"),
    ([64, 64, 32], None, "distinct; repeated: 64"),
    ([64, 0], None, ">= 1"),
    ([64, 32.5], None, "integers"),
    ([64, 32], [1.0], "1 given for 2"),
    ([64, 32], [1.0, -1.0], ">= 0"),
    ([64, 32], [1.0, float("nan")], "finite"),
    ([64, 32], [0, 0], "all 0"),
])
def test_matryoshka_settings_are_checked(dims, weights, match):
    with pytest.raises(ValueError, match=match):
        check_matryoshka(dims, weights)


# -- the trainer ---------------------------------------------------------------------------
@pytest.fixture
def train_set(tmp_path):
    return write_train_set(tmp_path / "ds")


GROUPS = [Group("qv0", "x", ["dv0", "dc0"], None), Group("qc1", "y", ["dc1", "dv3"], None)]


def test_trainer_without_the_flag_is_unchanged_and_with_it_sums_prefix_losses(tiny_mlm, train_set, tmp_path,
                                                                             one_torch_thread):
    ds, negatives = train_set
    plain = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, temperature=0.5))
    assert plain.matryoshka is None
    q, d = _reps(n=2, g=2, dim=TINY_DIM, normalize=False)
    loss, parts = plain.loss(q, d, GROUPS)
    # one prefix as wide as the model: the very same loss
    full = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, temperature=0.5, matryoshka_dims=[TINY_DIM]))
    loss_full, parts_full = full.loss(q, d, GROUPS)
    assert torch.equal(loss_full, loss) and parts_full[f"contrastive@{TINY_DIM}"] == parts["contrastive"]
    # several prefixes: the plain trainer's loss on each prefix (the tiny model does not
    # normalise, so a prefix is a plain cut), weighted
    mrl = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, temperature=0.5,
                              matryoshka_dims=[8, TINY_DIM, 16], matryoshka_weights=[0.25, 1, 2]))
    assert mrl.config.matryoshka_dims == [TINY_DIM, 16, 8] and mrl.config.matryoshka_weights == [1.0, 2.0, 0.25]
    total, parts_mrl = mrl.loss(q, d, GROUPS)
    by_hand = sum(w * plain.loss(q[:, :k], d[:, :k], GROUPS)[0] for k, w in ((TINY_DIM, 1.0), (16, 2.0), (8, 0.25)))
    assert total.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert set(parts_mrl) >= {f"contrastive@{k}" for k in (TINY_DIM, 16, 8)}
    total.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


@pytest.mark.parametrize("distill", ["margin-mse", "kl"])
def test_distillation_is_computed_on_every_prefix_too(tiny_mlm, train_set, tmp_path, distill, one_torch_thread):
    ds, negatives = train_set
    recs = [json.loads(x) for x in negatives.read_text().splitlines()]
    for r in recs:
        r.update(pos_scores=[2.0] * len(r["pos"]), teacher="t")
    negatives.write_text("".join(json.dumps(r) + "\n" for r in recs))
    groups = [Group("qv0", "x", ["dv0", "dc0"], [2.0, 0.5]), Group("qc1", "y", ["dc1", "dv3"], [1.0, 1.5])]
    opts = dict(temperature=0.5, distill=distill, distill_weight=0.7)
    plain = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, **opts))
    mrl = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, matryoshka_dims=[TINY_DIM, 8],
                              matryoshka_weights=[1.0, 3.0], **opts))
    q, d = _reps(n=2, g=2, dim=TINY_DIM, normalize=False)
    total, parts = mrl.loss(q, d, groups)
    by_hand = plain.loss(q, d, groups)[0] + 3.0 * plain.loss(q[:, :8], d[:, :8], groups)[0]
    assert total.item() == pytest.approx(by_hand.item(), rel=1e-6)
    name = "margin_mse" if distill == "margin-mse" else "kl"
    assert parts[f"{name}@8"] == pytest.approx(plain.loss(q[:, :8], d[:, :8], groups)[1][name], rel=1e-6)


def test_prefixes_wider_than_the_model_are_refused(tiny_mlm, train_set, tmp_path):
    ds, negatives = train_set
    with pytest.raises(ValueError, match=f"64 > the model's dimension {TINY_DIM}"):
        make_trainer(config(tmp_path, tiny_mlm, ds, negatives, matryoshka_dims=[64, 16]))
    with pytest.raises(ValueError, match="need matryoshka dims"):
        config(tmp_path, tiny_mlm, ds, negatives, matryoshka_weights=[1.0])


def _train_args(model, ds, negatives, out, *extra):
    return ["train", "dense", "--model", str(model), "--dataset", str(ds), "--negatives", str(negatives),
            "--out", str(out), "--batch-size", "3", "--group-size", "3", "--max-steps", "2", "--lr", "1e-3",
            "--max-length", "32", "--query-max-length", "16", "--dev-fraction", "0.3", "--device", "cpu",
            *extra]


@pytest.mark.parametrize("flags, code, match", [
    (["--matryoshka", "32,16,16"], 2, "distinct; repeated: 16"),
    (["--matryoshka", "32,x"], 2, "comma-separated integers"),
    (["--matryoshka", "32,0"], 2, ">= 1"),
    (["--matryoshka-weights", "1,1"], 2, "needs --matryoshka"),
    (["--matryoshka", "32,16", "--matryoshka-weights", "1"], 2, "1 given for 2"),
    (["--matryoshka", "32,16", "--matryoshka-weights", "0,0"], 2, "all 0"),
    (["--matryoshka", "32,16", "--matryoshka-weights", "1,nan"], 2, "finite"),
    (["--matryoshka", "64,16"], 1, f"64 > the model's dimension {TINY_DIM}"),
])
def test_cli_refuses_bad_matryoshka_flags(tiny_mlm, train_set, tmp_path, flags, code, match):
    ds, negatives = train_set
    result = CliRunner().invoke(cli.main, _train_args(tiny_mlm, ds, negatives, tmp_path / "m", *flags))
    assert result.exit_code == code, result.output
    assert match in result.output
    assert not (tmp_path / "m" / "training_summary.json").exists()


def test_cli_trains_with_matryoshka_and_records_the_dims(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    out = tmp_path / "model"
    result = CliRunner().invoke(cli.main, _train_args(tiny_mlm, ds, negatives, out, "--normalize",
                                                      "--matryoshka", "16,32,8", "--matryoshka-weights", "1,2,0.5"))
    assert result.exit_code == 0, result.output
    resolved = json.loads((out / "training_config.json").read_text())
    assert resolved["matryoshka_dims"] == [32, 16, 8] and resolved["matryoshka_weights"] == [2.0, 1.0, 0.5]
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("contrastive@8" in r for r in rows)
    card = (out / "README.md").read_text()
    assert "- matryoshka" in card and "first 32, 16, 8 dimensions" in card and "--dim 8" in card
    # the trained model indexes at a trained prefix
    idx = tmp_path / "idx"
    result = CliRunner().invoke(cli.main, ["index", str(ds), str(idx), "--kind", "dense", "--model", str(out),
                                           "--dim", "8", "--faiss", "Flat", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(Retriever.load(idx).search("vitamin d bone", k=3)) == 3


def test_pca_init_rotates_onto_principal_axes_and_keeps_full_size_scores(tiny_mlm, train_set, tmp_path,
                                                                        one_torch_thread):
    from training.dev_eval import embed

    ds, negatives = train_set
    plain = make_trainer(config(tmp_path / "a", tiny_mlm, ds, negatives))
    rotated = make_trainer(config(tmp_path / "b", tiny_mlm, ds, negatives, pca_init=True))
    r = rotated.model.projection.linear.weight.detach().double()
    assert rotated.model.projection.linear.bias is None
    torch.testing.assert_close(r @ r.T, torch.eye(TINY_DIM, dtype=torch.float64), atol=1e-5, rtol=0)
    docs = sorted(rotated.data.docs)
    texts = [rotated.data.docs[i] for i in docs]
    before = embed(plain.model, texts, "doc", 8, "cpu")
    after = embed(rotated.model, texts, "doc", 8, "cpu")
    torch.testing.assert_close(after, before @ r.float().T, atol=1e-5, rtol=1e-5)  # x -> R x
    torch.testing.assert_close(after @ after.T, before @ before.T, atol=1e-4, rtol=1e-4)  # scores kept
    energy = (after.double() ** 2).mean(0)  # second moment per axis: largest first
    assert torch.all(energy[:-1] >= energy[1:] - 1e-9)
    by_hand = torch.linalg.eigvalsh((before.double().T @ before.double()) / len(before)).flip(0)
    torch.testing.assert_close(energy, by_hand, atol=1e-6, rtol=1e-5)
    # a SPLADE model has no vector space to rotate
    from training.encoders import SpladeTrainEncoder
    from training.trainer import Trainer

    cfg = config(tmp_path / "c", tiny_mlm, ds, negatives, pca_init=True)
    with pytest.raises(ValueError, match="rotates dense models only"):
        Trainer(cfg, lambda: SpladeTrainEncoder(cfg.model, max_length=32, query_max_length=16))


def test_cli_pca_init_is_on_with_matryoshka_and_the_model_saves_its_rotation(tiny_mlm, train_set, tmp_path,
                                                                            one_torch_thread):
    ds, negatives = train_set
    out = tmp_path / "model"
    result = CliRunner().invoke(cli.main, _train_args(tiny_mlm, ds, negatives, out, "--matryoshka", "32,8"))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "training_config.json").read_text())["pca_init"] is True
    types = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert "Dense" in types
    enc = DenseEncoder(str(out), device="cpu")
    assert enc.dim == TINY_DIM and enc.model.projection is not None
    plain = tmp_path / "plain"
    result = CliRunner().invoke(cli.main, _train_args(tiny_mlm, ds, negatives, plain, "--matryoshka", "32,8",
                                                      "--no-pca-init"))
    assert result.exit_code == 0, result.output
    assert not (plain / "2_Dense").exists()
    assert json.loads((plain / "training_config.json").read_text())["pca_init"] is False


# -- truncated indexes --------------------------------------------------------------------
def brute_force(model, beir_dir, dim, k, normalize=True):
    """Full-size vectors from the encoder, cut to ``dim`` and re-normalised in numpy; exact top k."""
    enc = DenseEncoder(str(model), settings=DenseSettings("mean", normalize, "", "", 64, 16), device="cpu")
    docs = list(iter_corpus(beir_dir))
    d = enc.encode_documents([doc_text(x) for x in docs])[:, :dim].astype(np.float64)
    q = enc.encode_queries(list(QUERIES.values()))[:, :dim].astype(np.float64)
    if normalize:
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ d.T
    out = {}
    for qid, row in zip(QUERIES, scores):
        order = np.lexsort((np.arange(len(row)), -row))[:k]
        out[qid] = [(docs[i].docid, float(row[i])) for i in order]
    return out


OPTS = dict(kind="dense", pooling="mean", normalize=True, device="cpu", doc_max_length=64, query_max_length=16)


def test_dim_truncates_stores_d_and_searches_like_numpy(tiny_mlm, beir_dir, tmp_path, one_torch_thread):
    import faiss

    r = Retriever.build(beir_dir, tmp_path / "idx", model=str(tiny_mlm), dim=8, faiss="Flat", **OPTS)
    m = r.manifest
    assert m["settings"]["dim"] == 8 and m["encoder"]["dim"] == 8 and m["encoder"]["model_dim"] == TINY_DIM
    assert m["faiss"]["dim"] == 8
    index = faiss.read_index(str(tmp_path / "idx" / "faiss.index"))
    assert index.d == 8 and index.ntotal == 6
    stored = index.reconstruct_n(0, 6)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)  # re-normalised
    want = brute_force(tiny_mlm, beir_dir, 8, k=4)
    for searcher in (r, Retriever.load(tmp_path / "idx")):
        run = searcher.search_batch(QUERIES, k=4)
        for qid, hits in want.items():
            assert list(run[qid]) == [d for d, _ in hits]
            np.testing.assert_allclose(list(run[qid].values()), [s for _, s in hits], atol=1e-5)
        assert [(h.docid, round(h.score, 5)) for h in searcher.search(QUERIES["b"], k=4)] == \
               [(d, round(s, 5)) for d, s in want["b"]]


def test_full_dim_is_the_untruncated_index(tiny_mlm, beir_dir, tmp_path, one_torch_thread):
    a = Retriever.build(beir_dir, tmp_path / "a", model=str(tiny_mlm), faiss="Flat", **OPTS)
    b = Retriever.build(beir_dir, tmp_path / "b", model=str(tiny_mlm), faiss="Flat", dim=TINY_DIM, **OPTS)
    assert "model_dim" not in a.manifest["encoder"] and "model_dim" not in b.manifest["encoder"]
    assert a.search_batch(QUERIES, k=6) == b.search_batch(QUERIES, k=6)


def test_an_index_without_dim_in_its_manifest_opens_at_full_size(tiny_mlm, beir_dir, tmp_path, one_torch_thread):
    r = Retriever.build(beir_dir, tmp_path / "idx", model=str(tiny_mlm), faiss="Flat", **OPTS)
    before = r.search_batch(QUERIES, k=6)
    m = read_manifest(tmp_path / "idx")
    del m["settings"]["dim"], m["encoder"]["dim"]  # as written before --dim existed (or even older)
    write_manifest(tmp_path / "idx", m)
    again = Retriever.load(tmp_path / "idx")
    assert again.search_batch(QUERIES, k=6) == before


def _synthetic_corpus(root, n=48):
    rng = np.random.default_rng(3)
    docs = [{"_id": f"s{i:03d}", "title": "", "text": " ".join(rng.choice(TINY_WORDS, 10))} for i in range(n)]
    return write_beir(root, docs=docs)


def test_ivf_pq_over_truncated_vectors(tiny_mlm, tmp_path, one_torch_thread):
    corpus = _synthetic_corpus(tmp_path / "syn")
    r = Retriever.build(corpus, tmp_path / "pq", model=str(tiny_mlm), dim=8, faiss="IVF2,PQ4x4", nprobe=2, **OPTS)
    f = r.manifest["faiss"]
    assert (f["factory"], f["dim"], f["ntotal"]) == ("IVF2,PQ4x4", 8, 48)
    exact = Retriever.build(corpus, tmp_path / "flat", model=str(tiny_mlm), dim=8, faiss="Flat", **OPTS)
    got, want = r.search_batch(QUERIES, k=10), exact.search_batch(QUERIES, k=10)
    overlap = np.mean([len(set(got[q]) & set(want[q])) / 10 for q in QUERIES])
    assert overlap >= 0.5  # 2 lists both probed, 4-bit codes of 2-d sub-vectors: close to exact
    # auto picks a spec that fits D (HNSW/Flat here; the PQ m it would choose divides D)
    from indexing.faiss_index import resolve_spec

    assert int(resolve_spec("auto", 2_000_000, 24).split("PQ")[-1]) in (1, 2, 3, 4, 6)


def test_bad_dims_are_refused_with_clear_errors(tiny_mlm, beir_dir, tmp_path):
    with pytest.raises(ValueError, match="dim must be >= 1"):
        Retriever.build(beir_dir, tmp_path / "a", model=str(tiny_mlm), dim=0, **OPTS)
    with pytest.raises(ValueError, match=f"between 1 and the model's dimension {TINY_DIM}, got 33"):
        Retriever.build(beir_dir, tmp_path / "b", model=str(tiny_mlm), dim=33, **OPTS)
    with pytest.raises(ValueError, match=r"--faiss IVF2,PQ3x4 does not fit vectors of --dim 8: .*PQ m = 3 "
                                         r"must divide the dimension 8"):
        Retriever.build(beir_dir, tmp_path / "c", model=str(tiny_mlm), dim=8, faiss="IVF2,PQ3x4", **OPTS)
    # the full size is checked before encoding too (PQ5 cannot split 32)
    with pytest.raises(ValueError, match="PQ m = 5 must divide the dimension 32"):
        Retriever.build(beir_dir, tmp_path / "d", model=str(tiny_mlm), faiss="IVF2,PQ5x4", **OPTS)
    for name in "abcd":
        assert not (tmp_path / name).exists()
    result = CliRunner().invoke(cli.main, ["index", str(beir_dir), str(tmp_path / "e"), "--kind", "dense",
                                           "--model", str(tiny_mlm), "--dim", "0", "--quiet"])
    assert result.exit_code != 0 and "dim" in result.output


def test_sharded_index_over_truncated_vectors(tiny_mlm, beir_dir, tmp_path, one_torch_thread):
    one = Retriever.build(beir_dir, tmp_path / "one", model=str(tiny_mlm), dim=8, faiss="Flat", **OPTS)
    sharded = Retriever.build(beir_dir, tmp_path / "sh", model=str(tiny_mlm), dim=8, faiss="Flat", shards=2,
                              encode_block=2, **OPTS)  # shards hold whole encoding blocks
    for i in range(2):
        assert read_manifest(tmp_path / "sh" / "shards" / f"{i:03d}")["faiss"]["dim"] == 8
    want = one.search_batch(QUERIES, k=6)
    for r in (sharded, Retriever.load(tmp_path / "sh")):
        got = r.search_batch(QUERIES, k=6)
        assert {q: list(h) for q, h in got.items()} == {q: list(h) for q, h in want.items()}
        for q in QUERIES:
            np.testing.assert_allclose(list(got[q].values()), list(want[q].values()), atol=1e-6)


def test_hybrid_with_a_truncated_dense_component(tiny_mlm, beir_dir, tmp_path, one_torch_thread):
    dense = Retriever.build(beir_dir, tmp_path / "dense", model=str(tiny_mlm), dim=8, faiss="Flat", **OPTS)
    Retriever.build(beir_dir, tmp_path / "bm25", kind="bm25")
    result = CliRunner().invoke(cli.main, ["hybrid", str(tmp_path / "bm25"), str(tmp_path / "dense"),
                                           str(tmp_path / "hy")])
    assert result.exit_code == 0, result.output
    hy = Retriever.load(tmp_path / "hy")
    run = hy.search_batch(QUERIES, k=6)
    assert all(len(h) == 6 for h in run.values())
    dense_part = dict(hy.searcher.components)["dense"]
    assert dense_part.encoder.dim == 8 and dense_part.index.dim == 8
    assert dense_part.search_batch(QUERIES, k=6) == dense.search_batch(QUERIES, k=6)
