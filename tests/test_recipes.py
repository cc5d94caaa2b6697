"""The default flags of `retriever train dense|splade|query` are the measured recipes (training.recipes)."""

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from retriever import cli
from retriever.cli import train as train_cli
from training.recipes import QUERY_RECIPES, RECIPES, query_recipe, recipe


@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake_run(make_encoder, flags, extra):
        seen.update(flags)
        seen.update(extra)

    monkeypatch.setattr(train_cli, "run_training", fake_run)
    return seen


def _args(kind, beir_dir, tmp_path, *extra):
    negatives = tmp_path / "neg.jsonl"
    negatives.write_text("")
    return ["train", kind, "--model", "m", "--dataset", str(beir_dir), "--negatives", str(negatives),
            "--out", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize("kind", ["dense", "splade"])
def test_plain_command_trains_with_its_recipe(kind, beir_dir, tmp_path, captured):
    result = CliRunner().invoke(cli.main, _args(kind, beir_dir, tmp_path))
    assert result.exit_code == 0, result.output
    for key, value in recipe(kind).items():
        assert captured[key] == value, key


def test_a_flag_on_the_line_overrides_the_recipe(beir_dir, tmp_path, captured):
    result = CliRunner().invoke(cli.main, _args("dense", beir_dir, tmp_path, "--group-size", "8", "--lr", "1e-5"))
    assert result.exit_code == 0, result.output
    assert captured["group_size"] == 8 and captured["lr"] == 1e-5
    assert captured["batch_size"] == RECIPES["dense"]["batch_size"]


def test_recipes_are_what_was_measured():
    # docs/BENCHMARKS.md "Training recipes on a second domain": change both together
    assert recipe("dense") == {"batch_size": 32, "group_size": 2, "max_length": 128, "epochs": 5.0, "lr": 3e-5}
    recipe("dense")["lr"] = 1.0  # a copy
    assert RECIPES["dense"]["lr"] == 3e-5
    with pytest.raises(ValueError, match="no training recipe for 'colbert'"):
        recipe("colbert")


@pytest.fixture
def query_run(monkeypatch, beir_dir, tmp_path):
    """`retriever train query` on an index of a given kind, the trainer replaced by one that records
    its config and options."""
    from indexing import manifest
    from training import query_trainer

    seen = {}

    class Recorder:
        def __init__(self, config, index, **options):
            seen.update(vars(config), **options)
            self.model = SimpleNamespace(docs=SimpleNamespace(trainable=False))

        def train(self):
            return {"best": None, "steps": 0, "history": []}

    monkeypatch.setattr(query_trainer, "QueryTrainer", Recorder)
    monkeypatch.setattr(query_trainer, "write_index", lambda *a, **k: None)
    index = tmp_path / "idx"
    index.mkdir()

    def run(kind, *extra):
        monkeypatch.setattr(manifest, "read_manifest", lambda root: {"kind": kind, "encoder": {"model": "m"}})
        result = CliRunner().invoke(cli.main, ["train", "query", "--index", str(index), "--dataset", str(beir_dir),
                                               "--out", str(tmp_path / f"out-{kind}"), *extra])
        assert result.exit_code == 0, result.output
        return dict(seen)

    return run


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_query_training_takes_the_recipe_of_its_index_kind(kind, query_run):
    seen = query_run(kind)
    assert {k: seen[k] for k in QUERY_RECIPES[kind]} == QUERY_RECIPES[kind]


def test_query_recipes_are_what_was_measured():
    # docs/BENCHMARKS.md "Live against static negatives": change both together
    assert query_recipe("dense") == {"group_size": 32, "depth": 32, "in_batch": True, "epochs": 10.0, "lr": 2e-5,
                                     "temperature": 0.05, "learn_temperature": True}
    assert query_recipe("sparse")["lr"] == 0.1 and query_recipe("sparse")["in_batch"] is True
    with pytest.raises(ValueError, match="no query-training recipe for 'hybrid'"):
        query_recipe("hybrid")


def test_flags_on_the_line_override_the_query_recipe(query_run):
    seen = query_run("dense", "--no-in-batch", "--depth", "50", "--group-size", "4", "--fixed-temperature")
    assert (seen["in_batch"], seen["depth"], seen["group_size"], seen["learn_temperature"]) == (False, 50, 4, False)
    assert seen["epochs"] == 10.0 and seen["lr"] == 2e-5
    assert query_run("sparse", "--no-in-batch")["in_batch"] is False
    assert query_run("sparse", "--learn-temperature")["learn_temperature"] is True


def test_splade_recipe_learns_its_temperature_with_flops():
    assert recipe("splade") == {"batch_size": 32, "group_size": 2, "max_length": 128, "epochs": 5.0, "lr": 1e-4,
                                "learn_temperature": True, "lambda_q": 1e-3, "lambda_d": 1e-3, "flops_warmup": 40}


def test_the_fixed_temperature_flag_turns_the_recipe_s_learned_one_off(beir_dir, tmp_path, captured):
    result = CliRunner().invoke(cli.main, _args("splade", beir_dir, tmp_path, "--fixed-temperature", "--lambda-d", "0"))
    assert result.exit_code == 0, result.output
    assert captured["learn_temperature"] is False and captured["lambda_d"] == 0 and captured["lambda_q"] == 1e-3
