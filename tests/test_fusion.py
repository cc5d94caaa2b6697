"""Fusion methods against a hand-computed golden file; ties, empty and disjoint lists."""

import json
from pathlib import Path

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
    with pytest.raises(ValueError, match="2 weights for 1"):
        fuse_one([{"a": 1.0}], "minmax", [0.5, 0.5])
    with pytest.raises(ValueError):
        fuse_one([{"a": 1.0}], "borda")
    assert Method("rrf") is Method.RRF
