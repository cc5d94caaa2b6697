"""Fusion methods against a hand-computed golden file; ties, empty and disjoint lists."""

import json
from pathlib import Path

import numpy as np
import pytest

from eval.fusion import Method, fuse, fuse_one

GOLDEN = json.loads((Path(__file__).parent / "data" / "fusion_golden.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"{c['method']}-{c['depth']}-{c['weights']}")
def test_golden(case):
    got = fuse(GOLDEN["runs"], case["method"], case["weights"], depth=case["depth"])
    assert list(got) == list(case["expected"])
    for qid, expected in case["expected"].items():
        assert [d for d, _ in expected] == list(got[qid])  # order, ties by doc id
        assert list(got[qid].values()) == pytest.approx([s for _, s in expected], abs=1e-12)


def test_ties_inside_a_list_are_ranked_by_doc_id():
    # x and y tie in the first list: x gets rank 1, y rank 2
    got = fuse_one([{"y": 1.0, "x": 1.0}], "rrf")
    assert got == {"x": 1 / 61, "y": 1 / 62}


def test_empty_and_disjoint_lists():
    assert fuse_one([{}, {}], "minmax") == {}
    assert fuse_one([], "rrf") == {}
    disjoint = fuse_one([{"a": 2.0, "b": 1.0}, {"c": 5.0}], "minmax", [0.5, 0.5])
    assert disjoint == {"a": 0.5, "c": 0.5, "b": 0.0}
    assert fuse([{"q": {"a": 1.0}}, {}], "rrf") == {"q": {"a": 1 / 61}}


def test_cut_and_bad_weights():
    assert list(fuse_one([{"a": 3.0, "b": 2.0, "c": 1.0}], "sum", k=2)) == ["a", "b"]
    with pytest.raises(ValueError, match="2 fusion weights for 1"):
        fuse_one([{"a": 1.0}], "minmax", [0.5, 0.5])
    with pytest.raises(ValueError):
        fuse_one([{"a": 1.0}], "borda")
    assert Method("rrf") is Method.RRF


def test_zscore_of_huge_and_tiny_scores():
    """z-scores do not depend on the scale: scores of 1e200 raised OverflowError in the spread."""
    want = fuse_one([{"a": 3.0, "b": -1.0, "c": 1.0}], "zscore")
    for scale in (1e200, -1e300, 1e-300):
        got = fuse_one([{"a": 3.0 * scale, "b": -1.0 * scale, "c": 1.0 * scale}], "zscore")
        order = list(want) if scale > 0 else list(reversed(want))
        assert list(got) == order
        assert sorted(got.values()) == pytest.approx(sorted(want.values()))
    assert fuse_one([{"a": 1e308, "b": -1e308}], "zscore") == {"a": 1.0, "b": -1.0}
    assert fuse_one([{"a": 0.0, "b": 0.0}], "zscore") == {"a": 0.0, "b": 0.0}


def test_rrf_k_and_weights_are_bounded():
    from eval.fusion import MAX_RRF_K, MAX_WEIGHT, check_fusion

    assert fuse_one([{"a": 1.0}], "rrf", rrf_k=MAX_RRF_K) == {"a": 1 / (MAX_RRF_K + 1)}
    for bad in (MAX_RRF_K + 1, 10**400):  # 10**400 raised OverflowError in 1 / (k + rank)
        with pytest.raises(ValueError, match="rrf_k must be an integer from 0 to 2147483648") as exc:
            fuse_one([{"a": 1.0}], "rrf", rrf_k=bad)
        assert len(str(exc.value)) < 100
    check_fusion("sum", [MAX_WEIGHT, 0.0], 10, 60)
    with pytest.raises(ValueError, match="at most 1e\\+06"):
        check_fusion("sum", [1e308, 1e308], 10, 60)  # every fused score was inf


def test_fusion_weights_are_not_negative_nor_all_zero():
    """A negative weight ranked a document lower for being retrieved: with rankings cut at their
    depth, a document the negative list did not retrieve (its floor) then beat one it ranked first."""
    from eval.fusion import check_fusion

    with pytest.raises(ValueError, match="must be >= 0"):
        fuse_one([{"a": 2.0, "b": 1.0}, {"a": 1.0}], "sum", weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="fusion weights are all 0"):
        check_fusion("rrf", [0.0, 0.0], 10, 60)
    assert fuse_one([{"a": 2.0, "b": 1.0}, {"b": 5.0}], "sum", weights=[1.0, 0.0]) == {"a": 2.0, "b": 1.0}


def test_fused_scores_that_are_not_finite_fail_the_query():
    with pytest.raises(ValueError, match="query 'q': fused score of doc 'a' is inf"):
        fuse([{"q": {"a": 1e308}}, {"q": {"a": 1e308}}], "sum")
    with pytest.raises(ValueError, match="not finite|fused score"):
        fuse_one([{"a": 1e308, "b": -1e308}], "minmax")  # the span overflows: NaN


def test_cli_fuse_bounds_and_huge_zscore(tmp_path):
    from click.testing import CliRunner

    from retriever import cli

    run = tmp_path / "a.trec"
    run.write_text("q1 Q0 d1 1 1e200 a\nq1 Q0 d2 2 -1e200 a\n")
    out = tmp_path / "out.trec"
    for flags in (["--rrf-k", "1" + "0" * 400], ["--rrf-k", str(2**31 + 1)], ["--weights", "1e7"]):
        res = CliRunner().invoke(cli.main, ["fuse", str(run), "--out", str(out), *flags])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    res = CliRunner().invoke(cli.main, ["fuse", str(run), "--method", "zscore", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [line.split()[2] for line in out.read_text().splitlines()] == ["d1", "d2"]


def _fuse_reference(rankings, method, weights, depth, rrf_k, k):
    """fuse_one as a per-document Python sum (the implementation before the vectorised one)."""
    from eval.fusion import normalise, ranked

    method = Method(method)
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    parts = [normalise(ranked(r, depth), method, rrf_k) for r in rankings]
    docs = set().union(*(p for p, _ in parts)) if parts else set()
    fused = {}
    for d in docs:  # left to right, as the float64 additions go (not sum(): Python 3.12's compensates)
        total = 0.0
        for w, (p, floor) in zip(weights, parts):
            total += w * p.get(d, floor)
        fused[d] = total
    return dict(ranked(fused, k))


@pytest.mark.parametrize("method", ["rrf", "minmax", "zscore", "sum"])
def test_vectorised_fusion_equals_the_per_document_sum(method):
    """Same documents, order and float64 scores (bit for bit) as a per-document sum, over lists
    that overlap in part, tie often, weigh 0, hold negative scores, and k below, at and above the
    number of documents."""
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 4))
        rankings = []
        for _ in range(n):
            size = int(rng.integers(0, 300))
            docs = rng.choice(500, size, replace=False)
            scores = np.round(rng.normal(0, 3, size), int(rng.integers(0, 3)))  # ties
            rankings.append({f"d{d}": float(x) for d, x in zip(docs, scores)})
        weights = [float(rng.choice([0.0, 0.3, 1.0, 2.5])) for _ in range(n)]
        if not any(weights):
            weights[0] = 1.0
        depth = int(rng.choice([5, 100, 1000]))
        total = len(set().union(*rankings))
        for k in (None, 1, 10, total, total + 3):
            if k is not None and k < 1:
                continue
            got = fuse_one(rankings, method, weights, depth, 60, k)
            want = _fuse_reference(rankings, method, weights, depth, 60, k)
            assert list(got) == list(want)
            assert [repr(x) for x in got.values()] == [repr(x) for x in want.values()]


@pytest.mark.parametrize("method", ["rrf", "minmax", "zscore", "sum"])
def test_a_score_that_is_not_a_number_fails_the_query(method):
    """A NaN sorted first in its list (rrf) or made a min-max list all 1.0; a string was ranked as
    a string; each now fails the query naming the document."""
    for bad, said in ((float("nan"), "score nan"), ("3", "'3', not a number"), (None, "None, not a number"),
                      (10**400, "too large for a float")):
        with pytest.raises(ValueError, match=f"doc 'a' has .*{said}"):
            fuse_one([{"b": 1.0, "a": bad, "c": 2.0}], method)
        with pytest.raises(ValueError, match="query 'q'"):
            fuse([{"q": {"b": 1.0, "a": bad}}], method)
    assert list(fuse_one([{"a": np.float32(1.5), "b": 2, "c": np.int64(1)}], method)) == ["b", "a", "c"]


def test_ranked_orders_float32_among_python_floats():
    """np.float32(0.1) compares equal to both 0.1 and float(np.float32(0.1)), which differ: a
    sort on the raw values put 0.1 above 0.10000000149."""
    from indexing.results import ranked

    x = np.float32(0.1)
    hits = {"a": 0.1, "b": x, "c": float(x)}
    assert [d for d, _ in ranked(hits)] == ["b", "c", "a"]
    assert [d for d, _ in ranked({"c": float(x), "a": 0.1, "b": x})] == ["b", "c", "a"]
