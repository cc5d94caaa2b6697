"""eval.metrics (against hand-computed values) and eval.report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics import evaluate, parse_metric
from eval.report import format_table, metrics_json

L2_3 = math.log2(3)

# q1: graded; q2: binary; q3: nothing relevant (not averaged); q4: relevant doc but absent from the run.
QRELS = {
    "q1": {"a": 2, "b": 1, "c": 0},
    "q2": {"e": 1, "f": 1},
    "q3": {"g": 0},
    "q4": {"h": 1},
}
RUN = {
    "q1": {"a": 0.9, "x": 0.8, "b": 0.7, "c": 0.6},  # ranking: a(2) x b(1) c(0)
    "q2": {"z": 0.9, "e": 0.5, "y": 0.4, "f": 0.3},  # ranking: z e(1) y f(1)
    "q3": {"g": 1.0},
    "q9": {"a": 1.0},  # not in qrels: ignored
}
# Per query (trec_eval: gain = rel, discount 1/log2(rank + 1)):
# ndcg@3  q1: DCG = 2/log2(2) + 0 + 1/log2(4) = 2.5; IDCG = 2/log2(2) + 1/log2(3)  -> 2.5 / (2 + 1/log2 3)
#         q2: DCG = 1/log2(3);                       IDCG = 1 + 1/log2(3)          -> (1/log2 3) / (1 + 1/log2 3)
# recall@2 q1: {a,x} holds 1 of 2 relevant (a, b) = 1/2;  q2: {z,e} holds 1 of 2 = 1/2
# mrr@10  q1: 1/1;  q2: 1/2
# map@10  q1: (P@1 + P@3) / 2 = (1 + 2/3) / 2 = 5/6;  q2: (P@2 + P@4) / 2 = (1/2 + 2/4) / 2 = 1/2
# map@3   q2: only e within the cut, still divided by R = 2: (1/2) / 2 = 1/4;  q1: 5/6 (b is at 3)
# p@2     q1: 1/2;  q2: 1/2
# q4 scores 0 everywhere; q3 has no relevant doc and is not averaged -> means over 3 queries.
NDCG3_Q1 = 2.5 / (2 + 1 / L2_3)
NDCG3_Q2 = (1 / L2_3) / (1 + 1 / L2_3)


def test_hand_computed_means():
    res = evaluate(QRELS, RUN, ["ndcg@3", "recall@2", "mrr@10", "map@10", "map@3", "p@2"])
    assert res.num_queries == 3
    assert res.per_query is None
    expected = {
        "ndcg@3": (NDCG3_Q1 + NDCG3_Q2 + 0) / 3,
        "recall@2": (1 / 2 + 1 / 2 + 0) / 3,
        "mrr@10": (1 + 1 / 2 + 0) / 3,
        "map@10": (5 / 6 + 1 / 2 + 0) / 3,
        "map@3": (5 / 6 + 1 / 4 + 0) / 3,
        "p@2": (1 / 2 + 1 / 2 + 0) / 3,
    }
    assert list(res.metrics) == list(expected)
    for name, value in expected.items():
        assert res.metrics[name] == pytest.approx(value, abs=1e-6), name


def test_per_query_and_missing_query_counts_zero():
    res = evaluate(QRELS, RUN, ["NDCG@3", "P@2"], per_query=True)
    assert set(res.per_query) == {"q1", "q2", "q4"}
    assert res.per_query["q1"]["ndcg@3"] == pytest.approx(NDCG3_Q1, abs=1e-6)
    assert res.per_query["q2"]["ndcg@3"] == pytest.approx(NDCG3_Q2, abs=1e-6)
    assert res.per_query["q4"] == {"ndcg@3": 0.0, "p@2": 0.0}
    # an empty hit list is the same as an absent query
    res2 = evaluate(QRELS, {**RUN, "q4": {}}, ["ndcg@3", "p@2"], per_query=True)
    assert res2.per_query == res.per_query


def test_default_metrics():
    res = evaluate(QRELS, RUN)
    assert list(res.metrics) == ["ndcg@10", "recall@100", "mrr@10"]
    # recall@100: q1 and q2 retrieve all relevant docs -> (1 + 1 + 0) / 3
    assert res.metrics["recall@100"] == pytest.approx(2 / 3)


def test_mrr_tie_broken_like_trec_eval():
    # d1 and d2 tie; trec_eval orders ties by docid *descending*: d2 (rank 1), d1 (rank 2)
    qrels = {"q": {"d1": 1}}
    run = {"q": {"d1": 1.0, "d2": 1.0, "d0": 0.5}}
    res = evaluate(qrels, run, ["mrr@1", "mrr@2", "mrr@10"], ties="trec")
    assert res.metrics == {"mrr@1": 0.0, "mrr@2": 0.5, "mrr@10": 0.5}


def test_ties_evaluated_in_the_engines_order_by_default():
    # the engine (and Anserini) order ties by docid *ascending*: d1 (rank 1), d2 (rank 2)
    qrels = {"q": {"d1": 1}}
    run = {"q": {"d1": 1.0, "d2": 1.0, "d0": 0.5}}
    assert evaluate(qrels, run, ["mrr@1", "mrr@10"]).metrics == {"mrr@1": 1.0, "mrr@10": 1.0}
    # scores equal after rounding to 4 decimals tie too, kept in score order
    run = {"q": {"d2": 1.00003, "d1": 1.00001}}
    assert evaluate(qrels, run, ["mrr@1"]).metrics == {"mrr@1": 0.0}


def test_ignore_identical_ids():
    # BEIR convention: the query's own id in the run is dropped (ArguAna-style self hit)
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 2.0, "d1": 1.0}}
    kept = evaluate(qrels, run, ["mrr@10", "ndcg@10"], ignore_identical_ids=False)
    dropped = evaluate(qrels, run, ["mrr@10", "ndcg@10"])
    assert kept.metrics["mrr@10"] == pytest.approx(1 / 2)          # d1 at rank 2
    assert kept.metrics["ndcg@10"] == pytest.approx(1 / L2_3)      # (1/log2 3) / 1
    assert dropped.metrics == {"mrr@10": 1.0, "ndcg@10": 1.0}      # d1 at rank 1


def test_float32_numpy_scores():
    run32 = {q: {d: np.float32(s) for d, s in hits.items()} for q, hits in RUN.items()}
    a = evaluate(QRELS, RUN, ["ndcg@3", "map@10"])
    b = evaluate(QRELS, run32, ["ndcg@3", "map@10"])
    assert b.metrics == pytest.approx(a.metrics)
    assert all(type(v) is float for v in b.metrics.values())


def test_no_relevant_queries_is_an_error():
    with pytest.raises(ValueError, match="no query with a relevant"):
        evaluate({"q": {"d": 0}}, {"q": {"d": 1.0}})


@pytest.mark.parametrize("name, canonical, k", [
    ("ndcg@10", "ndcg@10", 10), ("NDCG@10", "ndcg@10", 10), (" Recall@1000 ", "recall@1000", 1000),
    ("MRR@10", "mrr@10", 10), ("MAP@1000", "map@1000", 1000), ("P@5", "p@5", 5),
])
def test_parse_metric(name, canonical, k):
    m = parse_metric(name)
    assert (m.name, m.k) == (canonical, k)


@pytest.mark.parametrize("bad", ["ndcg", "ndcg@0", "ndcg@k", "ndcg@-1", "bleu@4", "ndcg_cut_10", "", "mrr@1.5"])
def test_bad_metric_name(bad):
    with pytest.raises(ValueError, match=r"supported: ndcg@k, recall@k, mrr@k, map@k, p@k"):
        parse_metric(bad)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(QRELS, RUN, [bad])


def test_format_table():
    table = format_table([("bm25", {"ndcg@10": 0.65432, "recall@100": 0.9}), ("splade-long-name", {"ndcg@10": 0.7})],
                         ["NDCG@10", "recall@100"])
    assert table.splitlines() == [
        "| name             | ndcg@10 | recall@100 |",
        "|------------------|--------:|-----------:|",
        "| bm25             |  0.6543 |     0.9000 |",
        "| splade-long-name |  0.7000 |          - |",
    ]


def test_metrics_json():
    out = metrics_json("scifact", "test", 300, {"ndcg@10": np.float64(0.5)})
    assert out == {"dataset": "scifact", "split": "test", "num_queries": 300, "metrics": {"ndcg@10": 0.5}}
    assert type(out["metrics"]["ndcg@10"]) is float


@pytest.mark.parametrize("bad", ["ndcg@2147483648", "recall@9223372036854775808", "map@" + "9" * 5000])
def test_metric_cutoffs_above_the_bound_are_refused(bad):
    # pytrec_eval saturates cutoffs to a C long: one above it reported 0.0 under another key, and
    # two that saturate to the same value aborted the process (SIGABRT)
    with pytest.raises(ValueError, match="cutoff must be at most 2147483647") as exc:
        parse_metric(bad)
    assert len(str(exc.value)) < 200
    with pytest.raises(ValueError, match="cutoff must be at most"):
        evaluate(QRELS, RUN, ["recall@100", bad])
    assert parse_metric("recall@2147483647").k == 2**31 - 1
    assert evaluate(QRELS, RUN, ["recall@2147483647"]).metrics["recall@2147483647"] == pytest.approx(2 / 3)


def test_a_measure_pytrec_eval_did_not_compute_is_an_error(monkeypatch):
    """No silent 0.0: past the bound (lifted here), pytrec_eval answers under another key."""
    import eval.metrics

    monkeypatch.setattr(eval.metrics, "MAX_CUTOFF", 2**70)
    with pytest.raises(ValueError, match="pytrec_eval returned no recall_9223372036854775808"):
        evaluate(QRELS, RUN, ["recall@9223372036854775808"])
