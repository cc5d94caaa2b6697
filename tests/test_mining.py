"""Hard-negative mining: never a positive, skip/max, the teacher's false-negative filter."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from retriever import cli
from training.mining import mine

RUN = {"q1": {"p1": 9.0, "n1": 8.0, "n2": 7.0, "q1": 6.5, "p2": 6.0, "n3": 5.0, "j0": 4.0},
       "q2": {"x": 1.0}}
QRELS = {"q1": {"p1": 1, "p2": 2, "j0": 0}, "q2": {"x": 1}, "q3": {"z": 0}}


def test_mining_never_returns_a_positive_and_respects_skip_and_max():
    records, report = mine(RUN, QRELS, skip_top=1, max_negatives=2)
    by_q = {r["qid"]: r for r in records}
    assert set(by_q) == {"q1", "q2"}  # q3 has no positive
    assert by_q["q1"]["pos"] == ["p1", "p2"]
    # candidates without positives or the query's own id: n1 n2 n3 j0; skip 1 -> n2 n3 (max 2)
    assert by_q["q1"]["neg"] == ["n2", "n3"] and by_q["q1"]["neg_scores"] == [7.0, 5.0]
    assert by_q["q2"]["neg"] == []
    assert report.queries == 2 and report.too_few == 1 and report.none == 1
    for r in records:
        assert not set(r["neg"]) & set(r["pos"])
    records, _ = mine(RUN, QRELS, max_negatives=10)
    assert records[0]["neg"] == ["n1", "n2", "n3", "j0"]  # a judged non-relevant doc is a negative


def test_graded_qrels_min_relevance_chooses_the_positives():
    # q1: p1 grade 1, p2 grade 2; with min_relevance 2 only p2 is a positive, p1 is neither
    records, _ = mine(RUN, QRELS, max_negatives=10, min_relevance=2)
    by_q = {r["qid"]: r for r in records}
    assert set(by_q) == {"q1"}  # q2's only judgement (grade 1) is below the bar
    assert by_q["q1"]["pos"] == ["p2"]
    assert by_q["q1"]["neg"] == ["n1", "n2", "n3", "j0"]  # p1 is not a negative either
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="min_relevance"):
            mine(RUN, QRELS, min_relevance=bad)


class FakeTeacher:
    """Scores are fixed per document through one-hot embeddings."""

    SCORES = {"p1": 1.0, "p2": 0.5, "n1": 0.99, "n2": 0.2, "n3": 0.96, "j0": 0.1}

    def encode_queries(self, texts):
        return np.ones((len(texts), 1), dtype=np.float32)

    def encode_documents(self, texts):
        return np.array([[self.SCORES[t.split()[0]]] for t in texts], dtype=np.float32)


def test_teacher_drops_likely_false_negatives(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d, "title": "", "text": d + " text"}) + "\n"
                              for d in FakeTeacher.SCORES))
    records, report = mine(RUN, QRELS, max_negatives=3, teacher=FakeTeacher(), margin=0.95,
                           queries={"q1": "query", "q2": "query"}, corpus=corpus)
    q1 = records[0]
    # best positive scores 1.0: n1 (0.99) and n3 (0.96) exceed 0.95 x 1.0 and are dropped
    assert q1["neg"] == ["n2", "j0"] and q1["neg_scores"] == pytest.approx([0.2, 0.1])
    assert report.dropped_by_teacher == 2
    # the teacher's scores of every positive come along, so training can distil from them
    assert q1["pos_scores"] == pytest.approx([1.0, 0.5]) and q1["teacher"] == "teacher"
    assert "pos_scores" not in mine(RUN, QRELS)[0][0]  # retrieval scores are no teacher
    with pytest.raises(ValueError, match="teacher needs"):
        mine(RUN, QRELS, teacher=FakeTeacher())


def test_cli_mines_from_an_index_and_refuses_test(beir_dir, tmp_path):
    CliRunner().invoke(cli.main, ["index", str(beir_dir), str(tmp_path / "idx"), "--quiet"])
    (beir_dir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    res = CliRunner().invoke(cli.main, ["mine", str(tmp_path / "idx"), "--dataset", str(beir_dir),
                                        "--out", str(tmp_path / "neg.jsonl"), "--max-negatives", "2"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (tmp_path / "neg.jsonl").read_text().splitlines()]
    assert [x["qid"] for x in lines] == ["q1", "q2"]
    assert all(len(x["neg"]) <= 2 and x["pos"][0] not in x["neg"] and x["qid"] not in x["neg"] for x in lines)
    res = CliRunner().invoke(cli.main, ["mine", str(tmp_path / "idx"), "--dataset", str(beir_dir),
                                        "--split", "test", "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "test split" in res.output
    (beir_dir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t1\n")
    res = CliRunner().invoke(cli.main, ["mine", str(tmp_path / "idx"), "--dataset", str(beir_dir), "--out",
                                        str(tmp_path / "graded.jsonl"), "--min-relevance", "2"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (tmp_path / "graded.jsonl").read_text().splitlines()]
    assert [(x["qid"], x["pos"]) for x in lines] == [("q1", ["d1"])] and "d2" not in lines[0]["neg"]


def test_cli_mine_notes_mismatched_qrels_and_refuses_when_nothing_can_be_mined(beir_dir, tmp_path):
    CliRunner().invoke(cli.main, ["index", str(beir_dir), str(tmp_path / "idx"), "--quiet"])
    train = beir_dir / "qrels" / "train.tsv"

    def mine_cli(out):
        return CliRunner().invoke(cli.main, ["mine", str(tmp_path / "idx"), "--dataset", str(beir_dir),
                                             "--out", str(tmp_path / out), "--max-negatives", "2"])

    # one query not in queries.jsonl, one judged doc not in the corpus: noted; the query is skipped
    train.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nzz\td3\t1\nq2\tzzd\t1\nq2\td3\t1\n")
    res = mine_cli("part.jsonl")
    assert res.exit_code == 0, res.output
    assert "note: 1/3 qrels queries not in the queries (e.g. zz); 1/3 judged docs not in the corpus (e.g. zzd)" \
        in res.stderr
    assert [json.loads(x)["qid"] for x in (tmp_path / "part.jsonl").read_text().splitlines()] == ["q1", "q2"]
    for name, body in [("no_queries", "zz1\td1\t1\nzz2\td3\t1\n"),   # no qrels query has a text
                       ("no_docs", "q1\tzz1\t1\nq2\tzz3\t1\n"),        # no positive is in the corpus
                       ("no_positive", "q1\td1\t0\nq2\td3\t0\n")]:     # nothing judged relevant
        train.write_text("query-id\tcorpus-id\tscore\n" + body)
        res = mine_cli(f"{name}.jsonl")
        assert res.exit_code == 1 and "nothing to mine" in res.output and "Traceback" not in res.output, name
        assert not (tmp_path / f"{name}.jsonl").exists()
