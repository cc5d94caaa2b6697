"""Ensemble teachers for mining: models and indexes scoring given candidates, per-query
normalisation and weights, the mix recorded in the negatives file, distillation from it."""

import hashlib
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from eval.beir import BeirDataset
from indexing.corpus import doc_text, iter_corpus
from retriever import Retriever, cli
from retriever.encoders.dense import DenseEncoder
from retriever.encoders.models import fingerprint
from test_training import write_train_set
from training.data import read_negatives
from training.mining import mine, write_negatives
from training.teachers import Ensemble, HybridTeacher, SearchTeacher, check_mix


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 16-document training set (12 train queries) and a BM25 index of it."""
    root = tmp_path_factory.mktemp("ensemble")
    ds, _ = write_train_set(root / "ds")
    Retriever.build(ds, root / "bm25")
    d = BeirDataset(ds)
    return ds, root / "bm25", d.qrels("train"), d.split_queries("train")


@pytest.fixture(scope="module")
def dense_index(data, tiny_mlm, tmp_path_factory):
    """A Flat dense index of the training set with the tiny model (every document a candidate)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Retriever.build(data[0], tmp_path_factory.mktemp("dense") / "dense", kind="dense",
                               model=str(tiny_mlm), faiss="Flat", device="cpu", doc_max_length=32).path
    finally:
        torch.set_num_threads(threads)


def _run_of_everything(ds, queries):
    """Every document a candidate of every query (so each candidate is kept and scored)."""
    ids = [d.docid for d in iter_corpus(ds)]
    return {q: {d: float(len(ids) - i) for i, d in enumerate(ids)} for q in queries}


def _norm(x: np.ndarray, how: str) -> np.ndarray:
    if how == "zscore":
        return (x - x.mean()) / x.std()
    return (x - x.min()) / (x.max() - x.min())


@pytest.mark.parametrize("norm", ["zscore", "minmax"])
def test_two_teachers_give_the_normalised_weighted_sum(data, tiny_mlm, one_torch_thread, norm):
    ds, bm25_dir, qrels, queries = data
    enc = DenseEncoder(str(tiny_mlm), device="cpu")
    bm25 = Retriever.load(bm25_dir)
    # start at k=1 and double: the deepening search reaches every candidate (or the whole collection)
    teacher = Ensemble([enc, SearchTeacher(bm25, "bm25", {"kind": "index"}, start_k=1, deeper=2)],
                       weights=[0.3, 0.7], norm=norm)
    records, report = mine(_run_of_everything(ds, queries), qrels, max_negatives=16, teacher=teacher,
                           margin=math.inf, queries=queries, corpus=ds)
    assert report.dropped_by_teacher == 0 and len(records) == 12
    texts = {d.docid: doc_text(d) for d in iter_corpus(ds)}
    for rec in records:
        ids = rec["pos"] + rec["neg"]  # every document of the corpus but the query's own id
        dense = enc.encode_documents([texts[d] for d in ids]) @ enc.encode_queries([queries[rec["qid"]]])[0]
        hits = bm25.search_batch({"q": queries[rec["qid"]]}, k=len(bm25))["q"]
        sparse = np.array([hits.get(d, 0.0) for d in ids])  # a document matching no term scores 0
        want = 0.3 * _norm(dense.astype(np.float64), norm) + 0.7 * _norm(sparse, norm)
        got = rec["pos_scores"] + rec["neg_scores"]
        assert got == pytest.approx(want.tolist(), abs=1e-5)
        assert rec["teacher"] == {"teachers": [{"kind": "model", "model": str(tiny_mlm),
                                                "fingerprint": fingerprint(str(tiny_mlm))}, {"kind": "index"}],
                                  "weights": [0.3, 0.7], "norm": norm}


def test_ensemble_margin_is_measured_from_the_lowest_score(data, tiny_mlm, one_torch_thread):
    ds, bm25_dir, qrels, queries = data
    teacher = Ensemble([DenseEncoder(str(tiny_mlm), device="cpu"),
                        SearchTeacher(Retriever.load(bm25_dir), "bm25", {"kind": "index"})])
    run = _run_of_everything(ds, queries)
    everything, _ = mine(run, qrels, max_negatives=16, teacher=teacher, margin=math.inf, queries=queries, corpus=ds)
    kept, report = mine(run, qrels, max_negatives=16, teacher=teacher, margin=0.5, queries=queries, corpus=ds)
    dropped = 0
    for full, rec in zip(everything, kept):
        scores = full["pos_scores"] + full["neg_scores"]
        lo, best = min(scores), max(full["pos_scores"])
        want = [d for d, t in zip(full["neg"], full["neg_scores"]) if t - lo <= 0.5 * (best - lo)]
        assert rec["neg"] == want and rec["pos_scores"] == full["pos_scores"]
        dropped += len(full["neg"]) - len(want)
    assert report.dropped_by_teacher == dropped > 0


def _mine(ds, index, out, *args):
    return CliRunner().invoke(cli.main, ["mine", str(index), "--dataset", str(ds), "--out", str(out),
                                         "--max-negatives", "4", "--device", "cpu", *args])


@pytest.mark.parametrize("flags, message", [
    (["--teacher-weights", "1"], "1 teacher weights for 2 teachers"),
    (["--teacher-weights", "0.5,-0.5"], ">= 0"),
    (["--teacher-weights", "0.5,nan"], "finite"),
    (["--teacher-weights", "0,0"], "all 0"),
    (["--teacher-weights", "1e308,1e308"], "at most 1e+06"),  # the mixed scores overflowed to inf
    (["--teacher-norm", "softmax"], "softmax"),
])
def test_weights_and_norm_are_checked(data, tiny_mlm, tmp_path, flags, message):
    ds, bm25_dir, *_ = data
    res = _mine(ds, bm25_dir, tmp_path / "n.jsonl", "--teacher", str(tiny_mlm), "--teacher", str(bm25_dir), *flags)
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "n.jsonl").exists()
    res = _mine(ds, bm25_dir, tmp_path / "n.jsonl", "--teacher-norm", "minmax")
    assert res.exit_code == 2 and "give them with --teacher" in res.output
    with pytest.raises(ValueError, match="2 teacher weights for 3"):
        check_mix(3, [1.0, 1.0], "zscore")


def test_a_teacher_that_is_neither_model_nor_index_is_refused(data, tmp_path):
    ds, bm25_dir, *_ = data
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    res = _mine(ds, bm25_dir, tmp_path / "n.jsonl", "--teacher", str(tmp_path / "junk"))
    assert res.exit_code == 2 and "neither an index" in res.output and "junk" in res.output
    res = _mine(ds, bm25_dir, tmp_path / "n.jsonl", "--teacher", str(tmp_path / "missing" / "model"))
    assert res.exit_code == 2 and "no such index or model" in res.output


def _legacy(run, qrels, enc, queries, ds, max_negatives, margin):
    """Mining with one model teacher exactly as it was before ensembles (the oracle of bytes)."""
    docs = {d.docid: d for d in iter_corpus(ds)}
    plans = []
    for qid, judged in qrels.items():
        pos = sorted(d for d, rel in judged.items() if rel > 0)
        ranked = sorted(run.get(qid, {}).items(), key=lambda x: (-x[1], x[0]))
        cands = [(d, s) for d, s in ranked if d not in set(pos) | {qid} and d in docs][: 2 * max_negatives]
        plans.append((qid, pos, cands))
    needed = sorted({d for _, pos, c in plans for d in pos} | {d for *_, c in plans for d, _ in c})
    row = {d: i for i, d in enumerate(needed)}
    vecs = enc.encode_documents([doc_text(docs[d]) for d in needed])
    out = []
    for (qid, pos, cands), q in zip(plans, enc.encode_queries([queries[qid] for qid, *_ in plans])):
        scores = [float(s) for s in vecs[[row[d] for d in pos]] @ q]
        kept = [(d, t) for d, t in ((d, float(vecs[row[d]] @ q)) for d, _ in cands) if not t > margin * max(scores)]
        kept = kept[:max_negatives]
        out.append({"qid": qid, "pos": pos, "neg": [d for d, _ in kept], "neg_scores": [t for _, t in kept],
                    "pos_scores": scores, "teacher": enc.model_name})
    return out


def test_a_single_teacher_writes_the_same_bytes_as_before(data, tiny_mlm, tmp_path, one_torch_thread):
    ds, bm25_dir, qrels, queries = data
    res = _mine(ds, bm25_dir, tmp_path / "one.jsonl", "--teacher", str(tiny_mlm), "--margin", "0.99")
    assert res.exit_code == 0, res.output
    run = Retriever.load(bm25_dir).search_batch(queries, k=200)
    write_negatives(_legacy(run, qrels, DenseEncoder(str(tiny_mlm), device="cpu"), queries, ds, 4, 0.99),
                    tmp_path / "legacy.jsonl")
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "legacy.jsonl").read_bytes()


def test_the_file_records_the_mix_and_distillation_trains_on_it(data, dense_index, tiny_mlm, tmp_path,
                                                               one_torch_thread):
    ds, bm25_dir, *_ = data
    out = tmp_path / "ens.jsonl"
    res = _mine(ds, dense_index, out, "--teacher", str(tiny_mlm), "--teacher", str(bm25_dir),
                "--teacher-norm", "minmax", "--margin", "1e9")
    assert res.exit_code == 0, res.output
    records = [json.loads(x) for x in out.read_text().splitlines()]
    manifest_sha = hashlib.sha256((bm25_dir / "manifest.json").read_bytes()).hexdigest()
    assert all(r["teacher"] == {
        "teachers": [{"kind": "model", "model": str(tiny_mlm), "fingerprint": fingerprint(str(tiny_mlm))},
                     {"kind": "index", "index": str(bm25_dir), "index_kind": "bm25", "backend": "native",
                      "fingerprint": manifest_sha}],
        "weights": [0.5, 0.5], "norm": "minmax"} for r in records)
    assert all(0 <= s <= 1 for r in records for s in r["pos_scores"] + r["neg_scores"])
    assert all(r["neg"] for r in records)  # (the trainer distils only from mined negatives)
    examples, has_teacher = read_negatives(out)
    assert has_teacher and len(examples) == 12
    res = CliRunner().invoke(cli.main, [
        "--debug", "train", "dense", "--model", str(tiny_mlm), "--dataset", str(ds), "--negatives", str(out),
        "--out", str(tmp_path / "student"), "--batch-size", "4", "--group-size", "2", "--max-steps", "2",
        "--lr", "1e-3", "--max-length", "32", "--query-max-length", "16", "--dev-fraction", "0",
        "--device", "cpu", "--distill", "margin-mse"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "student" / "training_summary.json").is_file()


def test_index_teachers_give_the_index_scores(data, dense_index, tmp_path, one_torch_thread):
    """A dense index scores by its encoder (= its Flat search), a hybrid by its own fusion."""
    from retriever.cli.mine import _open_teacher
    from retriever.kinds.hybrid import compose

    ds, bm25_dir, qrels, queries = data
    dense = Retriever.load(dense_index)
    hybrid_dir = compose(bm25_dir, dense.path, tmp_path / "h", method="zscore", weights=[0.4, 0.6], depth=5)
    docs = {d.docid: d for d in iter_corpus(ds)}
    groups = [(q, sorted(qrels[q]), sorted(set(docs) - set(qrels[q]) - {q})) for q in sorted(queries)[:4]]
    for where in (dense.path, hybrid_dir):
        teacher = _open_teacher("index", str(where), "cpu")
        assert isinstance(teacher, HybridTeacher) == (where == hybrid_dir)
        r = Retriever.load(where)
        for (qid, pos, cands), (ps, cs) in zip(groups, teacher.score(queries, groups, docs)):
            got = dict(zip(pos + cands, ps + cs))
            hits = r.search_batch({qid: queries[qid]}, k=len(r))[qid]  # a hybrid returns its components' union
            assert {d: got[d] for d in hits} == pytest.approx(hits, abs=1e-5)
            if where == dense.path:
                assert set(hits) == set(got)
