"""The command line, run in-process through click's test runner."""

import json

from click.testing import CliRunner

from retriever import api, cli


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


def test_cli_kinds_match_the_api():
    assert set(cli.KIND_NAMES) == set(api.kinds())


def test_index_search_eval_info(beir_dir, tmp_path):
    idx = tmp_path / "idx"
    res = run("index", beir_dir, idx, "--quiet")
    assert res.exit_code == 0 and "indexed 6 documents" in res.output
    res = run("search", idx, "vitamin D fractures", "-k", "2")
    assert res.exit_code == 0
    first = res.output.splitlines()[0].split()
    assert first[0] == "1" and first[1] in {"d1", "q1"} and "Vitamin D" in res.output
    out_json = tmp_path / "m.json"
    res = run("eval", "--index", idx, "--dataset", beir_dir, "--json", out_json,
              "--metrics", "ndcg@10,recall@100,mrr@10,map@100,p@1", "--save-run", tmp_path / "r.trec")
    assert res.exit_code == 0 and "ndcg@10" in res.output
    payload = json.loads(out_json.read_text())
    assert payload["dataset"] == "toy" and payload["split"] == "test" and payload["num_queries"] == 3
    # q1's own document (id "q1") is dropped by the BEIR convention, so d1 ranks first
    assert payload["metrics"]["p@1"] == 1.0
    res = run("eval", "--run", tmp_path / "r.trec", "--dataset", beir_dir, "--json", tmp_path / "m2.json")
    assert res.exit_code == 0
    assert json.loads((tmp_path / "m2.json").read_text())["metrics"]["ndcg@10"] == payload["metrics"]["ndcg@10"]
    res = run("info", idx, "--verify")
    assert res.exit_code == 0 and "documents  6" in res.output and "checksums  ok" in res.output


def test_batch_search_writes_a_trec_run(beir_dir, tmp_path):
    idx = tmp_path / "idx"
    run("index", beir_dir, idx, "--quiet", "--fields", "multifield", "--k1", "1.2", "--b", "0.75")
    tsv = tmp_path / "q.tsv"
    tsv.write_text("a\tcoffee sleep\nb\tinverted index\n")
    res = run("search", idx, "--queries", tsv, "--run", tmp_path / "out.trec", "-k", "3")
    assert res.exit_code == 0
    lines = (tmp_path / "out.trec").read_text().splitlines()
    assert lines[0].split()[:4] == ["a", "Q0", lines[0].split()[2], "1"]
    assert {l.split()[0] for l in lines} == {"a", "b"} and len(lines) <= 6


def test_errors_are_one_clean_line(beir_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    res = CliRunner().invoke(cli.main, ["index", str(bad), str(tmp_path / "i"), "--quiet"])
    assert res.exit_code == 1 and "bad.jsonl:2" in res.output and "duplicate" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(cli.main, ["eval", "--index", str(tmp_path / "nope"), "--dataset", str(beir_dir)])
    assert res.exit_code == 1 and "no such index" in res.output
    run("index", beir_dir, tmp_path / "idx", "--quiet")
    res = CliRunner().invoke(cli.main, ["eval", "--index", str(tmp_path / "idx"), "--dataset", str(beir_dir),
                                        "--split", "dev"])
    assert res.exit_code == 1 and "available splits: test" in res.output
    res = CliRunner().invoke(cli.main, ["eval", "--index", str(tmp_path / "idx"), "--dataset", str(beir_dir),
                                        "--metrics", "ndcg10"])
    assert res.exit_code == 1 and "unknown metric" in res.output
    res = CliRunner().invoke(cli.main, ["search", str(tmp_path / "idx")])
    assert res.exit_code == 2 and "QUERY" in res.output


def test_load_options_that_do_not_apply_are_refused(beir_dir, tmp_path):
    run("index", beir_dir, tmp_path / "idx", "--quiet")
    res = CliRunner().invoke(cli.main, ["search", str(tmp_path / "idx"), "coffee", "--nprobe", "4"])
    assert res.exit_code == 1 and "takes no load option(s) nprobe" in res.output
