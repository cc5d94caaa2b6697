"""The BEIR grid: two tiny datasets x configurations, failures isolated, cache reuse and invalidation."""

import json
import shlex
from pathlib import Path

import pytest

from retriever.beir_grid import index_argv, load_config, reproduce_commands, run_grid
from tests.conftest import DOCS, write_beir

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"bm25-flat": {"kind": "bm25", "fields": "flat"},
           "bm25-mf": {"kind": "bm25", "fields": "multifield", "k1": 1.2}}


@pytest.fixture
def root(tmp_path):
    write_beir(tmp_path / "beir" / "toy-a")
    docs_b = [dict(d, _id=f"b{i}") for i, d in enumerate(DOCS)]
    write_beir(tmp_path / "beir" / "toy-b", docs=docs_b)
    (tmp_path / "beir" / "toy-b" / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tb0\t1\nq2\tb2\t1\nq3\tb4\t1\n")
    return tmp_path / "beir"


def test_grid_runs_every_cell_and_isolates_failures(root, tmp_path):
    configs = {**CONFIGS, "broken": {"kind": "sparse"}}  # no model: this configuration fails
    cells = run_grid(root, ["toy-a", "toy-b", "absent"], configs, tmp_path / "out", progress=False)
    status = {(c["dataset"], c["config"]): c["status"] for c in cells}
    assert status[("toy-a", "bm25-flat")] == status[("toy-b", "bm25-mf")] == "ok"
    assert status[("toy-a", "broken")] == "failed" and status[("absent", "bm25-flat")] == "missing"
    broken = next(c for c in cells if c["config"] == "broken")
    assert "model" in broken["error"]
    ok = next(c for c in cells if (c["dataset"], c["config"]) == ("toy-b", "bm25-flat"))
    assert 0 < ok["metrics"]["ndcg@10"] <= 1 and ok["index_bytes"] > 0 and ok["latency_ms"] >= 0
    assert (tmp_path / "out" / "runs" / "toy-b__bm25-flat.trec").is_file()
    per_query = json.loads((tmp_path / "out" / "cells" / "toy-b" / "bm25-flat" / "per_query.json").read_text())
    assert set(per_query) == {"q1", "q2", "q3"}


def test_rerun_reuses_and_a_changed_setting_rebuilds(root, tmp_path):
    out = tmp_path / "out"
    first = run_grid(root, ["toy-a", "toy-b"], CONFIGS, out, progress=False)
    manifest = out / "indexes" / "toy-a" / "bm25-mf" / "manifest.json"
    built = manifest.stat().st_mtime_ns
    again = run_grid(root, ["toy-a", "toy-b"], CONFIGS, out, progress=False)
    assert all(c["cached"] for c in again)
    assert [c["metrics"] for c in again] == [c["metrics"] for c in first]
    assert manifest.stat().st_mtime_ns == built
    changed = {**CONFIGS, "bm25-mf": {"kind": "bm25", "fields": "multifield", "k1": 0.5}}
    third = run_grid(root, ["toy-a"], changed, out, progress=False)
    assert [c["cached"] for c in third] == [True, False]
    assert manifest.stat().st_mtime_ns != built
    assert json.loads(manifest.read_text())["bm25"]["k1"] == 0.5


def test_edited_judgements_or_queries_are_evaluated_again(root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    configs = {"bm25-flat": CONFIGS["bm25-flat"]}
    first = run_grid(root, ["toy-b"], configs, out, progress=False)[0]
    qrels = root / "toy-b" / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tb5\t1\nq2\tb6\t1\n")  # other judgements
    again = run_grid(root, ["toy-b"], configs, out, progress=False)[0]
    assert not again["cached"] and again["metrics"] != first["metrics"]  # (the old nDCG, "cached", before)
    assert again["num_queries"] == 2
    # a crash after the new index is swapped in, before its key is written: no old key is left on it
    import retriever.beir_grid as grid

    key = out / "indexes" / "toy-b" / "bm25-flat.key"
    assert key.is_file()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # (where a kill -9 would land)

    monkeypatch.setattr(grid, "atomic_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        run_grid(root, ["toy-b"], {"bm25-flat": {"kind": "bm25", "fields": "flat", "k1": 3.0}}, out, progress=False)
    assert not key.exists()


def test_config_file_checks(tmp_path):
    good = tmp_path / "runs.yaml"
    good.write_text("bm25-flat: {kind: bm25, fields: flat}\nminilm: {kind: dense, model: minilm, faiss: Flat}\n")
    assert load_config(good)["minilm"] == {"kind": "dense", "model": "minilm", "faiss": "Flat"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("x: {kind: bm25, dense-model: m}\n")
    with pytest.raises(ValueError, match="underscores"):
        load_config(bad)
    bad.write_text("x: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(bad)
    bad.write_text("bm25: {kind: bm25}\nx: {kind: bm25}\nbm25: {kind: bm25, k1: 1.2}\n")
    with pytest.raises(ValueError, match=r"bad.yaml:3: not valid YAML \('bm25' is given twice\)"):
        load_config(bad)  # (the last one silently won: two configurations ran as one)
    for name in (str(tmp_path / "victim"), "../../victim", "a/b", ".", "x\\y", "tab\tname"):
        bad.write_text(json.dumps({name: {"kind": "bm25"}}))  # (JSON is YAML)
        with pytest.raises(ValueError, match="a configuration name names a directory under OUT"):
            load_config(bad)


def test_names_never_lead_outside_out(root, tmp_path):
    """Configuration and dataset names are directories under OUT, where the grid builds indexes with
    overwrite: one that leads elsewhere is refused before anything is written."""
    victim = tmp_path / "victim"
    victim.mkdir()
    for datasets, configs in ((["toy-a"], {str(victim): {"kind": "bm25"}}),
                              (["toy-a"], {"../../victim": {"kind": "bm25"}}),
                              (["../victim"], CONFIGS), ([str(victim)], CONFIGS)):
        with pytest.raises(ValueError, match="names a directory under OUT"):
            run_grid(root, datasets, configs, tmp_path / "out", progress=False)
    assert list(victim.iterdir()) == [] and not (tmp_path / "out").exists()
    assert run_grid(root, ["toy-a"], {"bm25-flat": CONFIGS["bm25-flat"]}, tmp_path / "out", progress=False)


# -- the commands that reproduce a cell (shown in leaderboard.html) -------------------------------

def test_index_argv_maps_options_to_flags():
    argv, notes = index_argv({}, "C", "O")
    assert argv == ["retriever", "index", "C", "O", "--kind", "bm25", "--overwrite", "--no-store-docs"]
    assert notes == []
    argv, notes = index_argv({"kind": "dense", "model": "m", "normalize": False, "refine": True, "int8": False,
                              "pooling": None, "query_prefix": "-q: ", "doc_max_length": 64,
                              "encode_block": 2}, "C", "O")
    assert argv[4:] == ["--kind", "dense", "--overwrite", "--no-store-docs", "--model", "m", "--no-normalize",
                        "--refine", "--query-prefix=-q: ", "--doc-max-length", "64", "--encode-block", "2"]
    assert notes == []
    argv, _ = index_argv({"kind": "dense", "normalize": True}, "C", "O")
    assert argv[-1] == "--normalize"
    argv, _ = index_argv({"kind": "hybrid", "dense_model": "m", "weights": [0.55, 0.45]}, "C", "O")
    assert argv[-4:] == ["--dense-model", "m", "--weights", "0.55,0.45"]
    argv, _ = index_argv({"kind": "bm25", "backend": "lucene", "k1": 1.2}, "C", "O")
    assert argv[4:] == ["--kind", "bm25", "--backend", "lucene", "--overwrite", "--no-store-docs", "--k1", "1.2"]
    argv, _ = index_argv({"kind": "no-such-kind", "some_option": 3, "a_flag": True}, "C", "O")
    assert argv[-3:] == ["--some-option", "3", "--a-flag"]  # the CLI will refuse it, as the grid did


def test_shipped_configs_give_commands_the_cli_accepts(tmp_path):
    from click.testing import CliRunner

    from retriever import cli

    configs = load_config(REPO / "scripts" / "data" / "runs" / "beir-leaderboard.yaml")
    commands = reproduce_commands("ROOT", ["scifact"], configs, "OUT", split="test", k=100,
                                  metrics=["ndcg@10", "recall@100"])
    assert list(commands) == list(configs)
    for name, per_dataset in commands.items():
        index_line, eval_line = per_dataset["scifact"].splitlines()
        assert shlex.split(index_line)[:4] == ["retriever", "index", "ROOT/scifact", f"OUT/reproduce/scifact/{name}"]
        assert shlex.split(eval_line) == ["retriever", "eval", "--index", f"OUT/reproduce/scifact/{name}",
                                          "--dataset", "ROOT/scifact", "--split", "test", "-k", "100",
                                          "--metrics", "ndcg@10,recall@100"]
        # every flag exists (an unknown one is a usage error before --help is handled)
        res = CliRunner().invoke(cli.main, [*shlex.split(index_line)[1:], "--help"])
        assert res.exit_code == 0, res.output
    assert "--weights 0.55,0.45" in commands["bm25+minilm"]["scifact"]


def test_notes_become_shell_comments(monkeypatch):
    import dataclasses

    from retriever import beir_grid

    fields = beir_grid._kind_fields("dense", "native")  # a setting without a flag (cli=False)
    hidden = {**fields, "encode_block": dataclasses.replace(fields["encode_block"], cli=False)}
    monkeypatch.setattr(beir_grid, "_kind_fields", lambda kind, backend: hidden)
    argv, notes = index_argv({"kind": "dense", "model": "m", "encode_block": 2}, "C", "O")
    assert "--encode-block" not in argv
    assert notes == ["encode_block=2 has no retriever index flag; the command uses the default"]
    text = reproduce_commands("R", ["d"], {"x": {"kind": "dense", "model": "m", "encode_block": 8}}, "O")["x"]["d"]
    lines = text.splitlines()
    assert lines[0].startswith("# encode_block=8") and lines[1].startswith("retriever index ")
    assert lines[2].endswith("--metrics ndcg@10,recall@100,mrr@10")
