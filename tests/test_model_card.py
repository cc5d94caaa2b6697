"""A trained model directory carries a README.md model card (hub layout) naming its base model,
data, flags, hardware, dev curve, and the test metrics `retriever eval --model-card` adds."""

import json

import pytest
from click.testing import CliRunner

from retriever import cli
from test_training import write_train_set


def front_matter(text: str) -> str:
    assert text.startswith("---\n")
    return text.split("---\n")[1]


def test_train_writes_a_card_and_eval_adds_metrics(tiny_mlm, tmp_path, one_torch_thread):
    ds, negatives = write_train_set(tmp_path / "ds")
    out = tmp_path / "model"
    res = CliRunner().invoke(cli.main, [
        "train", "dense", "--model", str(tiny_mlm), "--dataset", str(ds), "--negatives", str(negatives),
        "--out", str(out), "--batch-size", "3", "--group-size", "3", "--max-steps", "4", "--lr", "1e-3",
        "--max-length", "32", "--dev-fraction", "0.3", "--dev-every", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert f"base_model: {json.dumps(str(tiny_mlm))}" in meta and "library_name: sentence-transformers" in meta
    assert "- \"ds\"" in meta and "model-index" not in meta  # no test metrics yet
    assert str(negatives) in card and "`--lr 0.001`" in card and "`--max-steps 4`" in card
    assert "contrastive (temperature 0.05" in card and "hardware: device cpu" in card
    assert "| 0 |" in card and "| 4 |" in card  # the dev curve, from step 0
    assert "retriever index CORPUS INDEX --kind dense" in card

    idx = tmp_path / "idx"
    assert CliRunner().invoke(cli.main, ["index", str(ds), str(idx), "--kind", "dense", "--model", str(out),
                                         "--quiet", "--device", "cpu"]).exit_code == 0
    res = CliRunner().invoke(cli.main, ["eval", "--index", str(idx), "--dataset", str(ds), "--split", "test",
                                        "--model-card", str(out), "--json", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    ndcg = json.loads((tmp_path / "m.json").read_text())["metrics"]["ndcg@10"]
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert "model-index:" in meta and "type: ndcg_at_10" in meta and f"value: {ndcg:.4f}" in meta
    assert "## Evaluation" in card and f"| ds | test | {ndcg:.4f}" in card
    # a second evaluation of the same split replaces the first, another split is added
    CliRunner().invoke(cli.main, ["eval", "--index", str(idx), "--dataset", str(ds), "--split", "test",
                                  "--model-card", str(out)])
    assert len(json.loads((out / "eval_results.json").read_text())) == 1

    # the BEIR grid records its cells in the cards of the trained models it runs (--model-cards)
    config = tmp_path / "runs.yaml"
    config.write_text(json.dumps({"trained": {"kind": "dense", "model": str(out), "faiss": "Flat", "device": "cpu"}}))
    res = CliRunner().invoke(cli.main, ["beir", "--root", str(ds.parent), "--datasets", "ds", "--split", "train",
                                        "--config", str(config), "--out", str(tmp_path / "lb"), "--no-plots",
                                        "--model-cards"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "eval_results.json").read_text())
    assert [(r["dataset"], r["split"]) for r in results] == [("ds", "test"), ("ds", "train")]
    assert "| ds | train |" in (out / "README.md").read_text()


def test_model_card_refuses_a_directory_that_is_not_a_trained_model(tmp_path, beir_dir):
    from retriever import Retriever

    idx = tmp_path / "idx"
    Retriever.build(beir_dir, idx)
    res = CliRunner().invoke(cli.main, ["eval", "--index", str(idx), "--dataset", str(beir_dir),
                                        "--model-card", str(tmp_path)])
    assert res.exit_code == 1 and "training_config.json" in res.output


def test_the_card_says_when_the_temperature_was_learned():
    from training.model_card import render

    config = {"model": "m", "temperature": 1.0, "learn_temperature": True, "extra": {"lambda_d": 0.001},
              "encoder": {"kind": "splade"}}
    card = render("x", config, {"temperature": {"start": 3.6246, "end": 3.3957}, "steps": 3}, [], {}, [])
    assert "temperature learned: 3.62 at the start (the starting model's best), 3.4 at the end" in card
    resumed = render("x", config, {"temperature": {"start": None, "end": 2.0}}, [], {}, [])
    assert "temperature learned: start not recorded (a resumed run), 2 at the end" in resumed
    fixed = render("x", {**config, "learn_temperature": False}, {}, [], {}, [])
    assert "contrastive (temperature 1.0," in fixed


def test_names_in_the_card_are_escaped_and_quoted():
    """A dataset or model name from the file system cannot break the card: table cells escaped,
    code spans fenced past its backticks, the shell command quoted, the front matter UTF-8."""
    import yaml

    from training.model_card import render

    name = "my model|\U0001f600"
    results = [{"dataset": "beir/a|b<script>x</script>", "split": "test", "metrics": {"ndcg@10": 0.5}, "index": None}]
    card = render(name, {"model": "m`x", "dataset": "d|e"}, {}, results, {}, [])
    row = next(line for line in card.splitlines() if line.startswith("| beir"))
    body = card[card.index("\n---\n", 3) + 5:]  # (after the front matter)
    assert row.count(" | ") == 2 and "## Evaluation" in body and "<script>" not in body
    assert "--model 'my model|\U0001f600'" in card and "``m`x``" not in card and "`` m`x ``" in card
    front = yaml.safe_load(card.split("---")[1])
    assert front["model-index"][0]["name"] == name  # (two \u escapes read back as lone surrogates)


def test_two_evaluations_recorded_at_once_are_both_kept(tmp_path, monkeypatch):
    """Two `eval --model-card DIR` at once lost one result in 3 of 16 pairs (an unlocked
    read-modify-write of eval_results.json); the second now waits for the first."""
    import json
    import threading

    from training import model_card

    (tmp_path / "training_config.json").write_text("{}")
    real_read, both_read, done = model_card._read_json, threading.Barrier(2, timeout=2), []

    def read_and_meet(path, default):  # without the lock, both read the old list before either writes
        value = real_read(path, default)
        if path.name == model_card.RESULTS:
            try:
                both_read.wait()
            except threading.BrokenBarrierError:
                pass  # the lock kept the other out: it reads after this one has written
        return value

    monkeypatch.setattr(model_card, "_read_json", read_and_meet)
    threads = [threading.Thread(target=lambda s=s: done.append(model_card.add_results(tmp_path, "sf", s, {"ndcg@10": 0.5})))
               for s in ("test", "dev")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(done) == 2
    kept = json.loads((tmp_path / model_card.RESULTS).read_text())
    assert sorted(r["split"] for r in kept) == ["dev", "test"]


def test_a_card_that_cannot_be_written_leaves_the_results_as_the_card_shows_them(tmp_path, monkeypatch):
    """On a full disk `eval --model-card` replaced eval_results.json, then failed on README.md:
    results and card disagreed. The results now go back when the card cannot be written."""
    import errno

    from training import model_card

    (tmp_path / "training_config.json").write_text("{}")
    model_card.add_results(tmp_path, "sf", "test", {"ndcg@10": 0.5})
    results, card = (tmp_path / model_card.RESULTS).read_bytes(), (tmp_path / model_card.CARD).read_bytes()

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "could not be written (No space left on device)", str(path))

    monkeypatch.setattr(model_card, "atomic_write_text", full_disk)
    with pytest.raises(OSError, match="No space"):
        model_card.add_results(tmp_path, "sf", "dev", {"ndcg@10": 0.7})
    assert (tmp_path / model_card.RESULTS).read_bytes() == results
    assert (tmp_path / model_card.CARD).read_bytes() == card
