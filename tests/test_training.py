"""The shared trainer on a tiny random model: data, loss composition, gradient caching, resume,
two processes, and the trained model loading back as an index model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from indexing.errors import DataError
from tests.conftest import writes_fail_past
from retriever import cli
from training.data import BatchPlan, Group, TrainingData, read_negatives
from training.encoders import DenseTrainEncoder
from training.losses import ContrastiveLoss, group_targets
from training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
TOPICS = {  # documents d{topic}{i}; queries about a topic have that topic's documents as positives
    "v": "vitamin d sunlight skin bone bones hip fracture risk",
    "c": "coffee tea caffeine adenosine receptor awake sleep late",
    "s": "search engine index inverted term terms document query",
    "r": "river water city house car road tree green",
}


def write_train_set(root: Path) -> tuple[Path, Path]:
    """A BEIR directory (16 docs, 12 train queries) and a negatives file for it."""
    rng = np.random.default_rng(0)
    docs, queries, qrels, negs = [], [], [], []
    for t, words in TOPICS.items():
        w = words.split()
        for i in range(4):
            docs.append({"_id": f"d{t}{i}", "title": w[i], "text": " ".join(rng.choice(w, 12))})
        for j in range(3):
            qid = f"q{t}{j}"
            queries.append({"_id": qid, "text": " ".join(rng.choice(w, 4))})
            pos = [f"d{t}{j}"] + ([f"d{t}3"] if j == 0 else [])  # q?0 has two positives
            qrels += [(qid, p) for p in pos]
            same_topic = next(f"d{t}{k}" for k in range(3) if f"d{t}{k}" not in pos)
            neg = [same_topic] + [f"d{o}0" for o in TOPICS if o != t]  # d?0: another query's positive
            negs.append({"qid": qid, "pos": pos, "neg": neg, "neg_scores": [1.0, 0.5, 0.4, 0.3]})
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nqv1\tdv1\t1\n", encoding="utf-8")
    negatives = root.parent / "negatives.jsonl"
    negatives.write_text("".join(json.dumps(n) + "\n" for n in negs), encoding="utf-8")
    return root, negatives


@pytest.fixture
def train_set(tmp_path):
    return write_train_set(tmp_path / "ds")


def config(tmp_path, model, ds, negatives, **kw) -> TrainConfig:
    base = {"model": str(model), "dataset": str(ds), "negatives": str(negatives), "out": str(tmp_path / "out"),
            "batch_size": 4, "group_size": 3, "lr": 1e-3, "max_length": 32, "query_max_length": 16,
            "device": "cpu", "dev_fraction": 0, "seed": 5, "log_every": 1}
    base.update(kw)
    return TrainConfig(**base)


class Interrupted(Exception):
    """What ``stop_at``'s callback raises: a run killed between two optimiser steps."""


def stop_at(step: int):
    """An ``on_step`` callback that interrupts the run after optimiser step ``step``."""
    def on_step(done: int) -> None:
        if done == step:
            raise Interrupted

    return on_step


def make_trainer(cfg: TrainConfig, **kw) -> Trainer:
    return Trainer(cfg, lambda: DenseTrainEncoder(cfg.model, max_length=cfg.max_length,
                                                  query_max_length=cfg.query_max_length), **kw)


# -- data ---------------------------------------------------------------------------------
def test_negatives_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "n.jsonl"
    bad.write_text('{"qid": "a", "pos": ["x"], "neg": []}\n{"qid": "b", "pos": []  , "neg": []}\n')
    with pytest.raises(DataError, match=r"n\.jsonl:2: query 'b' has no positive"):
        read_negatives(bad)
    bad.write_text('{"qid": "a", "pos": ["x"], "neg": ["y"], "neg_scores": [1, 2]}\n')
    with pytest.raises(DataError, match=r":1: neg_scores has 2 entries for 1 ids"):
        read_negatives(bad)
    bad.write_text('{"qid": "a", "pos": ["x"], "neg": []}\nnot json\n')
    with pytest.raises(DataError, match=r":2: malformed JSON"):
        read_negatives(bad)
    # retrieval scores are not teacher scores; a teacher record has both sides and a name
    bad.write_text('{"qid": "a", "pos": ["x"], "neg": ["y"], "neg_scores": [3.0]}\n')
    assert read_negatives(bad)[1] is False
    bad.write_text('{"qid": "a", "pos": ["x"], "neg": ["y"], "neg_scores": [3.0], "pos_scores": [4.0], "teacher": "t"}\n')
    examples, has_teacher = read_negatives(bad)
    assert has_teacher and examples[0].pos_scores == [4.0]


def test_unknown_documents_are_reported(train_set, tmp_path):
    ds, negatives = train_set
    lines = negatives.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["neg"].append("nope")
    rec["neg_scores"].append(0.0)
    negatives.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
    with pytest.raises(DataError, match="not in the corpus, e.g. 'nope'"):
        TrainingData.load(ds, negatives)


def test_dev_carve_and_pool(train_set):
    ds, negatives = train_set
    data = TrainingData.load(ds, negatives, dev_fraction=0.3, dev_docs=10)
    assert data.dev and data.train
    assert not {e.qid for e in data.dev} & {e.qid for e in data.train}
    needed = {d for e in data.dev for d in e.pos + e.neg}
    assert needed <= set(data.dev_pool) and len(data.dev_pool) == max(10, len(needed))
    assert len(set(data.dev_pool)) == len(data.dev_pool)
    full = TrainingData.load(ds, negatives, dev_fraction=0.3, dev_docs=0)
    assert len(full.dev_pool) == 16


def test_batches_are_a_function_of_the_step_and_never_use_a_positive_as_negative(train_set):
    ds, negatives = train_set
    data = TrainingData.load(ds, negatives, dev_fraction=0)
    plan = BatchPlan(data, batch_size=4, group_size=4, seed=1)
    again = BatchPlan(data, batch_size=4, group_size=4, seed=1)
    assert plan.steps_per_epoch == 3
    seen = []
    for step in range(6):
        groups = plan.batch(step)
        assert [(g.qid, g.doc_ids) for g in groups] == [(g.qid, g.doc_ids) for g in again.batch(step)]
        for g in groups:
            ex = next(e for e in data.train if e.qid == g.qid)
            assert g.doc_ids[0] in ex.pos and not set(g.doc_ids[1:]) & set(ex.pos)
            assert len(g.doc_ids) == 4
        seen.append(sorted(g.qid for g in groups))
    # an epoch covers every query once; the next epoch is another order
    assert sorted(q for b in seen[:3] for q in b) == sorted(e.qid for e in data.train)
    assert seen[:3] != seen[3:]


def test_random_negatives_never_loop_and_an_undrawable_query_is_refused_before_training(tiny_mlm, train_set,
                                                                                        tmp_path):
    ds, _ = train_set
    negatives = tmp_path / "n.jsonl"
    # qv0 has no negatives; the documents loaded are dv0, dv1 (its positives) and dv2: every draw is dv2
    negatives.write_text('{"qid": "qv0", "pos": ["dv0", "dv1"], "neg": []}\n'
                         '{"qid": "qv1", "pos": ["dv1"], "neg": ["dv2"]}\n')
    plan = BatchPlan(TrainingData.load(ds, negatives, dev_fraction=0), batch_size=1, group_size=4, seed=3)
    groups = [g for step in range(4) for g in plan.batch(step) if g.qid == "qv0"]
    assert groups and all(g.doc_ids[1:] == ["dv2"] * 3 for g in groups)
    # nothing to draw from: refused when the plan is made (the old sampler spun forever at the first batch)
    negatives.write_text('{"qid": "qv0", "pos": ["dv0"], "neg": []}\n')
    data = TrainingData.load(ds, negatives, dev_fraction=0)
    with pytest.raises(DataError, match=r"n\.jsonl: query 'qv0' has no negatives.*all its positives"):
        BatchPlan(data, batch_size=1, group_size=2, source=negatives)
    assert BatchPlan(data, batch_size=1, group_size=1).batch(0)[0].doc_ids == ["dv0"]  # no negative wanted
    out = tmp_path / "model"
    result = CliRunner().invoke(cli.main, ["train", "dense", "--model", str(tiny_mlm), "--dataset", str(ds),
                                           "--negatives", str(negatives), "--out", str(out), "--max-steps", "2",
                                           "--batch-size", "1", "--dev-fraction", "0", "--device", "cpu"])
    assert result.exit_code == 1 and "query 'qv0' has no negatives" in result.output, result.output
    assert not out.exists()  # refused before anything was written


def test_a_negative_that_is_a_positive_of_its_query_is_dropped(train_set, tmp_path, caplog):
    ds, _ = train_set
    negatives = tmp_path / "n.jsonl"
    negatives.write_text(
        '{"qid": "qv0", "pos": ["dv0"], "neg": ["dv0", "dv2", "dv0"], "neg_scores": [3, 2, 1], '
        '"pos_scores": [4], "teacher": "t"}\n'
        '{"qid": "qv1", "pos": ["dv1", "dv3"], "neg": ["dv3"]}\n'
        '{"qid": "qv2", "pos": ["dv2"], "neg": ["dv1"]}\n')
    with caplog.at_level("WARNING", logger="retriever"):
        examples, _ = read_negatives(negatives)
    assert [(e.qid, e.neg) for e in examples] == [("qv0", ["dv2"]), ("qv1", []), ("qv2", ["dv1"])]
    assert examples[0].neg_scores == [2.0] and examples[0].pos_scores == [4.0]  # the dropped negatives' scores go with them
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "dropped 3 negatives that are positives of their own query (2 queries" in warnings[0]
    plan = BatchPlan(TrainingData.load(ds, negatives, dev_fraction=0), batch_size=1, group_size=3, seed=0)
    for step in range(6):
        for g in plan.batch(step):
            ex = next(e for e in examples if e.qid == g.qid)
            assert not set(g.doc_ids[1:]) & set(ex.pos), g


def test_topic_batches_come_from_one_cluster(train_set):
    ds, negatives = train_set
    data = TrainingData.load(ds, negatives, dev_fraction=0)
    labels = np.array([ord(e.qid[1]) for e in data.train])  # the topic letter: 4 clusters of 3
    plan = BatchPlan(data, batch_size=3, group_size=2, seed=0, clusters=labels)
    for step in range(plan.steps_per_epoch):
        assert len({g.qid[1] for g in plan.batch(step)}) == 1


def test_topic_clusters_from_the_starting_model(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    t = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, batch_size=3, topic_batches=True, topic_clusters=4))
    assert t.plan.clusters is not None and len(set(t.plan.clusters.tolist())) == 4
    assert t.plan.steps_per_epoch == 4


# -- the loss -----------------------------------------------------------------------------
def test_loss_composes_in_batch_negatives_and_decoupled_softmax(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    t = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, temperature=0.5))
    groups = [Group("qv0", "x", ["dv0", "dc0"], None), Group("qc1", "y", ["dc1", "dv3"], None)]
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.7], [0.5, 0.5]])
    loss, parts = t.loss(q, d, groups)
    scores = q @ d.t()
    # dv3 (column 3) is qv0's second positive: out of its denominator, still a negative for qc1
    exclude = torch.tensor([[False, False, False, True], [False, False, False, False]])
    expected = ContrastiveLoss(0.5)(scores, group_targets(2, 2), exclude)
    assert loss.item() == pytest.approx(expected.item()) and parts["contrastive"] == pytest.approx(expected.item())
    # without in-batch negatives, each query competes only with its own group
    t.config.in_batch = False
    own, _ = t.loss(q, d, groups)
    by_hand = ContrastiveLoss(0.5)(torch.stack([scores[0, :2], scores[1, 2:]]), torch.zeros(2, dtype=torch.long))
    assert own.item() == pytest.approx(by_hand.item())


def test_model_selection_on_test_is_refused(tiny_mlm, train_set, tmp_path):
    ds, negatives = train_set
    with pytest.raises(ValueError, match="test queries"):
        config(tmp_path, tiny_mlm, ds, negatives, dev_split="test")


def test_distillation_needs_teacher_scores(tiny_mlm, train_set, tmp_path):
    ds, negatives = train_set
    with pytest.raises(ValueError, match="needs teacher scores"):
        make_trainer(config(tmp_path, tiny_mlm, ds, negatives, distill="margin-mse"))


def test_margin_mse_distillation_runs_from_teacher_scores(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    recs = [json.loads(x) for x in negatives.read_text().splitlines()]
    for r in recs:
        r.update(pos_scores=[2.0] * len(r["pos"]), teacher="t")
    negatives.write_text("".join(json.dumps(r) + "\n" for r in recs))
    t = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, distill="margin-mse", contrastive_weight=0.0))
    groups = t.plan.batch(0)
    assert all(g.teacher[0] == 2.0 and len(g.teacher) == 3 for g in groups)
    parts = t.micro_step(groups)
    assert parts["margin_mse"] > 0 and "contrastive" not in parts
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.model.parameters())


def test_distillation_skips_queries_without_teacher_scores(tiny_mlm, train_set, tmp_path, one_torch_thread):
    """A query mined without negatives trains on random ones that no teacher scored."""
    ds, negatives = train_set
    recs = [json.loads(x) for x in negatives.read_text().splitlines()]
    for i, r in enumerate(recs):
        r.update(pos_scores=[2.0] * len(r["pos"]), teacher="t")
        if i % 2 == 0:
            r.update(neg=[], neg_scores=[])
    negatives.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for distill in ("margin-mse", "kl"):
        t = make_trainer(config(tmp_path / distill, tiny_mlm, ds, negatives, distill=distill))
        groups = [g for step in range(t.plan.steps_per_epoch) for g in t.plan.batch(step)]
        assert sum(g.teacher is None for g in groups) and sum(g.teacher is not None for g in groups), \
            [(g.qid, g.teacher) for g in groups]
        without = [g for g in groups if g.teacher is None]
        scored = [g for g in groups if g.teacher is not None]
        name = "margin_mse" if distill == "margin-mse" else "kl"
        parts = t.micro_step(without[:2] + scored[:2])  # a mixed batch: distillation over the scored two
        assert np.isfinite(parts["loss"]) and parts[name] > 0
        parts = t.micro_step(without[:2])  # no query with teacher scores: no distillation term
        assert parts[name] == 0.0 and np.isfinite(parts["loss"])


# -- gradient caching ---------------------------------------------------------------------
def test_gradient_caching_gives_the_gradient_of_the_whole_batch(tiny_mlm, train_set, tmp_path, one_torch_thread):
    """Dropout on: pass 2 must replay each chunk's dropout masks, or the gradient is wrong."""
    from training.trainer import _chunks

    ds, negatives = train_set
    cached = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, grad_cache_chunk=3))
    groups = cached.plan.batch(0)
    cached.micro_step(groups)
    ref = make_trainer(config(tmp_path, tiny_mlm, ds, negatives))
    qb = ref._to_device(ref.model.tokenize([g.query for g in groups], "query"))
    db = ref._to_device(ref.model.tokenize([ref.data.docs[x] for g in groups for x in g.doc_ids], "doc"))
    q = torch.cat([ref._encode(s, "query") for s in _chunks(qb, 3)])  # same RNG use as pass 1
    d = torch.cat([ref._encode(s, "doc") for s in _chunks(db, 3)])
    ref.loss(q, d, groups)[0].backward()
    for (name, a), b in zip(cached.model.named_parameters(), ref.model.parameters()):
        if b.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


# -- the loop: schedule, resume, outputs --------------------------------------------------
def test_warmup_then_linear_decay(tiny_mlm, train_set, tmp_path):
    ds, negatives = train_set
    t = make_trainer(config(tmp_path, tiny_mlm, ds, negatives, max_steps=10, warmup_steps=4))
    factors = [t._lr_factor(s) for s in range(10)]
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factors[4:] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_resume_gives_the_model_of_an_uninterrupted_run(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    whole = make_trainer(config(tmp_path / "a", tiny_mlm, ds, negatives, max_steps=5, save_every=10))
    whole.train()
    before = (tmp_path / "a" / "out" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="finished training run"):  # never overwritten
        make_trainer(config(tmp_path / "a", tiny_mlm, ds, negatives, max_steps=5, save_every=10)).train()
    assert (tmp_path / "a" / "out" / "model.safetensors").read_bytes() == before

    cfg = config(tmp_path / "b", tiny_mlm, ds, negatives, max_steps=5, save_every=2)
    with pytest.raises(Interrupted):
        make_trainer(cfg, on_step=stop_at(2)).train()
    with pytest.raises(FileExistsError, match="--resume"):
        make_trainer(cfg).train()
    cfg.resume = True
    resumed = make_trainer(cfg)
    resumed.train()
    assert resumed.step == 5
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "out" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # no duplicate rows from the interrupted run
    other = config(tmp_path / "b", tiny_mlm, ds, negatives, max_steps=5, save_every=2, lr=5e-4, resume=True)
    with pytest.raises(ValueError, match="lr 0.001"):
        make_trainer(other).train()


def test_resume_drops_a_log_row_cut_short_and_names_a_damaged_one(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    cfg = config(tmp_path, tiny_mlm, ds, negatives, max_steps=4, save_every=2)
    with pytest.raises(Interrupted):
        make_trainer(cfg, on_step=stop_at(2)).train()
    log_file = tmp_path / "out" / "train_log.jsonl"
    rows = log_file.read_text()
    cfg.resume = True
    log_file.write_text(rows.replace("\n", "\n{}\n", 1))  # a damaged row before the last: named, nothing changed
    with pytest.raises(DataError, match=r"train_log.jsonl:2: malformed row"):
        make_trainer(cfg).train()
    assert log_file.read_text() == rows.replace("\n", "\n{}\n", 1)
    log_file.write_text(rows + '{"step": 3, "loss": 0.4')  # the kill (or a full disk) cut the last row
    resumed = make_trainer(cfg)
    resumed.train()
    steps = [json.loads(x)["step"] for x in log_file.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_run_that_failed_writing_its_card_says_resume_finishes_it(tiny_mlm, train_set, tmp_path, one_torch_thread):
    """A full disk after training_summary.json (the model card) left a run a rerun refused as
    finished; --resume finishes it, and the message now says so."""
    ds, negatives = train_set
    cfg = config(tmp_path, tiny_mlm, ds, negatives, max_steps=3, save_every=2)
    make_trainer(cfg).train()
    (tmp_path / "out" / "README.md").unlink()  # as the failed card write left it
    with pytest.raises(FileExistsError, match="failed as it finished .*--resume finishes it"):
        make_trainer(cfg).train()
    cfg.resume = True
    make_trainer(cfg).train()
    assert (tmp_path / "out" / "README.md").is_file()


def test_a_learned_temperature_trains_is_logged_and_resumes(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    whole = make_trainer(config(tmp_path / "a", tiny_mlm, ds, negatives, max_steps=4, save_every=10,
                                temperature=0.5, learn_temperature=True))
    whole.train()
    assert whole.contrastive.temperature != pytest.approx(0.5, abs=1e-4)  # it moved
    rows = [json.loads(x) for x in (tmp_path / "a" / "out" / "train_log.jsonl").read_text().splitlines()]
    # it started where the starting model's loss on the first batches is lowest, not at 0.5
    start = whole.start_temperature
    assert start != pytest.approx(0.5, rel=1e-3)
    summary = json.loads((tmp_path / "a" / "out" / "training_summary.json").read_text())
    assert summary["temperature"] == {"start": start, "end": whole.contrastive.temperature}
    # each row: the temperature its step's loss used
    assert rows[0]["temperature"] == pytest.approx(start) and rows[-1]["temperature"] != pytest.approx(start, abs=1e-4)
    fixed = make_trainer(config(tmp_path / "f", tiny_mlm, ds, negatives, max_steps=1, temperature=0.5))
    fixed.train()
    assert fixed.contrastive.temperature == 0.5
    assert "temperature" not in json.loads((tmp_path / "f" / "out" / "train_log.jsonl").read_text().splitlines()[0])

    cfg = config(tmp_path / "b", tiny_mlm, ds, negatives, max_steps=4, save_every=2, temperature=0.5,
                 learn_temperature=True)
    with pytest.raises(Interrupted):
        make_trainer(cfg, on_step=stop_at(2)).train()
    cfg.resume = True
    resumed = make_trainer(cfg)
    resumed.train()
    assert resumed.contrastive.temperature == whole.contrastive.temperature
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    other = config(tmp_path / "b", tiny_mlm, ds, negatives, max_steps=4, save_every=2, temperature=0.5, resume=True)
    with pytest.raises(ValueError, match="learn_temperature True"):
        make_trainer(other).train()


def test_a_run_killed_before_its_first_checkpoint_is_started_afresh_with_its_log_kept(tiny_mlm, train_set, tmp_path,
                                                                                      one_torch_thread):
    ds, negatives = train_set

    cfg = config(tmp_path, tiny_mlm, ds, negatives, max_steps=3, save_every=10)
    with pytest.raises(Interrupted):
        make_trainer(cfg, on_step=stop_at(2)).train()
    out = tmp_path / "out"
    dead = (out / "train_log.jsonl").read_text()
    assert [json.loads(x)["step"] for x in dead.splitlines()] == [1, 2]
    make_trainer(cfg).train()  # no checkpoint to resume: a new run
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (out / "train_log.interrupted.jsonl").read_text() == dead


def test_the_final_model_is_never_written_in_place(tiny_mlm, train_set, tmp_path, one_torch_thread):
    """--dev-fraction 0: the model is saved at the end; a kill while it is written leaves no
    truncated model in OUT (nor in OUT/last), and a finished run leaves no partial directories."""
    ds, negatives = train_set

    class Killed(Exception):
        pass

    cfg = config(tmp_path / "a", tiny_mlm, ds, negatives, max_steps=1)
    trainer = make_trainer(cfg)
    save = trainer.model.save

    def killed_mid_write(path):
        save(path)
        weights = Path(path) / "model.safetensors"
        os.truncate(weights, weights.stat().st_size // 2)
        raise Killed

    trainer.model.save = killed_mid_write
    with pytest.raises(Killed):
        trainer.train()
    out = Path(cfg.out)
    assert not (out / "model.safetensors").exists() and not (out / "last").exists()

    cfg = config(tmp_path / "b", tiny_mlm, ds, negatives, max_steps=1)
    trainer = make_trainer(cfg)
    trainer.train()
    out = Path(cfg.out)
    assert not list(out.glob(".*partial*"))
    from retriever.encoders.dense import DenseModel

    for model_dir in (out, out / "last"):
        loaded = DenseModel(str(model_dir)).model.state_dict()
        for name, value in trainer.model.model.state_dict().items():
            assert torch.equal(loaded[name], value.cpu()), (model_dir, name)


def test_a_truncated_model_is_a_one_line_error(tiny_mlm, train_set, tmp_path):
    import shutil

    ds, _ = train_set
    broken = tmp_path / "broken"
    shutil.copytree(tiny_mlm, broken)
    os.truncate(broken / "model.safetensors", 5000)
    result = CliRunner().invoke(cli.main, ["index", str(ds), str(tmp_path / "idx"), "--kind", "dense", "--model",
                                           str(broken), "--quiet", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    lines = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1 and f"cannot load model directory {broken} (SafetensorError" in lines[0], result.output
    assert isinstance(result.exception, SystemExit)  # a ClickException, not the loader's error


def test_training_into_an_index_directory_is_refused(tiny_mlm, train_set, tmp_path):
    from training.trainer import check_out

    ds, negatives = train_set
    idx = tmp_path / "idx"
    assert CliRunner().invoke(cli.main, ["index", str(ds), str(idx), "--quiet"]).exit_code == 0
    files = sorted(p.name for p in idx.iterdir())
    for out, says in ((idx, f"--out {idx} is an index directory"),
                      (idx / "models" / "m", f"is inside the index directory {idx}")):
        result = CliRunner().invoke(cli.main, ["train", "dense", "--model", str(tiny_mlm), "--dataset", str(ds),
                                               "--negatives", str(negatives), "--out", str(out), "--max-steps", "1",
                                               "--batch-size", "2", "--max-length", "32", "--device", "cpu"])
        assert result.exit_code == 1 and says in result.output, result.output
        assert sorted(p.name for p in idx.iterdir()) == files  # nothing written in the index (no lock either)
    with pytest.raises(ValueError, match="is an index directory"):  # the library refuses it too
        make_trainer(config(tmp_path, tiny_mlm, ds, negatives, out=str(idx)))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        check_out(a_file)
    other = tmp_path / "project"  # a manifest.json that is not an index's does not stop a run below it
    other.mkdir()
    (other / "manifest.json").write_text('{"name": "web app"}')
    check_out(other / "model")


def test_a_checkpoint_older_than_a_setting_resumes_with_that_setting_s_default(tiny_mlm, train_set, tmp_path,
                                                                                 one_torch_thread):
    ds, negatives = train_set

    cfg = config(tmp_path, tiny_mlm, ds, negatives, max_steps=3, save_every=2)
    with pytest.raises(Interrupted):
        make_trainer(cfg, on_step=stop_at(2)).train()
    state_file = next((tmp_path / "out" / "checkpoints").glob("step-*")) / "state.pt"
    state = torch.load(state_file, weights_only=True)
    for key in ("learn_temperature", "pca_init"):  # settings added after such a checkpoint was written
        state["config"].pop(key)
    del state["contrastive"]
    torch.save(state, state_file)
    cfg.resume = True
    resumed = make_trainer(cfg)
    resumed.train()
    assert resumed.step == 3
    cfg2 = config(tmp_path, tiny_mlm, ds, negatives, max_steps=3, save_every=2, learn_temperature=True, resume=True)
    with pytest.raises(ValueError, match="learn_temperature False"):  # the default it had, not None
        make_trainer(cfg2).train()


class FakeClock:
    """``time.perf_counter`` for the trainer: it moves only when a test says so."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


def clocked_trainer(cfg, monkeypatch, step_s, dev_s=0.0, **kw):
    """A trainer whose steps take ``step_s`` and dev evaluations ``dev_s`` seconds of a fake clock."""
    import training.trainer as trainer_module

    clock = FakeClock()
    monkeypatch.setattr(trainer_module, "time", clock)
    t = make_trainer(cfg, **kw)
    step, dev = t.micro_step, t.dev_metrics

    def timed_step(*a, **k):
        clock.now += step_s
        return step(*a, **k)

    def timed_dev():
        clock.now += dev_s
        return dev()

    t.micro_step, t.dev_metrics = timed_step, timed_dev
    return t, clock


def test_time_budget_fits_the_schedule_to_the_steps_that_fit(tiny_mlm, train_set, tmp_path, monkeypatch,
                                                              one_torch_thread):
    ds, negatives = train_set
    # 10 s a step, 60 s: after 3 probe steps (30 s) 3 more fit; the decay ends at step 6, not 100
    t, clock = clocked_trainer(config(tmp_path, tiny_mlm, ds, negatives, max_steps=100, max_minutes=1.0),
                               monkeypatch, step_s=10.0)
    result = t.train()
    assert result["steps"] == 6 and t.total_steps == 6 and t.planned_steps == 100
    assert clock.now - 1000.0 == pytest.approx(60.0)
    assert t.scheduler.get_last_lr()[0] == 0.0  # the linear decay reached zero at the fitted end
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["steps"] == 6 and summary["planned_steps"] == 100 and summary["max_minutes"] == 1.0
    # a budget larger than the plan changes nothing
    t2, _ = clocked_trainer(config(tmp_path / "big", tiny_mlm, ds, negatives, max_steps=5, max_minutes=60.0),
                            monkeypatch, step_s=10.0)
    assert t2.train()["steps"] == 5


def test_time_budget_counts_dev_evaluations_and_stops_past_the_budget(tiny_mlm, train_set, tmp_path,
                                                                      monkeypatch, one_torch_thread):
    ds, negatives = train_set
    # dev every 2 steps, 20 s each, steps 5 s, budget 100 s: after the probe (step 3) 55 s are spent
    # (evaluations at 0 and 2); step 4 and its evaluation fit (25 s), a 5th would cost 50
    cfg = config(tmp_path, tiny_mlm, ds, negatives, max_steps=100, max_minutes=100 / 60, dev_fraction=0.34,
                 dev_every=2)
    t, clock = clocked_trainer(cfg, monkeypatch, step_s=5.0, dev_s=20.0)
    result = t.train()
    assert result["steps"] == 4 and clock.now - 1000.0 == pytest.approx(80.0)
    assert [h["step"] for h in result["history"]] == [0, 2, 4]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    # a step that ends past the budget is the last: 100 s a step, 1 minute
    t, _ = clocked_trainer(config(tmp_path / "slow", tiny_mlm, ds, negatives, max_steps=100, max_minutes=1.0),
                           monkeypatch, step_s=100.0)
    assert t.train()["steps"] == 1


def test_a_resumed_budgeted_run_keeps_its_schedule(tiny_mlm, train_set, tmp_path, monkeypatch, one_torch_thread):
    ds, negatives = train_set

    cfg = config(tmp_path, tiny_mlm, ds, negatives, max_steps=100, max_minutes=1.0, save_every=4)
    t, _ = clocked_trainer(cfg, monkeypatch, step_s=10.0, on_step=stop_at(4))
    with pytest.raises(Interrupted):
        t.train()
    cfg.resume = True
    resumed, clock = clocked_trainer(cfg, monkeypatch, step_s=10.0)
    assert resumed.train()["steps"] == 6  # the fitted 6 steps, and 20 s left of the budget
    assert clock.now - 1000.0 == pytest.approx(20.0)


def test_max_minutes_must_be_positive(tmp_path):
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="max-minutes"):
            TrainConfig(model="m", dataset="d", negatives="n", out=str(tmp_path), max_minutes=bad)


def test_cli_trains_keeps_the_best_dev_model_and_it_indexes(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    out = tmp_path / "model"
    result = CliRunner().invoke(cli.main, [
        "train", "dense", "--model", str(tiny_mlm), "--dataset", str(ds), "--negatives", str(negatives),
        "--out", str(out), "--batch-size", "3", "--group-size", "3", "--max-steps", "4", "--lr", "1e-3",
        "--max-length", "32", "--dev-fraction", "0.3", "--dev-every", "2", "--device", "cpu",
        "--pooling", "cls", "--query-prefix", "query: "])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "training_summary.json").read_text())
    dev_steps = [h["step"] for h in summary["history"]]
    assert dev_steps == [0, 2, 4]
    best_score, best_step = summary["best"]
    assert best_score == max(h["dev_ndcg@10"] for h in summary["history"])
    assert best_step == min(h["step"] for h in summary["history"] if h["dev_ndcg@10"] == best_score)
    resolved = json.loads((out / "training_config.json").read_text())
    assert resolved["total_steps"] == 4 and resolved["encoder"]["pooling"] == "cls"
    assert resolved["distill_rescale"] is False  # dense's default: cosine scores
    # the output directory is a model: pooling and prefixes come back through retriever.encoders.dense
    from retriever.encoders.dense import DenseEncoder

    enc = DenseEncoder(str(out), device="cpu")
    assert enc.settings.pooling == "cls" and enc.settings.query_prefix == "query: "
    idx = tmp_path / "idx"
    result = CliRunner().invoke(cli.main, ["index", str(ds), str(idx), "--kind", "dense", "--model", str(out),
                                           "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    from retriever.api import Retriever

    assert len(Retriever.load(idx).search("vitamin d bone", k=3)) == 3


# -- two processes --------------------------------------------------------------------------
def test_two_processes_gather_negatives_and_match_one_process(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    out = tmp_path / "ddp"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(tiny_mlm), str(ds), str(negatives), str(out), "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(out / f"rank-{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # one process with the whole global batch of 4
    single = Trainer(TrainConfig(model=str(tiny_mlm), dataset=str(ds), negatives=str(negatives), out=str(out / "one"),
                                 batch_size=4, group_size=3, dev_fraction=0, device="cpu", seed=3, max_steps=1),
                     lambda: DenseTrainEncoder(str(tiny_mlm), max_length=32, query_max_length=16))
    single.model.eval()
    groups = single.plan.batch(0)
    assert ranks[0]["local"] + ranks[1]["local"] == [g.qid for g in groups]  # each process its slice
    parts = single.micro_step(groups)
    grads = {n: p.grad for n, p in single.model.named_parameters() if p.grad is not None}
    scale = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))
    for r in ranks:
        assert r["loss"] == pytest.approx(parts["loss"], rel=1e-5)  # labels point at own positives
        assert set(r["grads"]) == set(grads)
        for name, g in grads.items():  # float summation order differs, nothing else
            assert (r["grads"][name] - g).norm() <= 1e-4 * g.norm() + 1e-6 * scale, name


def test_a_second_training_run_on_the_same_output_stops_at_once(tiny_mlm, train_set, tmp_path):
    from indexing.manifest import WriterLock

    ds, negatives = train_set
    out = tmp_path / "model"
    held = WriterLock(out)  # as a running `train dense --out model` holds it
    try:
        result = CliRunner().invoke(cli.main, ["train", "dense", "--model", str(tiny_mlm), "--dataset", str(ds),
                                               "--negatives", str(negatives), "--out", str(out), "--max-steps", "1"])
        assert result.exit_code != 0 and "another process" in result.output
        assert not out.exists()
    finally:
        held.release()


def test_a_checkpoint_whose_save_failed_blocks_nothing(tiny_mlm, train_set, tmp_path, monkeypatch, one_torch_thread):
    """A full disk during the first checkpoint left checkpoints/.step-N.partial: `--resume` then
    found no checkpoint and a fresh run said "pass --resume" (stuck until deleted by hand). And
    torch's own error on a full disk is "[enforce fail at inline_container.cc] unexpected pos":
    it now names the file and the space left, and the partial checkpoint is removed at once."""
    import training.trainer as trainer_module

    ds, negatives = train_set
    cfg = config(tmp_path, tiny_mlm, ds, negatives, max_steps=4, save_every=2)
    real_save = torch.save

    def full_disk(*args, **kwargs):  # the disk refuses the bytes (torch's own error)
        with writes_fail_past(4096):
            real_save(*args, **kwargs)

    monkeypatch.setattr(trainer_module.torch, "save", full_disk)
    with pytest.raises(OSError, match="could not be written") as e:
        make_trainer(cfg).train()
    assert e.value.filename.endswith("state.pt") and "bytes were free there" in e.value.strerror
    assert not list((tmp_path / "out" / "checkpoints").glob(".step-*.partial"))  # its space freed
    monkeypatch.undo()
    (tmp_path / "out" / "checkpoints" / ".step-00000002.partial").mkdir()  # a save killed midway
    done = make_trainer(cfg)  # a fresh run starts (nothing to resume), and clears the partial
    done.train()
    assert done.step == 4 and not list((tmp_path / "out" / "checkpoints").glob(".step-*.partial"))
