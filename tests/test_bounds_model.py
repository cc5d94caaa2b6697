"""``scripts/bm25_bounds_model.py``: the block-max and document-at-a-time models count by hand."""

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bm25_bounds_model.py"


def _module():
    spec = importlib.util.spec_from_file_location("bm25_bounds_model", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# term A in docs 0, 1, 5 (impact 1 each), term B in docs 1, 6 (impact 2): blocks of 4 documents
LISTS = [(np.array([0, 1, 5], np.int32), np.ones(3, np.float32)),
         (np.array([1, 6], np.int32), np.full(2, 2.0, np.float32))]


def test_block_max_bounds_counted_by_hand():
    m = _module()
    # both blocks bound 1 + 2 = 3; each term touches both: 4 entries
    assert m.bmp(LISTS, 3.0, 8, 2) == (4, 5, 2)  # at the bound: every block scored, all 5 postings
    assert m.bmp(LISTS, 3.5, 8, 2) == (4, 0, 0)  # above it: none


def test_maxscore_document_at_a_time_counted_by_hand():
    m = _module()
    acc = m.exact_scores(LISTS, 8)
    assert acc.tolist() == [1, 3, 0, 0, 0, 1, 2, 0]
    # window 0 (no threshold yet): every posting there read (A: 0, 1; B: 1). Window 1: threshold 3
    # (doc 1), A's bound 1 < 3 makes it non-essential; B's doc 6 read, 2 + 1 reaches 3, so doc 6 is
    # sought in A (one seek, A's one chunk decoded: 3 postings)
    assert m.daat(LISTS, acc, 4, 1) == (4, 3, 1)
    # k = 2: the threshold after window 0 is 1 (docs 1 and 0): nothing is non-essential, all read
    assert m.daat(LISTS, acc, 4, 2) == (5, 0, 0)


def test_renumbering_by_length_counted_by_hand():
    m = _module()

    class U:  # doc 5 holds one term, docs 0 and 6 one each, doc 1 two: by length 2,3,4,7 (empty) then 0,5,6 then 1
        docs = np.array([0, 1, 5, 1, 6])

    new_id = m.document_order(U, 8, "length")
    assert new_id.tolist() == [4, 7, 0, 1, 2, 5, 6, 3]
    lists = m.renumbered(LISTS, new_id)
    assert [d.tolist() for d, _ in lists] == [[4, 5, 7], [6, 7]]  # A: 0->4, 5->5, 1->7; B: 6->6, 1->7
    assert lists[1][1].tolist() == [2.0, 2.0]
    assert m.document_order(U, 8, "index") is None
