"""The impact index returns exactly the brute-force top-k, with Lucene's tie order."""

import numpy as np
import pytest
from oracles import dense_scores, guarded_search

from indexing import kernels
from indexing.inverted import InvertedIndex


def _random_index(seed, num_docs=300, num_terms=50, density=0.05, ties=False):
    rng = np.random.default_rng(seed)
    dense = rng.random((num_docs, num_terms)) < density
    weights = rng.integers(1, 4, size=dense.shape) if ties else rng.random(dense.shape)
    matrix = np.where(dense, weights, 0).astype(np.float32)
    d, t = np.nonzero(matrix)
    terms = [f"t{i}" for i in range(num_terms)]
    perm = rng.permutation(len(d))  # postings arrive in any order
    index = InvertedIndex.from_postings(terms, t[perm], d[perm], matrix[d, t][perm], num_docs)
    return index, matrix, terms


def _oracle(matrix, terms, query, k):
    qv = np.array([query.get(t, 0.0) for t in terms], dtype=np.float32)
    scores = matrix @ qv
    order = sorted((i for i in range(len(scores)) if scores[i] > 0), key=lambda i: (-scores[i], i))
    return order[:k], scores


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_top_k_equals_brute_force(seed, ties, packed):
    index, matrix, terms = _random_index(seed, ties=ties)
    if packed:  # the same postings compressed (indexing.compress)
        index = index.compressed()
    rng = np.random.default_rng(100 + seed)
    for _ in range(20):
        query = {terms[i]: float(rng.integers(1, 3)) for i in rng.choice(len(terms), 3, replace=False)}
        for k in (1, 10, 1000):
            ids, scores = index.top_k(query, k)
            want, oracle_scores = _oracle(matrix, terms, query, k)
            assert ids.tolist() == want
            np.testing.assert_allclose(scores, oracle_scores[want], rtol=1e-5)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("strategy", ["exhaustive", "pruned"])
def test_large_k_from_few_documents_equals_brute_force(packed, strategy):
    """A top-k of k >= SELECT_MIN_K from at most SELECT_PER_HIT * k matched documents is chosen
    by a partition, not the heap: the same documents, scores and tie order as the brute force,
    and scratch left clean (guarded_search)."""
    index, matrix, terms = _random_index(7, num_docs=3000, num_terms=40, density=0.1, ties=True)
    if packed:
        index = index.compressed()
    rng = np.random.default_rng(8)
    queries = [{terms[i]: float(rng.integers(1, 3)) for i in rng.choice(len(terms), 3, replace=False)}
               for _ in range(8)]
    for k in (kernels.SELECT_MIN_K, 100, 500, 1500):
        for query in queries:
            want, oracle_scores = _oracle(matrix, terms, query, k)
            matched = int((matrix @ np.array([query.get(t, 0.0) for t in terms], np.float32) > 0).sum())
            assert k < matched <= kernels.SELECT_PER_HIT * k if k < 1500 else matched < k  # partition / heap
            ids, scores = index.top_k(query, k, strategy)
            assert ids.tolist() == want
            np.testing.assert_allclose(scores, oracle_scores[want], rtol=1e-5)
        keys, _, _ = guarded_search(index, [index.encode(q) for q in queries], k, 0)
        for query, got in zip(queries, keys):
            ranks, _ = kernels.decode_keys(got)
            assert index.tie_order[ranks].tolist() == _oracle(matrix, terms, query, k)[0]


def test_empty_unknown_and_zero_queries():
    index, _, _ = _random_index(0)
    for query in ({}, {"nope": 1.0}, {"t1": 0.0}):
        ids, scores = index.top_k(query, 10)
        assert len(ids) == 0 and len(scores) == 0


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_batch_of_uneven_queries_equals_them_one_by_one(packed, threads):
    """A batch is decoded at once (``search_many``): queries of no match, of fewer matches than
    k and of more, with a scale, give what each gives alone, and no result shares its
    documents or scores with another's."""
    index, _, terms = _random_index(3, ties=True)
    index.scale = 4.0
    rare = min(terms, key=lambda t: index.offsets[index.term_ids[t] + 1] - index.offsets[index.term_ids[t]])
    if packed:
        index = index.compressed()
    queries = [{}, {terms[0]: 1.0, terms[5]: 2.0}, {"nope": 1.0}, {rare: 1.0}, {t: 1.0 for t in terms[:20]}]
    encoded = [index.encode(q) for q in queries]
    for k in (1, 20, 300):
        batch = index.search_many(encoded, k, threads=threads)
        alone = [index.search_many([q], k)[0] for q in encoded]
        assert [len(ids) for ids, _ in batch] == [len(ids) for ids, _ in alone]
        counts = [len(ids) for ids, _ in batch]
        assert counts[0] == 0 and len(set(counts)) >= min(3, k + 1)  # empty, short and full rows side by side
        for (ids, scores), (want_ids, want_scores) in zip(batch, alone):
            assert ids.tolist() == want_ids.tolist()
            assert scores.tobytes() == want_scores.tobytes()
        batch[1][0][:] = -1  # results are separate rows: writing one leaves the others
        batch[1][1][:] = -1
        assert all(ids.tolist() == want.tolist() for (ids, _), (want, _) in zip(batch[2:], alone[2:]))


def test_rows_decoded_in_the_threads_equal_the_batch_decoded_at_once():
    """``kernels.decode_rows`` (each piece's keys, in its thread) gives what ``decode_keys`` plus
    the tie order and numpy's float32 division give, row by row: full, short, empty and corrupt
    (-1) rows, a scale and none; only rows ``lo..hi`` are written."""
    rng = np.random.default_rng(0)
    n, k, num_docs = 6, 9, 1000
    order = rng.permutation(num_docs).astype(np.int32)
    ranks = rng.integers(0, num_docs, (n, k)).astype(np.uint64)
    vals = (rng.random((n, k)) * 50).astype(np.float32)
    keys = (vals.view(np.uint32).astype(np.uint64) << np.uint64(32)) | (np.uint64(0xFFFFFFFF) - ranks)
    counts = np.array([k, 3, 0, -1, k, 1], dtype=np.int64)
    for scale in (0.0, 7.3):
        ids = np.full((n, k), -5, dtype=np.int32)
        scores = np.full((n, k), -5.0, dtype=np.float32)
        kernels.decode_rows(keys, counts, 1, 6, order, np.float32(scale), ids, scores)
        want_ranks, want_scores = kernels.decode_keys(keys)
        if scale:
            want_scores = want_scores / np.float32(scale)
        assert (ids[0] == -5).all() and (scores[0] == -5).all()  # outside lo..hi
        for q in range(1, n):
            c = max(counts[q], 0)
            assert ids[q, :c].tolist() == order[want_ranks[q, :c]].tolist()
            assert scores[q, :c].tobytes() == want_scores[q, :c].tobytes()
            assert (ids[q, c:] == -5).all()  # nothing written past a row's count
    # best last (``sort_rows``): a row's count of keys read from its end
    flipped = np.ascontiguousarray(keys[:, ::-1])
    ids = np.full((n, k), -5, dtype=np.int32)
    scores = np.full((n, k), -5.0, dtype=np.float32)
    kernels.decode_rows(flipped, counts, 0, n, order, np.float32(0.0), ids, scores, True)
    want_ranks, want_scores = kernels.decode_keys(keys)
    for q in range(n):
        c = max(counts[q], 0)
        assert ids[q, :c].tolist() == order[want_ranks[q, :c]].tolist()
        assert scores[q, :c].tobytes() == want_scores[q, :c].tobytes()


def test_threads_past_the_usable_cpus_are_not_started(monkeypatch):
    """``threads`` above the CPUs this process may use starts no more threads than those (each
    search thread keeps scratch the size of the collection: threads=1000 on a large index would
    exhaust memory), and the results stay those of one thread. The same cap holds for the
    Python-level batches (``searcher.batch_with_threads``)."""
    import threading

    from indexing import inverted, searcher

    index, _, terms = _random_index(4)
    index = index.compressed()
    queries = [index.encode({terms[i]: 1.0, terms[(i * 7) % 50]: 2.0}) for i in range(40)]
    want = index.search_many(queries, 10)
    monkeypatch.setattr(inverted, "usable_cpus", lambda: 3)
    got = index.search_many(queries, 10, threads=10 ** 6)
    assert list(index._pools) == [3]  # one pool, of three threads
    assert [(i.tolist(), s.tobytes()) for i, s in got] == [(i.tolist(), s.tobytes()) for i, s in want]

    monkeypatch.setattr(searcher, "usable_cpus", lambda: 2)
    seen, lock = set(), threading.Lock()

    def search(text, k):
        with lock:
            seen.add(threading.get_ident())
        return {text: 1.0}

    run = searcher.batch_with_threads(search, {str(i): f"q{i}" for i in range(200)}, 10, threads=10 ** 6)
    assert len(run) == 200 and run["7"] == {"q7": 1.0}
    assert 1 <= len(seen) <= 2


def test_repeated_pairs_are_summed():
    index = InvertedIndex.from_postings(["x"], np.array([0, 0]), np.array([1, 1]),
                                       np.array([1.5, 2.0], dtype=np.float32), num_docs=2)
    assert index.num_postings == 1
    assert dense_scores(index, {"x": 1.0}).tolist() == [0.0, 3.5]


def test_ties_at_the_cutoff_keep_the_lowest_ids():
    # one term, six documents with impacts 1, 3, 3, -, 3, 2
    index = InvertedIndex.from_postings(["x"], np.zeros(5, int), np.array([0, 1, 2, 4, 5]),
                                       np.array([1, 3, 3, 3, 2], dtype=np.float32), num_docs=6)
    ids, vals = index.top_k({"x": 1.0}, 2)
    assert ids.tolist() == [1, 2] and vals.tolist() == [3, 3]
    assert index.top_k({"x": 1.0}, 0)[0].tolist() == []
    assert index.top_k({"x": 1.0}, 100)[0].tolist() == [1, 2, 4, 5, 0]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", [0, 1])
def test_plain_python_driver_equals_the_compiled_kernel(seed, mode):
    """The batch driver in plain Python and compiled pack identical keys (exhaustive and
    block-max), leave scratch clean, and rank as the brute force does."""
    index, matrix, terms = _random_index(seed, ties=True)
    rng = np.random.default_rng(seed)
    queries = [index.encode({terms[i]: float(rng.integers(1, 3)) for i in rng.choice(len(terms), 4, replace=False)})
               for _ in range(10)]
    compiled, counts, _ = guarded_search(index, queries, 50, mode)
    python, _, _ = guarded_search(index, queries, 50, mode, fn=kernels._search_queries)
    assert [k.tolist() for k in compiled] == [k.tolist() for k in python]
    for q, keys in zip(queries, compiled):
        query = {terms[t]: float(w) for t, w in zip(*q)}
        want, _ = _oracle(matrix, terms, query, 50)
        ranks, _ = kernels.decode_keys(keys)
        assert index.tie_order[ranks].tolist() == want


@pytest.mark.parametrize("dtype, scale", [(np.uint8, 10.0), (np.uint16, 100.0)])
def test_quantised_impacts_score_as_value_over_scale(dtype, scale):
    terms = ["a", "b"]
    index = InvertedIndex.from_postings(terms, np.array([0, 0, 1]), np.array([0, 1, 1]),
                                       np.array([25, 7, 3], dtype=dtype), num_docs=3, scale=scale)
    ids, scores = index.top_k({"a": 2.0, "b": 1.0}, 5)
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [50 / scale, 17 / scale], rtol=1e-6)
