"""Index-aware query training (`retriever train query`, ADORE / JPQ): the document side read from
faiss scores as faiss does (before and after the centroids change), centroid gradients against
finite differences, live negatives that are never positives, and the trained index: its query
encoder and centroids round-trip through save/load and `Retriever.load`."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from indexing.manifest import IndexFormatError, read_manifest
from retriever import Retriever, cli
from retriever.encoders.dense import DenseEncoder
from tests.test_training import TOPICS
from training.index_documents import IndexDocuments
from training.losses import ContrastiveLoss, group_targets

faiss = pytest.importorskip("faiss")

SPECS = ["Flat", "IVF8,Flat", "HNSW8", "IVF8,PQ8", "OPQ8,IVF8,PQ8", "IVF8,PQ8,noresidual"]


@functools.lru_cache(maxsize=None)
def _trained_toy(spec: str, n: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    factory = spec.replace(",noresidual", "")
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if spec.endswith("noresidual"):
        faiss.extract_index_ivf(index).by_residual = False
    if "PQ" in spec:  # fewer k-means iterations: the tests need codes, not good ones
        ivfpq = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivfpq.pq.cp.niter, ivfpq.do_polysemous_training = 4, False
    index.train(x)
    index.add(x)
    if "IVF" in spec:
        faiss.extract_index_ivf(index).nprobe = 8  # every list: faiss scores every document
    if "HNSW" in spec:
        faiss.downcast_index(index).hnsw.efSearch = n
    return index, rng.standard_normal((6, dim)).astype(np.float32)


def _toy_index(spec: str, n: int = 600, dim: int = 32, seed: int = 0):
    """A trained and filled toy index of ``spec`` (a copy: callers may change it) and 6 queries."""
    index, queries = _trained_toy(spec, n, dim, seed)
    return faiss.clone_index(index), queries.copy()


def _torch_top(docs: IndexDocuments, queries: np.ndarray, k: int):
    with torch.no_grad():
        scores = docs.query_space(torch.as_tensor(queries)) @ docs.vectors(torch.arange(docs.count)).t()
    top = scores.topk(k, dim=1)
    return top.values.numpy(), top.indices.numpy()


@pytest.mark.parametrize("spec", SPECS)
def test_the_document_side_scores_as_faiss_does(spec):
    index, queries = _toy_index(spec)
    docs = IndexDocuments.read(index)
    assert docs.count == index.ntotal and docs.quantized == ("PQ" in spec)
    found, ids = index.search(queries, 10)
    values, top = _torch_top(docs, queries, 10)
    np.testing.assert_allclose(values, found, rtol=0, atol=1e-5)
    assert (top == ids).mean() > 0.95  # near-equal scores may swap places
    if docs.quantized:  # every document is its list's centroid plus its PQ reconstruction
        ivf = faiss.extract_index_ivf(index)
        ivf.make_direct_map()
        stored = np.stack([ivf.reconstruct(i) for i in range(0, index.ntotal, 37)])
        with torch.no_grad():
            ours = docs.vectors(torch.arange(0, index.ntotal, 37)).numpy()
        np.testing.assert_allclose(ours, stored, atol=1e-5)


@pytest.mark.parametrize("spec", ["IVF8,PQ8", "OPQ8,IVF8,PQ8", "IVF8,PQ8,noresidual"])
def test_changed_centroids_written_back_give_faiss_the_same_scores(spec):
    index, queries = _toy_index(spec)
    docs = IndexDocuments.read(index)
    with torch.no_grad():
        docs.pq.add_(0.05 * torch.randn_like(docs.pq))
        docs.coarse.add_(0.05 * torch.randn_like(docs.coarse))
    before, _ = index.search(queries, 10)
    docs.write_to(index)
    found, _ = index.search(queries, 10)
    values, _ = _torch_top(docs, queries, 10)
    assert np.abs(found - before).max() > 1e-3  # the index really changed
    np.testing.assert_allclose(values, found, rtol=0, atol=1e-5)
    again = IndexDocuments.read(index)  # read back: the written centroids, the same codes
    assert torch.equal(again.pq, docs.pq) and torch.equal(again.codes, docs.codes)


def test_centroid_gradients_match_finite_differences():
    index, queries = _toy_index("IVF8,PQ8", n=300, dim=16)
    docs = IndexDocuments.read(index).double()
    q = torch.as_tensor(queries[:3], dtype=torch.float64)
    rows = torch.tensor([0, 5, 9, 1, 7, 11, 2, 6, 13])  # 3 queries x 3 passages (positive first)

    def loss():
        scores = docs.query_space(q) @ docs.vectors(rows).t()
        return ContrastiveLoss(0.1)(scores, group_targets(3, 3))

    value = loss()
    value.backward()
    rng = np.random.default_rng(0)
    used = docs.codes[rows]                                       # (9, m)
    checks = [("pq", (j, int(used[r, j]), int(rng.integers(docs.pq.shape[2]))))
              for r, j in zip(rng.integers(9, size=6), rng.integers(docs.pq.shape[0], size=6))]
    checks += [("coarse", (int(docs.lists[rows[r]]), int(rng.integers(16)))) for r in rng.integers(9, size=4)]
    unused = next(c for c in range(docs.pq.shape[1]) if not (used[:, 0] == c).any())
    checks.append(("pq", (0, unused, 0)))                          # a centroid no document uses
    eps = 1e-6
    for name, at in checks:
        param = getattr(docs, name)
        with torch.no_grad():
            param[at] += eps
            up = loss().item()
            param[at] -= 2 * eps
            down = loss().item()
            param[at] += eps
        numeric = (up - down) / (2 * eps)
        assert param.grad[at].item() == pytest.approx(numeric, abs=1e-7, rel=1e-5), (name, at)
    assert docs.pq.grad[0, unused].abs().sum() == 0


def test_eight_bit_codes_only():
    x = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)
    index = faiss.index_factory(16, "IVF4,PQ8x4", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    with pytest.raises(ValueError, match="8-bit"):
        IndexDocuments.read(index)


# -- the trainer and the CLI on a tiny model -------------------------------------------------
def _write_set(root: Path, per_topic: int = 75, queries_per_topic: int = 8) -> Path:
    """A BEIR directory with enough documents for IVF-PQ (300) and train/test qrels."""
    rng = np.random.default_rng(1)
    docs, queries, train, test = [], [], [], []
    for t, words in TOPICS.items():
        w = words.split()
        for i in range(per_topic):
            docs.append({"_id": f"d{t}{i}", "title": "", "text": " ".join(rng.choice(w, 10))})
        for j in range(queries_per_topic):
            qid = f"q{t}{j}"
            queries.append({"_id": qid, "text": " ".join(rng.choice(w, 4))})
            (test if j == 0 else train).extend((qid, f"d{t}{k}") for k in rng.choice(per_topic, 3, replace=False))
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels").mkdir(exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in rows), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def query_set(tmp_path_factory, tiny_mlm):
    """The dataset and two indexes of it by the tiny model: Flat and IVF4,PQ8 with refine."""
    root = tmp_path_factory.mktemp("trainq")
    ds = _write_set(root / "ds")
    out = {}
    for name, spec in (("flat", ["--faiss", "Flat"]), ("pq", ["--faiss", "IVF4,PQ8", "--refine"])):
        out[name] = root / name
        result = CliRunner().invoke(cli.main, ["index", str(ds), str(out[name]), "--kind", "dense", "--model",
                                               str(tiny_mlm), "--quiet", "--device", "cpu", *spec])
        assert result.exit_code == 0, result.output
    return ds, out["flat"], out["pq"]


def _config(tmp_path, ds, **kw):
    from training.trainer import TrainConfig

    base = {"model": "", "dataset": str(ds), "negatives": "live", "out": str(tmp_path / "work"),
            "batch_size": 4, "group_size": 4, "lr": 1e-3, "query_max_length": 16, "device": "cpu",
            "dev_fraction": 0.25, "seed": 3, "log_every": 1}
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("refresh", [1, 3])
def test_live_negatives_come_from_the_index_and_are_never_positives(query_set, tmp_path, refresh, one_torch_thread):
    from training.query_trainer import QueryTrainer

    ds, flat, _ = query_set
    trainer = QueryTrainer(_config(tmp_path, ds, group_size=6), flat, refresh=refresh, depth=8)
    assert trainer.plan_group_size() == 1 and trainer.data.dev and trainer.data.train
    for step in range(4):
        groups = trainer.plan.batch(step)
        trainer.step = step
        with torch.no_grad():
            q = trainer._encode(trainer._to_device(trainer.model.tokenize([g.query for g in groups], "query")), "query")
        live = trainer._live_groups(groups, q)
        ids = trainer.side.search(q, 8)
        for g, row, found in zip(groups, live, ids):
            assert row.doc_ids[0] == g.doc_ids[0] and len(row.doc_ids) == 6
            negatives = row.doc_ids[1:]
            assert not set(negatives) & trainer.positives[g.qid]
            assert len(set(negatives)) == len(negatives)
            if refresh == 1:  # drawn from this step's top 8 (the rest of the group random when short)
                top = [trainer.docids[i] for i in found if trainer.docids[i] not in trainer.positives[g.qid]]
                assert set(negatives[:len(top)]) <= set(top) or set(top) <= set(negatives)


def test_a_positive_is_never_a_negative_even_when_it_fills_the_top(query_set, tmp_path, one_torch_thread):
    """depth 1: the top result is often the query's positive; negatives then come from elsewhere."""
    from training.query_trainer import QueryTrainer

    ds, flat, _ = query_set
    trainer = QueryTrainer(_config(tmp_path, ds, group_size=3), flat, depth=1)
    groups = trainer.plan.batch(0)
    positive_rows = [trainer.row[g.doc_ids[0]] for g in groups]
    q = trainer.model.docs.vectors(torch.tensor(positive_rows))  # each query = its positive: rank 1
    for g, row in zip(groups, trainer._live_groups(groups, q)):
        assert not set(row.doc_ids[1:]) & trainer.positives[g.qid]


def _train(ds, index, out, *extra):
    return CliRunner().invoke(cli.main, [
        "train", "query", "--index", str(index), "--dataset", str(ds), "--out", str(out), "--batch-size", "4",
        "--group-size", "4", "--max-steps", "4", "--lr", "1e-3", "--dev-every", "2", "--device", "cpu",
        "--query-max-length", "16", *extra])


def test_trained_flat_index_round_trips_with_its_query_encoder(query_set, tiny_mlm, tmp_path, one_torch_thread):
    ds, flat, _ = query_set
    out = tmp_path / "trained"
    result = _train(ds, flat, out, "--dev-fraction", "0")  # no dev: the last model, which has moved
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    enc = manifest["encoder"]
    assert enc["query_model"] == "query_model" and manifest["query_training"]["negatives"] == "live"
    assert (out / "query_model" / "config.json").is_file()
    assert manifest["format_version"] == 4  # a reader from before trained query models refuses it:
    import indexing.manifest as im

    old = im.READABLE_VERSIONS
    im.READABLE_VERSIONS = (1, 2, 3)
    try:
        with pytest.raises(IndexFormatError, match="version"):
            read_manifest(out)
    finally:
        im.READABLE_VERSIONS = old
    source = read_manifest(flat)
    assert source["format_version"] == 3
    assert enc["fingerprint"] == source["encoder"]["fingerprint"] != enc["query_fingerprint"]
    assert (out / "faiss.index").read_bytes() == (flat / "faiss.index").read_bytes()  # documents unchanged
    assert json.loads((tmp_path / "trained.train" / "training_summary.json").read_text())["steps"] == 4
    # searches encode queries with the trained model: the same vectors as loading it by hand
    r = Retriever.load(out)
    text = "vitamin d bone"
    hits = r.search(text, k=5)
    trained = DenseEncoder(str(out / "query_model"), device="cpu").encode_queries([text])
    scores = faiss.read_index(str(flat / "faiss.index")).search(trained, 5)[0][0]
    np.testing.assert_allclose([h.score for h in hits], scores, rtol=1e-5)
    base = DenseEncoder(str(tiny_mlm), device="cpu").encode_queries([text])
    assert not np.allclose(trained, base)
    # another model passed for the queries is refused (it is not the trained one)
    with pytest.raises(IndexFormatError, match="trained query model"):
        Retriever.load(out, model=str(tiny_mlm))
    assert Retriever.load(out, model=str(out / "query_model")).search(text, k=5) == hits


def test_a_run_whose_index_was_never_written_says_resume_writes_it(query_set, tmp_path, one_torch_thread):
    """A full disk while the trained index was written left OUT.train finished and OUT missing; a
    rerun said only "holds a finished training run". It now says --resume writes it, which does."""
    import shutil

    ds, flat, _ = query_set
    out = tmp_path / "trained"
    assert _train(ds, flat, out, "--dev-fraction", "0").exit_code == 0
    shutil.rmtree(out)  # as the failed final write left it
    result = _train(ds, flat, out, "--dev-fraction", "0")
    assert result.exit_code == 2 and "--resume writes it" in result.output
    result = _train(ds, flat, out, "--dev-fraction", "0", "--resume")
    assert result.exit_code == 0, result.output
    assert Retriever.load(out).search("vitamin d bone", k=3)


def test_a_tampered_query_model_is_refused(query_set, tmp_path, one_torch_thread):
    ds, flat, _ = query_set
    out = tmp_path / "trained"
    assert _train(ds, flat, out, "--max-steps", "1", "--dev-fraction", "0").exit_code == 0
    weights = out / "query_model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError):
        Retriever.load(out)


def test_jpq_trains_centroids_and_the_new_index_scores_with_them(query_set, tmp_path, one_torch_thread):
    from indexing.faiss_index import REFINE_FILE
    from training.index_documents import CENTROIDS

    ds, _, pq = query_set
    out = tmp_path / "jpq"
    result = _train(ds, pq, out, "--centroid-lr", "1e-2")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["faiss"]["refine"] is False and not (out / REFINE_FILE).exists()
    assert (pq / REFINE_FILE).exists()  # the source keeps its own files
    assert manifest["query_training"]["centroids_trained"] is True
    work = tmp_path / "jpq.train"
    summary = json.loads((work / "training_summary.json").read_text())
    assert [h["step"] for h in summary["history"]] == [0, 2, 4]  # dev: the whole index searched
    best_step = summary["best"][1]
    assert manifest["query_training"]["best_step"] == best_step
    source = IndexDocuments.read(faiss.read_index(str(pq / "faiss.index")))
    written = IndexDocuments.read(faiss.read_index(str(out / "faiss.index")))
    assert torch.equal(written.codes, source.codes) and torch.equal(written.lists, source.lists)
    with np.load(work / CENTROIDS) as saved:
        np.testing.assert_array_equal(written.pq.detach().numpy(), saved["pq"])
        np.testing.assert_array_equal(written.coarse.detach().numpy(), saved["coarse"])
    if best_step > 0:
        assert not torch.equal(written.pq, source.pq)
    # Retriever.load searches the new codes and centroids with the trained query encoder, no refine
    text = "coffee caffeine awake"
    q = DenseEncoder(str(out / "query_model"), device="cpu").encode_queries([text])
    values, rows = _torch_top(written, q, 5)
    hits = Retriever.load(out, nprobe=4).search(text, k=5)
    np.testing.assert_allclose([h.score for h in hits], values[0], rtol=1e-5, atol=1e-6)


def test_static_negatives_and_frozen_centroids(query_set, tmp_path, one_torch_thread):
    ds, _, pq = query_set
    negatives = tmp_path / "negatives.jsonl"
    qrels = [line.split("\t") for line in (ds / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    by_query: dict[str, list[str]] = {}
    for q, d, _ in qrels:
        by_query.setdefault(q, []).append(d)
    negatives.write_text("".join(json.dumps({"qid": q, "pos": p, "neg": [f"dr{i}" for i in range(5)] if q[1] != "r"
                                             else ["dv1"]}) + "\n" for q, p in by_query.items()))
    out = tmp_path / "static"
    result = _train(ds, pq, out, "--negatives", str(negatives), "--no-train-centroids")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["query_training"]["negatives"] == str(negatives.absolute())
    assert manifest["query_training"]["centroids_trained"] is False
    source = IndexDocuments.read(faiss.read_index(str(pq / "faiss.index")))
    written = IndexDocuments.read(faiss.read_index(str(out / "faiss.index")))
    assert torch.equal(written.pq, source.pq) and torch.equal(written.coarse, source.coarse)


def test_refusals(query_set, tmp_path, tiny_mlm):
    ds, flat, _ = query_set
    result = _train(ds, flat, flat)
    assert result.exit_code != 0 and "new directory" in result.output
    result = _train(ds, flat, tmp_path / "x", "--negatives", str(tmp_path / "missing.jsonl"))
    assert result.exit_code != 0 and "neither 'live' nor a negatives file" in result.output
    bm25 = tmp_path / "bm25"
    assert CliRunner().invoke(cli.main, ["index", str(ds), str(bm25), "--quiet"]).exit_code == 0
    result = _train(ds, bm25, tmp_path / "y")
    assert result.exit_code != 0 and "needs a dense or an inference-free sparse index" in result.output
    for flag in ("--depth", "--refresh"):
        result = _train(ds, flat, tmp_path / "z", flag, "0")
        assert result.exit_code != 0 and f"{flag} must be at least 1, got 0" in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_resume_gives_the_jpq_model_of_an_uninterrupted_run(query_set, tmp_path, one_torch_thread):
    """Live negatives (refresh 1) depend on the model and the step only; centroids are in the checkpoint."""
    from training.query_trainer import QueryTrainer

    ds, _, pq = query_set
    kw = {"max_steps": 4, "save_every": 2, "dev_fraction": 0}
    whole = QueryTrainer(_config(tmp_path / "a", ds, **kw), pq, centroid_lr=1e-2)
    whole.train()

    class Stop(Exception):
        pass

    def interrupt(step):
        if step == 2:
            raise Stop

    cfg = _config(tmp_path / "b", ds, **kw)
    with pytest.raises(Stop):
        QueryTrainer(cfg, pq, centroid_lr=1e-2, on_step=interrupt).train()
    cfg.resume = True
    resumed = QueryTrainer(cfg, pq, centroid_lr=1e-2)
    resumed.train()
    state_a, state_b = whole.model.state_dict(), resumed.model.state_dict()
    assert "docs.pq" in state_a and "docs.codes" not in state_a  # centroids checkpointed, fixed codes not
    assert not torch.equal(state_a["docs.pq"], torch.as_tensor(IndexDocuments.read(
        faiss.read_index(str(pq / "faiss.index"))).pq))  # they trained
    for name, value in state_a.items():
        assert torch.equal(value, state_b[name]), name


def test_a_truncated_index_trains_queries_at_its_dimension(query_set, tiny_mlm, tmp_path, one_torch_thread):
    ds, _, _ = query_set
    idx = tmp_path / "dim16"
    result = CliRunner().invoke(cli.main, ["index", str(ds), str(idx), "--kind", "dense", "--model", str(tiny_mlm),
                                           "--quiet", "--device", "cpu", "--faiss", "Flat", "--dim", "16"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "trained16"
    result = _train(ds, idx, out, "--dev-fraction", "0", "--max-steps", "2")
    assert result.exit_code == 0, result.output
    assert read_manifest(out)["encoder"]["dim"] == 16
    text = "river water city"
    q = DenseEncoder(str(out / "query_model"), device="cpu", dim=16).encode_queries([text])
    assert q.shape == (1, 16)
    scores = faiss.read_index(str(idx / "faiss.index")).search(q, 3)[0][0]
    np.testing.assert_allclose([h.score for h in Retriever.load(out).search(text, k=3)], scores, rtol=1e-5)


def test_training_queries_naming_documents_outside_the_index_are_refused(query_set, tmp_path):
    from indexing.errors import DataError
    from training.query_trainer import QueryTrainer

    ds, flat, _ = query_set
    bad = tmp_path / "ds"
    bad.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (bad / name).write_bytes((ds / name).read_bytes())
    (bad / "qrels").mkdir()
    (bad / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nqv1\tdv1\t1\nqv2\tnowhere\t1\n")
    with pytest.raises(DataError, match="nowhere.*not in the index") as e:
        QueryTrainer(_config(tmp_path, bad), flat)
    assert "train.tsv" in str(e.value)


# -- inference-free sparse indexes: the query weights train ----------------------------------
@pytest.fixture(scope="module")
def sparse_index(query_set, tiny_mlm, tmp_path_factory):
    ds = query_set[0]
    idx = tmp_path_factory.mktemp("sparse") / "idf"
    result = CliRunner().invoke(cli.main, ["index", str(ds), str(idx), "--kind", "sparse", "--model", str(tiny_mlm),
                                           "--query-mode", "idf", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return idx


def test_token_weight_queries_score_as_the_impact_index_does(query_set, sparse_index, tmp_path, one_torch_thread):
    from training.query_trainer import QueryTrainer

    ds = query_set[0]
    trainer = QueryTrainer(_config(tmp_path, ds, lr=1e-2, temperature=1.0), sparse_index)
    texts = ["vitamin d bone fracture", "coffee tea awake", "search index term"]
    with torch.no_grad():
        q = trainer._encode(trainer.model.tokenize(texts, "query"), "query")
        scores = q @ trainer.model.docs.vectors(torch.arange(len(trainer.docids))).t()
    r = Retriever.load(sparse_index)
    for text, row, ids in zip(texts, scores, trainer.side.search(q, 5)):
        hits = r.search(text, k=5)
        assert [h.docid for h in hits] == [trainer.docids[i] for i in ids]
        np.testing.assert_allclose([h.score for h in hits], row.topk(5).values.numpy(), rtol=1e-5)


def test_inference_free_query_weights_train_and_round_trip(query_set, sparse_index, tmp_path, one_torch_thread):
    from retriever.kinds.sparse import QUERY_WEIGHTS

    ds = query_set[0]
    out = tmp_path / "learned"
    result = _train(ds, sparse_index, out, "--dev-fraction", "0", "--lr", "0.05")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["query"]["mode"] == "learned" and manifest["query_training"]["steps"] == 4
    before, after = np.load(sparse_index / QUERY_WEIGHTS), np.load(out / QUERY_WEIGHTS)
    assert before.shape == after.shape and not np.allclose(before, after) and (after >= 0).all()
    assert (out / "postings.npy").read_bytes() == (sparse_index / "postings.npy").read_bytes()
    # searches use the trained weights: the same ranking as scoring with them by hand
    from training.index_documents import ImpactDocuments
    from indexing.inverted import InvertedIndex

    index = InvertedIndex.load(out, num_docs=manifest["doc_count"], scale=manifest["impacts"]["scale"],
                               layout=InvertedIndex.layout_of(manifest))
    docs = ImpactDocuments(index).matrix
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(manifest["encoder"]["model"])
    text = "coffee caffeine sleep"
    ids = sorted({i for i in tok(text)["input_ids"] if i not in tok.all_special_ids})
    q = np.zeros(docs.shape[1], np.float32)
    q[ids] = after[ids]
    by_hand = docs @ q
    hits = Retriever.load(out).search(text, k=5)
    np.testing.assert_allclose([h.score for h in hits], np.sort(by_hand)[::-1][:5], rtol=1e-5)


def test_skip_top_leaves_out_the_first_non_positives(query_set, tmp_path, one_torch_thread):
    from training.query_trainer import QueryTrainer

    ds, flat, _ = query_set
    trainer = QueryTrainer(_config(tmp_path, ds, group_size=4), flat, depth=12, skip_top=3)
    groups = trainer.plan.batch(0)
    with torch.no_grad():
        q = trainer._encode(trainer.model.tokenize([g.query for g in groups], "query"), "query")
    for g, row, found in zip(groups, trainer._live_groups(groups, q), trainer.side.search(q, 12)):
        ranked = [trainer.docids[i] for i in found if trainer.docids[i] not in trainer.positives[g.qid]]
        assert not set(row.doc_ids[1:]) & set(ranked[:3]) and set(row.doc_ids[1:]) <= set(ranked[3:])
    with pytest.raises(ValueError, match="skip-top"):
        QueryTrainer(_config(tmp_path, ds), flat, depth=5, skip_top=5)


def test_a_second_run_on_the_same_output_stops_at_once(query_set, tmp_path):
    from indexing.manifest import WriterLock

    ds, flat, _ = query_set
    out = tmp_path / "busy"
    held = WriterLock(out.with_name("busy.train"))  # as a running `train query --out busy` holds it
    try:
        result = _train(ds, flat, out)
        assert result.exit_code != 0 and "another process" in result.output
        assert not out.exists()
    finally:
        held.release()


def test_a_learned_temperature_is_calibrated_on_the_live_groups(query_set, tmp_path, one_torch_thread, monkeypatch):
    """Calibration scores what training scores: each query's positive and the negatives retrieved
    for it (``batch_vectors``), not the plan's positive-only groups."""
    import training.trainer as trainer_module
    from training.query_trainer import QueryTrainer

    ds, flat, _ = query_set
    trainer = QueryTrainer(_config(tmp_path, ds, group_size=4, learn_temperature=True), flat, depth=8)
    seen = []

    def fake_best(batches):
        seen.extend(batches)
        return 0.25

    monkeypatch.setattr(trainer_module, "best_temperature", fake_best)
    assert trainer.calibrate_temperature() == 0.25
    assert trainer.contrastive.temperature == pytest.approx(0.25)
    assert seen
    for scores, targets, exclude in seen:
        n = len(targets)
        assert scores.shape == exclude.shape == (n, n * 4)  # in-batch: every query's 4 passages
        assert targets.tolist() == [4 * i for i in range(n)]


def test_train_query_learns_its_temperature_by_default_on_a_dense_index(query_set, tmp_path, one_torch_thread):
    ds, flat, _ = query_set
    out = tmp_path / "lt"
    assert _train(ds, flat, out).exit_code == 0
    summary = json.loads((tmp_path / "lt.train" / "training_summary.json").read_text())
    start, end = summary["temperature"]["start"], summary["temperature"]["end"]
    assert 1e-4 <= start <= 1e4 and start != 0.05 and end > 0
    assert _train(ds, flat, tmp_path / "fixed", "--fixed-temperature").exit_code == 0
    assert "temperature" not in json.loads((tmp_path / "fixed.train" / "training_summary.json").read_text())


def test_inference_free_query_weights_can_learn_their_temperature(query_set, sparse_index, tmp_path,
                                                                  one_torch_thread):
    """Not the sparse recipe's default, but a flag that works there too: calibrated on the live
    groups of the impact index, logged, and recorded in the summary."""
    ds = query_set[0]
    out = tmp_path / "learned-t"
    result = _train(ds, sparse_index, out, "--lr", "0.05", "--learn-temperature")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "learned-t.train" / "training_summary.json").read_text())
    assert 1e-4 <= summary["temperature"]["start"] <= 1e4 and summary["temperature"]["end"] > 0
    assert read_manifest(out)["query"]["mode"] == "learned"
