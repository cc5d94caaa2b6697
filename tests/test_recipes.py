"""The default flags of `retriever train dense|splade` are the measured recipes (training.recipes)."""

import pytest
from click.testing import CliRunner

from retriever import cli
from retriever.cli import train as train_cli
from training.recipes import RECIPES, recipe


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


def test_query_training_keeps_the_trainer_defaults():
    query = cli.main.commands["train"].commands["query"]
    defaults = {p.name: p.default for p in query.params}
    assert defaults["group_size"] == 8 and defaults["epochs"] == 1.0


def test_splade_recipe_learns_its_temperature_with_flops():
    assert recipe("splade") == {"batch_size": 32, "group_size": 2, "max_length": 128, "epochs": 5.0, "lr": 1e-4,
                                "learn_temperature": True, "lambda_q": 1e-3, "lambda_d": 1e-3, "flops_warmup": 40}


def test_the_fixed_temperature_flag_turns_the_recipe_s_learned_one_off(beir_dir, tmp_path, captured):
    result = CliRunner().invoke(cli.main, _args("splade", beir_dir, tmp_path, "--fixed-temperature", "--lambda-d", "0"))
    assert result.exit_code == 0, result.output
    assert captured["learn_temperature"] is False and captured["lambda_d"] == 0 and captured["lambda_q"] == 1e-3
