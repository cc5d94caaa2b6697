"""Superblocks (a coarse first level of block-max bounds over packed postings): the pruned search
still returns exactly the exhaustive result; the summary is what the block-max lists say."""

import numpy as np
import pytest
from oracles import guarded_search

from indexing import kernels
from indexing.compress import NST
from indexing.inverted import InvertedIndex


def _clustered_index(seed, num_docs=6000, num_terms=40, ties=False):
    """Documents in topical runs (each run favours a few terms with high impacts), so that some
    superblocks can be skipped; long lists get stored block-max lists; superblocks of 4 blocks,
    summaries for terms of >= 8 block-max entries."""
    rng = np.random.default_rng(seed)
    topic = (np.arange(num_docs) // 500) % 6
    favoured = rng.integers(0, num_terms, size=(6, 6))
    dense = rng.random((num_docs, num_terms)) < 0.12
    dense[np.arange(num_docs)[:, None], favoured[topic]] |= rng.random((num_docs, 6)) < 0.6
    weights = rng.integers(1, 6, size=dense.shape).astype(np.float32) if ties else rng.random(dense.shape).astype(np.float32)
    boost = np.zeros(dense.shape, np.float32)
    boost[np.arange(num_docs)[:, None], favoured[topic]] = 4.0
    matrix = np.where(dense, weights + boost, 0).astype(np.float32)
    # the last 4 terms are rare (too short for a stored block-max list) and weigh heavily where
    # they occur: their bounds must reach the superblocks, or those documents are missed
    matrix[:, -4:] = 0
    for j in range(num_terms - 4, num_terms):
        matrix[rng.choice(num_docs, 5, replace=False), j] = 20.0 + rng.random(5).astype(np.float32)
    d, t = np.nonzero(matrix)
    index = InvertedIndex.from_postings([f"t{i}" for i in range(num_terms)], t, d, matrix[d, t], num_docs)
    index = index.compressed(blockmax_min=200)
    index.superblock_shift, index.superblock_min = 2, 8
    index.block_cost = 0.0  # never fall back to the exhaustive kernel: the superblock path is what is tested
    index.maxscore_terms = 0  # superblocks serve queries longer than this (no MaxScore here)
    return index, matrix


def _queries(index, seed, n=12):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        size = int(rng.integers(1, 12))
        terms = rng.choice(len(index.terms) - 4, size, replace=False)
        if rng.random() < 0.5:
            terms = np.r_[terms, len(index.terms) - 1 - rng.integers(0, 4)]  # with a rare heavy term
        terms = np.sort(terms).astype(np.int32)
        out.append((terms, rng.integers(1, 4, len(terms)).astype(np.float32)))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_pruned_with_superblocks_equals_exhaustive(seed, ties):
    index, matrix = _clustered_index(seed, ties=ties)
    ptr = index.ensure_superblocks()[0]
    assert len(ptr) > 1 and ptr[-1] > 0  # summaries exist: the superblock kernel runs
    queries = _queries(index, 50 + seed)
    scored = []
    for k in (1, 10, 100):
        exhaustive = index.search_many(queries, k, "exhaustive")
        pruned = index.search_many(queries, k, "pruned")
        assert (index.last_route == kernels.ROUTE_BLOCKMAX).all()
        scored += index.last_blocks_scored.tolist()
        for (ids_e, s_e), (ids_p, s_p), (t, w) in zip(exhaustive, pruned, queries):
            assert ids_p.tolist() == ids_e.tolist() and s_p.tolist() == s_e.tolist()
            brute = matrix[:, t] @ w
            want = sorted(np.flatnonzero(brute > 0).tolist(), key=lambda i: (-brute[i], i))[:k]
            assert ids_e.tolist() == want
        keys_e, _, _ = guarded_search(index, queries, k, 0)
        keys_p, _, _ = guarded_search(index, queries, k, 1)  # scratch (superblock bounds too) left clean
        assert [x.tolist() for x in keys_p] == [x.tolist() for x in keys_e]
    n_blocks = (index.num_docs >> index.shift) + 1
    assert min(scored) < n_blocks  # some blocks were skipped


@pytest.mark.parametrize("seed", range(3))
def test_unsummarised_terms_bounding_most_blocks(seed):
    """Terms without a summary whose block maxima cover most blocks: the bounds pass keeps no
    candidate list (superblock bounds by one sweep of the blocks, the scratch cleared whole), and
    superblocks are refined from a mix of both kinds of terms. Still the exhaustive result."""
    rng = np.random.default_rng(seed)
    num_docs, num_terms = 6000, 30
    run = np.arange(num_docs) // 250  # 24 runs of 250 documents
    matrix = np.zeros((num_docs, num_terms), np.float32)
    matrix[:, :8] = np.where(rng.random((num_docs, 8)) < 0.3, rng.random((num_docs, 8)) + 0.5, 0)  # everywhere
    for j in range(8, num_terms):  # each in 40-80% of the runs, heavily in a few of them
        runs = rng.random(24) < rng.uniform(0.4, 0.8)
        heavy = rng.random(24) < 0.15
        there = runs[run] & (rng.random(num_docs) < 0.4)
        matrix[there, j] = rng.random(there.sum()) + np.where(heavy[run[there]], 3.0, 0.0)
    d, t = np.nonzero(matrix)
    index = InvertedIndex.from_postings([f"t{i}" for i in range(num_terms)], t, d, matrix[d, t], num_docs)
    index = index.compressed(blockmax_min=50)
    n_blocks = (num_docs >> index.shift) + 1
    index.superblock_shift, index.superblock_min = 2, n_blocks - 1  # only the terms found everywhere
    index.block_cost, index.maxscore_terms = 0.0, 0
    ptr = index.ensure_superblocks()[0]
    summarised = np.diff(ptr) > 0
    assert summarised[:8].all() and not summarised[8:].any()
    queries = []
    for _ in range(10):
        terms = np.sort(np.r_[rng.choice(8, 2, replace=False), 8 + rng.choice(num_terms - 8, 8, replace=False)])
        queries.append((terms.astype(np.int32), rng.integers(1, 4, len(terms)).astype(np.float32)))
    for k in (1, 10, 100):
        keys_e, _, _ = guarded_search(index, queries, k, 0)
        keys_p, _, _ = guarded_search(index, queries, k, 1)
        assert [x.tolist() for x in keys_p] == [x.tolist() for x in keys_e]
        for (ids, _), (t, w) in zip(index.search_many(queries, k, "pruned"), queries):
            brute = matrix[:, t] @ w
            assert ids.tolist() == sorted(np.flatnonzero(brute > 0).tolist(), key=lambda i: (-brute[i], i))[:k]


def test_superblocks_off_or_absent_give_the_same_results():
    index, _ = _clustered_index(9)
    queries = _queries(index, 3)
    with_sb = index.search_many(queries, 10, "pruned")
    index.superblock_min = 0  # off: the plain block-max kernel
    assert len(index.ensure_superblocks()[0]) == 1
    without = index.search_many(queries, 10, "pruned")
    csr = index.uncompressed()  # CSR postings have no summary
    plain = csr.search_many(queries, 10, "pruned")
    for a, b, c in zip(with_sb, without, plain):
        assert a[0].tolist() == b[0].tolist() == c[0].tolist() and a[1].tolist() == b[1].tolist() == c[1].tolist()


def test_summary_is_the_block_max_lists_per_superblock():
    index, _ = _clustered_index(2)
    ptr, first, entry, val = index.ensure_superblocks()
    p = index.packed
    st = np.zeros(NST, np.int64)
    sbs = index.superblock_shift
    summarised = 0
    for t in range(len(index.terms)):
        assert kernels._open_term(p.stream, p.term_ptr, t, index.num_docs, p.table.shape[0], p.norms.shape[0],
                                  p.norm_table.shape[0], st) == 0
        m = int(st[kernels.ST_M])
        if st[kernels.ST_BM] < 0 or m < index.superblock_min:
            assert ptr[t + 1] == ptr[t]
            continue
        blocks, vals = np.zeros(m, np.int64), np.zeros(m, np.float32)
        assert kernels._read_blockmax(p.stream, st, p.table, p.float_bits, p.norm_table, blocks, vals) == m
        supers = blocks >> sbs
        starts = np.flatnonzero(np.r_[True, supers[1:] != supers[:-1]])
        lo, hi = ptr[t], ptr[t + 1]
        assert first[lo:hi].tolist() == blocks[starts].tolist()
        assert entry[lo:hi].tolist() == starts.tolist()
        assert val[lo:hi].tolist() == np.maximum.reduceat(vals, starts).tolist()
        summarised += 1
    assert summarised > 0


def test_approx_with_superblocks_returns_exact_scores_of_what_it_finds():
    """Approximate search skips superblocks and blocks that are unlikely to matter; whatever it
    returns is scored exactly (the exhaustive score of that document)."""
    index, matrix = _clustered_index(5)
    queries = _queries(index, 8)
    for approx in (0.9, 0.5):
        keys, _, _ = guarded_search(index, queries, 10, 1, approx=approx)
        for got, (t, w) in zip(keys, queries):
            ranks, scores = kernels.decode_keys(got)
            ids = index.tie_order[ranks]
            np.testing.assert_allclose(scores, (matrix[:, t] @ w)[ids], rtol=1e-5)


def test_a_corrupt_block_max_list_fails_the_query_not_the_summary():
    """Gaps that run past the last block: the summary leaves that term out (it is then bounded
    block by block), and the bounds pass reports the corrupt index instead of reading outside."""
    from indexing.manifest import IndexFormatError

    index, _ = _clustered_index(4, num_docs=20000)
    ptr = index.ensure_superblocks()[0]
    p = index.packed
    st = np.zeros(NST, np.int64)
    for t in np.flatnonzero(np.diff(ptr) > 0):  # a summarised term whose list has gaps to corrupt
        kernels._open_term(p.stream, p.term_ptr, int(t), index.num_docs, p.table.shape[0], p.norms.shape[0],
                           p.norm_table.shape[0], st)
        wg = int(p.stream[st[kernels.ST_BM]])
        if wg > 0:
            break
    assert wg > 0
    t = int(t)
    stream = p.stream.copy()
    gaps = int(st[kernels.ST_BM]) + 2
    stream[gaps:gaps + kernels._nbytes(int(st[kernels.ST_M]), wg)] = 0xFF  # every gap the largest
    p.stream = stream
    index.superblock_min = 7  # a new summary over the corrupt stream
    ptr = index.ensure_superblocks()[0]
    assert ptr[t + 1] == ptr[t]
    with pytest.raises(IndexFormatError):
        index.search_many([(np.array([t], np.int32), np.ones(1, np.float32))] * 1, 10, "pruned")
    other = int(np.flatnonzero(np.diff(ptr) > 0)[0])  # the other terms still search
    index.search_many([(np.array([other], np.int32), np.ones(1, np.float32))], 10, "pruned")



def test_the_per_block_kernels_compile_without_reference_counting():
    """The kernels a pruned query calls per block, chunk and superblock are compiled without
    numba's reference counting: with it, each call increfed and decrefed every array argument
    (11% of a 10M SPLADE-like query). (The compiled code itself cannot be read back from numba's
    cache; checked once by hand: no NRT call in them, 48 in ``_pruned_super``.)"""
    pytest.importorskip("numba")
    hot = (kernels._score_block_packed, kernels._refine, kernels._bounds_stored, kernels._decode_docs,
           kernels._load_docs, kernels._decode_values, kernels._find_chunk, kernels._mh_push, kernels._mh_pop,
           kernels._heap_push)
    for f in hot:
        assert f.targetoptions.get("_nrt") is False, f
    assert kernels._pruned_super.targetoptions.get("_nrt", True) is not False  # it allocates: it keeps NRT
    index, _ = _clustered_index(0)  # and they run (a lean kernel that allocated would fail to compile)
    queries = _queries(index, 3)
    assert [a[0].tolist() for a in index.search_many(queries, 10, "pruned")] == \
        [a[0].tolist() for a in index.search_many(queries, 10, "exhaustive")]


@pytest.mark.parametrize("scale", [1.4e-45, 1e37, 3e38])
def test_weights_at_float32s_extremes_keep_superblocks_exact(scale):
    """Scores that overflow to inf (ties there keep the tie order) or fall in float32's subnormal
    range (rounding there is absolute): the superblock kernel's thresholds allow for both."""
    index, _ = _clustered_index(2, ties=True)
    index.ensure_superblocks()
    queries = [(t, np.minimum(w * np.float64(scale), 3.3e38).astype(np.float32)) for t, w in _queries(index, 52)]
    for k in (1, 10, 100):
        exhaustive = index.search_many(queries, k, "exhaustive")
        pruned = index.search_many(queries, k, "pruned")
        assert (index.last_route == kernels.ROUTE_BLOCKMAX).all()
        for (ids_e, s_e), (ids_p, s_p) in zip(exhaustive, pruned):
            assert ids_p.tolist() == ids_e.tolist() and s_p.tobytes() == s_e.tobytes()
