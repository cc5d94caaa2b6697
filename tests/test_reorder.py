"""Document reordering by recursive graph bisection (indexing/reorder.py)."""

import math

import numpy as np
import pytest

from indexing.reorder import (bisect_order, bisect_order_reference, bp_terms, doc_term_csr, inverse_permutation,
                              log_gap_cost)


def csr(rows):
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.concatenate([np.asarray(r, dtype=np.int32) for r in rows]) if rows else np.zeros(0, np.int32)
    return indptr, indices.astype(np.int32)


def random_rows(n, vocab, lo=0, hi=20, seed=0):
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(vocab, size=rng.integers(lo, hi + 1), replace=False)) for _ in range(n)]


def planted(n, topics=20, vocab=5000, per_topic=150, terms=40, noise=0.25, seed=0):
    """Documents from ``topics`` topics (each a set of ``per_topic`` terms), i.i.d. so the input
    order carries no topic; a share ``noise`` of each document's terms is uniform background."""
    rng = np.random.default_rng(seed)
    table = np.stack([rng.choice(vocab, size=per_topic, replace=False) for _ in range(topics)])
    label = rng.integers(0, topics, size=n)
    rows = []
    for k in label:
        own = rng.choice(table[k], size=int(terms * (1 - noise)), replace=False)
        rows.append(np.unique(np.concatenate([own, rng.integers(0, vocab, size=int(terms * noise))])))
    return (*csr(rows), vocab, label)


def is_permutation(order, n):
    return order.dtype == np.int32 and order.shape == (n,) and np.array_equal(np.sort(order), np.arange(n))


def bits_per_posting(indptr, indices, vocab, order=None):
    total, postings = log_gap_cost(indptr, indices, vocab, order)
    return total / postings


# -- permutations ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 3, 33, 64, 65, 500])
def test_every_document_exactly_once(n):
    indptr, indices = csr(random_rows(n, 50, seed=n))
    for min_size in (1, 4, 32):
        assert is_permutation(bisect_order(indptr, indices, 50, min_size=min_size), n)


def test_empty_and_identical_documents():
    empty = csr([[] for _ in range(100)])
    assert is_permutation(bisect_order(*empty, 10, min_size=2), 100)
    assert is_permutation(bisect_order(*empty, 0, min_size=2), 100)  # no terms at all
    some_empty = csr([[] if i % 3 else [1, 2, 3] for i in range(90)])
    assert is_permutation(bisect_order(*some_empty, 4, min_size=2), 90)
    same = csr([[2, 5, 7, 11]] * 80 + [[1, 3]] * 40)
    order = bisect_order(*same, 12, min_size=2)
    assert is_permutation(order, 120)


def test_identical_documents_end_up_together():
    rows = [[0, 1, 2, 3]] * 32 + [[4, 5, 6, 7]] * 32
    rng = np.random.default_rng(1)
    rows = [rows[i] for i in rng.permutation(64)]
    indptr, indices = csr(rows)
    order = bisect_order(indptr, indices, 8, min_size=8)
    first = [rows[d][0] for d in order]
    assert len(set(first[:32])) == 1 and len(set(first[32:])) == 1


def test_bad_input_is_refused():
    indptr, indices = csr([[0, 1], [2]])
    with pytest.raises(ValueError, match="term ids"):
        bisect_order(indptr, indices, 2)
    with pytest.raises(ValueError, match="indptr"):
        bisect_order(np.array([0, 2, 1]), indices, 3)
    with pytest.raises(ValueError, match="indptr"):
        bisect_order(np.array([0, 1, 2]), indices, 3)
    with pytest.raises(ValueError, match="min_size"):
        bisect_order(indptr, indices, 3, min_size=0)
    with pytest.raises(ValueError, match="iterations"):
        bisect_order(indptr, indices, 3, iterations=-1)


def test_no_work_leaves_the_initial_order():
    indptr, indices = csr(random_rows(40, 30))
    shuffled = np.random.default_rng(7).permutation(40)
    assert np.array_equal(bisect_order(indptr, indices, 30, iterations=0, seed=7), shuffled)
    assert np.array_equal(bisect_order(indptr, indices, 30, max_depth=0, seed=7), shuffled)
    assert np.array_equal(bisect_order(indptr, indices, 30, max_depth=0, seed=None), np.arange(40))


# -- determinism and the reference -------------------------------------------------------------

def test_deterministic_for_a_seed_whatever_the_threads():
    indptr, indices, vocab, _ = planted(3000, seed=3)
    a = bisect_order(indptr, indices, vocab, seed=5, threads=1)
    b = bisect_order(indptr, indices, vocab, seed=5, threads=2)
    c = bisect_order(indptr, indices, vocab, seed=5)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(a, bisect_order(indptr, indices, vocab, seed=6))


def test_the_working_copy_layout_does_not_change_the_order(monkeypatch):
    """Partitions re-gathered from the input (large) or laid out by their worker (small) give
    the same order."""
    from indexing import reorder

    indptr, indices, vocab, _ = planted(3000, seed=8)
    expected = bisect_order(indptr, indices, vocab, min_size=4)
    for cap in (0, 2000, 30_000, 10**9):  # 0: all gathered; then a mix by level; all laid out
        monkeypatch.setattr(reorder, "_relayout_cap", lambda postings, workers, cap=cap: cap)
        assert np.array_equal(bisect_order(indptr, indices, vocab, min_size=4), expected)


@pytest.mark.parametrize("case", ["random", "planted", "clumps"])
@pytest.mark.parametrize("min_size, iterations", [(8, 20), (3, 5), (40, 1)])
def test_compiled_equals_the_plain_python_reference(case, min_size, iterations):
    if case == "random":
        indptr, indices = csr(random_rows(150, 60, 0, 12, seed=min_size))
        vocab = 60
    elif case == "planted":
        indptr, indices, vocab, _ = planted(200, topics=6, vocab=400, per_topic=40, terms=12, seed=min_size)
    else:  # many identical rows and ties
        indptr, indices = csr([[i % 4, 4 + i % 3] for i in range(120)])
        vocab = 7
    kw = dict(min_size=min_size, iterations=iterations, seed=min_size)
    assert np.array_equal(bisect_order(indptr, indices, vocab, **kw),
                          bisect_order_reference(indptr, indices, vocab, **kw))


# -- what it is for ----------------------------------------------------------------------------

def test_planted_topics_come_together_and_the_cost_drops():
    indptr, indices, vocab, label = planted(20_000, topics=40, seed=11)
    order = bisect_order(indptr, indices, vocab)  # (its speed: python scripts/bench_reorder.py)
    assert is_permutation(order, 20_000)
    same_before = (label[1:] == label[:-1]).mean()  # ~1/40: the input order carries no topic
    same_after = (label[order][1:] == label[order][:-1]).mean()
    assert same_before < 0.05 and same_after > 0.9
    before, after = bits_per_posting(indptr, indices, vocab), bits_per_posting(indptr, indices, vocab, order)
    assert after < 0.75 * before
    random = bits_per_posting(indptr, indices, vocab, np.random.default_rng(0).permutation(20_000))
    assert after < 0.75 * random


# -- log-gap cost and helpers ------------------------------------------------------------------

def test_log_gap_cost_by_hand():
    # term 0 in docs 0, 2, 3; term 1 in doc 3; term 2 nowhere
    indptr, indices = csr([[0], [], [0], [0, 1]])
    total, postings = log_gap_cost(indptr, indices, 3)
    assert postings == 4
    assert total == pytest.approx(math.log2(1) + math.log2(2) + math.log2(1) + math.log2(4))
    total, _ = log_gap_cost(indptr, indices, 3, order=[3, 2, 1, 0])  # term 0 at 0, 1, 3
    assert total == pytest.approx(0 + 0 + 1 + 0)
    with pytest.raises(ValueError, match="permutation"):
        log_gap_cost(indptr, indices, 3, order=[0, 0, 1, 2])


def test_a_repeated_term_in_one_document_is_one_posting():
    indptr, indices = csr([[4, 4], [4]])
    assert log_gap_cost(indptr, indices, 5) == (0.0, 2)


def test_doc_term_csr_transposes_an_index():
    rows = random_rows(60, 25, seed=4)
    indptr, indices = csr(rows)
    term_docs = [[d for d, r in enumerate(rows) if t in r] for t in range(25)]
    offsets, docs = csr(term_docs)
    got_ptr, got_idx = doc_term_csr(offsets, docs, 60)
    assert np.array_equal(got_ptr, indptr) and np.array_equal(got_idx, indices)


def test_doc_term_csr_of_some_terms_keeps_only_those():
    rows = random_rows(60, 25, seed=5)
    term_docs = [[d for d, r in enumerate(rows) if t in r] for t in range(25)]
    offsets, docs = csr(term_docs)
    keep = np.array([1, 4, 5, 17, 24])
    got_ptr, got_idx = doc_term_csr(offsets, docs, 60, keep)
    want_ptr, want_idx = csr([sorted(t for t in r if t in set(keep.tolist())) for r in rows])
    assert np.array_equal(got_ptr, want_ptr) and np.array_equal(got_idx, want_idx)
    with pytest.raises(ValueError, match="ascending"):
        doc_term_csr(offsets, docs, 60, np.array([4, 1]))
    with pytest.raises(ValueError, match="ascending"):
        doc_term_csr(offsets, docs, 60, np.array([25]))


def test_bp_terms_keeps_the_rarest_terms_of_two_documents_or_more_within_the_budget():
    df = np.array([1, 5, 2, 0, 9, 2, 3, 1, 40])
    assert bp_terms(df, None).tolist() == [1, 2, 4, 5, 6, 8]  # df >= 2
    assert bp_terms(df, 10 ** 9).tolist() == [1, 2, 4, 5, 6, 8]
    assert bp_terms(df, 7).tolist() == [2, 5, 6]  # 2 + 2 + 3 postings; the next (5) would not fit
    assert bp_terms(df, 12).tolist() == [1, 2, 5, 6]
    assert bp_terms(df, 1).tolist() == []


def test_a_budgeted_bp_order_is_a_permutation_that_still_groups_documents():
    rng = np.random.default_rng(3)
    topics = rng.integers(0, 8, 400)
    rows = [sorted(set((10 * t + rng.integers(0, 10, 6)).tolist()) | set(rng.integers(80, 84, 2).tolist()))
            for t in topics]
    indptr, indices = csr(rows)
    df = np.bincount(indices, minlength=84)
    term_docs = [[d for d, r in enumerate(rows) if t in r] for t in range(84)]
    offsets, docs = csr(term_docs)
    keep = bp_terms(df, int(df[:80].sum()))  # the four frequent terms left out
    assert set(keep.tolist()) == set(range(80))
    order = bisect_order(*doc_term_csr(offsets, docs, 400, keep), 84)
    assert sorted(order.tolist()) == list(range(400))
    assert log_gap_cost(indptr, indices, 84, order)[0] < 0.8 * log_gap_cost(indptr, indices, 84)[0]


def test_inverse_permutation():
    order = np.array([2, 0, 3, 1])
    rank = inverse_permutation(order)
    assert np.array_equal(rank[order], np.arange(4))
