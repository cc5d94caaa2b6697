"""MaxScore term at a time over packed postings (indexing.kernels._maxscore_taat): the route an
exact pruned query of few terms takes. It must return exactly what the exhaustive kernel returns
(ids, scores bit for bit, tie order), whatever the data, and leave unread what it can skip."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import guarded_search
from test_compressed_postings import oracle, queries_for, random_index

from indexing import kernels
from indexing.compress import NST
from indexing.inverted import InvertedIndex


def maxscore(index, seek_cost=0.0):
    """Every exact pruned query of the index goes to MaxScore; seeks free (the default): it stops
    at the first term it may and scores every candidate exactly, however many (blocks expected
    never to pay, for the queries that do not go there)."""
    index.blocks_per_hit = 1e6
    index.maxscore_terms = 1 << 20
    index.seek_cost = seek_cost
    return index


def same(want, got):
    for (a, sa), (b, sb) in zip(want, got):
        assert a.tolist() == b.tolist()
        assert sa.tobytes() == sb.tobytes()


@pytest.mark.parametrize("seed, dtype, bm25", [(0, np.float32, False), (1, np.float32, False),
                                               (2, np.uint16, False), (3, np.uint8, False),
                                               (4, np.float32, True), (5, np.float32, True)])
def test_maxscore_equals_exhaustive_and_the_oracle(seed, dtype, bm25):
    index = random_index(seed, num_docs=3000, num_terms=40, dtype=dtype, bm25=bm25)
    queries = queries_for(index, seed, n=20)
    for seek_cost in (0.0, 0.01, kernels.TAAT_SEEK_COST):  # every query / some / few (the rest: exhaustive)
        for packed in (maxscore(index.compressed(), seek_cost), maxscore(index.compressed(blockmax_min=0), seek_cost)):
            for k in (1, 3, 10, 100, 5000):  # 5000: more than any query matches
                want = packed.search_many(queries, k, "exhaustive")
                got = packed.search_many(queries, k, "pruned", threads=2)
                if seek_cost == 0:
                    assert (packed.last_route == kernels.ROUTE_MAXSCORE).all()
                same(want, got)
                for (ids, scores), (t, w) in zip(got, queries):
                    o_ids, o_scores = oracle(index, t, w, k)
                    assert ids.tolist() == o_ids


def test_ties_at_the_kth_score_keep_the_tie_order():
    rng = np.random.default_rng(11)
    n, terms = 4000, 6
    d = np.concatenate([rng.choice(n, 900, replace=False) for _ in range(terms)])
    t = np.repeat(np.arange(terms), 900)
    values = np.ones(len(d), np.float32)  # every impact equal: scores tie in large groups
    index = InvertedIndex.from_postings([f"t{i}" for i in range(terms)], t, d, values, n)
    index.set_tie_order(rng.permutation(n).astype(np.int32))
    packed = maxscore(index.compressed())
    queries = [(np.arange(m, dtype=np.int32), np.ones(m, np.float32)) for m in (1, 2, 3, 6)]
    for k in (1, 7, 10, 64, 900, 1000):
        want = packed.search_many(queries, k, "exhaustive")
        same(want, packed.search_many(queries, k, "pruned"))
        for searcher in (packed, index):  # the exhaustive kernels' selection (it skips documents below the k-th
            for (ids, _), (t, w) in zip(searcher.search_many(queries, k, "exhaustive"), queries):  # score unread)
                assert ids.tolist() == oracle(index, t, w, k)[0]


def test_one_term_long_queries_repeated_terms_and_terms_without_postings():
    index = random_index(6, num_docs=2500, num_terms=60, dtype=np.uint16)
    offsets = index.offsets.copy()
    empty = int(np.flatnonzero(np.diff(offsets) == 0)[0]) if (np.diff(offsets) == 0).any() else None
    packed = maxscore(index.compressed())
    rng = np.random.default_rng(6)
    queries = [(np.array([3], np.int32), np.array([1.0], np.float32)),
               (np.array([5, 5, 9], np.int32), np.array([1.0, 2.0, 0.5], np.float32)),  # a term twice
               (rng.integers(0, 60, 1000).astype(np.int32), rng.random(1000).astype(np.float32) + 0.01)]
    if empty is not None:
        queries.append((np.array([empty, 2], np.int32), np.array([3.0, 1.0], np.float32)))
    for k in (1, 10, 2500):
        same(packed.search_many(queries, k, "exhaustive"), packed.search_many(queries, k, "pruned"))


def test_a_term_in_one_document_only():
    n = 5000
    t = np.array([0] + [1] * 3000 + [2] * 400)
    d = np.concatenate([[4321], np.arange(0, 6000, 2), np.arange(1, 801, 2)])
    values = np.concatenate([[0.5], np.linspace(0.1, 0.9, 3000), np.full(400, 0.3)]).astype(np.float32)
    index = InvertedIndex.from_postings(["a", "b", "c"], t, d, values, n)
    packed = maxscore(index.compressed())
    queries = [(np.array([0, 1, 2], np.int32), np.array([9.0, 1.0, 1.0], np.float32)),
               (np.array([1, 0], np.int32), np.array([1.0, 0.1], np.float32))]
    for k in (1, 2, 10, 1000):
        same(packed.search_many(queries, k, "exhaustive"), packed.search_many(queries, k, "pruned"))


def test_long_queries_are_not_routed_to_maxscore():
    index = maxscore(random_index(7, num_docs=2000, num_terms=40, bm25=True).compressed())
    index.maxscore_terms = 4
    queries = [(np.arange(m, dtype=np.int32), np.ones(m, np.float32)) for m in (2, 4, 5, 30)]
    want = index.search_many(queries, 10, "exhaustive")
    got = index.search_many(queries, 10, "pruned")
    assert index.last_route.tolist() == [kernels.ROUTE_MAXSCORE] * 2 + [kernels.ROUTE_EXHAUSTIVE] * 2
    same(want, got)
    index.seek_cost = 1e9  # seeks dear: MaxScore would not pay, the query is read exhaustively
    same(want, index.search_many(queries, 10, "pruned"))
    assert (index.last_route == kernels.ROUTE_EXHAUSTIVE).all()
    index.seek_cost = 0.0
    index.maxscore_terms = 0  # never
    index.search_many(queries, 10, "pruned")
    assert (index.last_route == kernels.ROUTE_EXHAUSTIVE).all()
    index.blocks_per_hit = 0.5  # the blocks are expected to pay: block-max bounds
    index.block_cost = 0.0
    same(want, index.search_many(queries, 10, "pruned"))
    assert (index.last_route == kernels.ROUTE_BLOCKMAX).all()


def test_approximate_searches_drop_unread_terms_sooner_and_keep_exact_scores():
    index = random_index(8, num_docs=3000, num_terms=40, bm25=True)
    packed = maxscore(index.compressed())
    queries = queries_for(index, 8, n=20)
    exact = packed.search_many(queries, 10, "pruned")
    agreement = []
    for a in (1.0, 0.8, 0.5, 0.2):
        got = packed.search_many(queries, 10, "approx", a)
        assert (packed.last_route == kernels.ROUTE_MAXSCORE).all()
        hits = 0
        for (ids, scores), (t, w), (e_ids, _) in zip(got, queries, exact):
            full = dict(zip(*oracle(index, t, w, 10 ** 6)))
            assert all(full[i] == s for i, s in zip(ids.tolist(), scores.tolist()))  # true scores
            hits += len(set(ids.tolist()) & set(e_ids.tolist()))
        agreement.append(hits)
        if a == 1.0:
            same(exact, got)
    assert agreement == sorted(agreement, reverse=True) and agreement[-1] < agreement[0]


def test_a_long_list_is_only_sought_where_candidates_lie():
    """A rare term of large impacts and a term in every document: MaxScore reads the rare term,
    then seeks its few documents in the long list, whose other chunks it never decodes. Garbage
    written into the middle of one of those (a corrupt index the exhaustive kernel rejects) shows
    it: the pruned search still returns the oracle's answer."""
    from indexing.manifest import IndexFormatError

    n = 20_000
    rare = np.arange(0, 40, 4)  # ten documents, all in the long list's first chunk
    t = np.concatenate([np.zeros(len(rare), np.int64), np.ones(n, np.int64)])
    d = np.concatenate([rare, np.arange(n)])
    values = np.concatenate([np.full(len(rare), 50.0), 1.0 + (np.arange(n) % 7) / 10]).astype(np.float32)
    index = InvertedIndex.from_postings(["rare", "common"], t, d, values, n)
    query = [(np.array([1, 0], np.int32), np.array([1.0, 1.0], np.float32))]
    packed = index.compressed()
    packed.blocks_per_hit = 1e6
    want = oracle(index, query[0][0], query[0][1], 5)
    assert packed.search_many(query, 5, "pruned")[0][0].tolist() == want[0]
    assert packed.last_route.tolist() == [kernels.ROUTE_MAXSCORE]
    st = np.zeros(NST, np.int64)
    p = packed.packed
    kernels._open_term(p.stream, p.term_ptr, 1, n, len(p.table), len(p.norms), len(p.norm_table), st)
    c = int(st[kernels.ST_NC]) // 2  # a chunk far from the rare term's documents: its body, not its header
    start = int(st[kernels.ST_CHUNKS]) + int(kernels._bits_at(p.stream, st[kernels.ST_OFFS], c - 1, st[kernels.ST_DWO]))
    end = int(st[kernels.ST_CHUNKS]) + int(kernels._bits_at(p.stream, st[kernels.ST_OFFS], c, st[kernels.ST_DWO]))
    header = int(kernels._chunk_header(p.stream, start, st[kernels.ST_END])[2])
    stream = p.stream.copy()
    stream[start + header:end] = 0xFF
    p.stream = stream
    with pytest.raises(IndexFormatError):
        packed.search_many(query, 5, "exhaustive")
    ids, scores = packed.search_many(query, 5, "pruned")[0]
    assert ids.tolist() == want[0]
    assert scores.tolist() == pytest.approx(want[1], rel=1e-6)


@pytest.mark.parametrize("seed, dtype, bm25, huge", [(0, np.float32, False, False), (1, np.float32, False, True),
                                                     (2, np.uint16, False, False), (3, np.uint8, False, False),
                                                     (4, np.float32, True, False)])
def test_term_bounds_from_chunk_widths_bound_every_impact(seed, dtype, bm25, huge):
    index = random_index(seed, num_docs=3000, num_terms=40, dtype=dtype, bm25=bm25)
    if huge:  # float impacts whose bit patterns need 30-31 bits
        index._impacts = (index._impacts * np.float32(1e30)).astype(np.float32)
    packed = index.compressed(blockmax_min=10 ** 9)
    p = packed.packed
    nmax = np.float32(p.norm_table.max()) if len(p.norm_table) else np.float32(0)
    st = np.zeros(NST, np.int64)
    for t in range(len(index.terms)):
        lo, hi = index.offsets[t], index.offsets[t + 1]
        assert kernels._open_term(p.stream, p.term_ptr, t, index.num_docs, len(p.table), len(p.norms),
                                  len(p.norm_table), st) == 0
        if hi == lo:
            continue
        bound = kernels._term_bound(p.stream, st, p.table, p.float_bits, nmax)
        assert bound >= np.float32(index.impacts[lo:hi].astype(np.float32).max())


def test_the_kernel_stays_inside_its_buffers_on_the_maxscore_route():
    index = random_index(9, num_docs=2000, bm25=True)
    packed = index.compressed(blockmax_min=200, blockmax_ratio=1.5)
    packed.seek_cost = 0.0
    queries = queries_for(index, 9, n=8)
    want, _, _ = guarded_search(index, queries, 50, 0)
    got, _, _ = guarded_search(packed, queries, 50, 1, block_cost=32.0, ms_terms=64)
    assert [w.tolist() for w in want] == [g.tolist() for g in got]
    assert (guarded_search.route == kernels.ROUTE_MAXSCORE).any()


def test_a_corrupt_chunk_fails_the_maxscore_query(tmp_path):
    from indexing.manifest import IndexFormatError

    index = random_index(10, num_docs=3000, num_terms=10, dtype=np.uint16)
    packed = maxscore(index.compressed())
    t = int(np.argmax(np.diff(index.offsets)))
    stream = packed.packed.stream.copy()
    start = int(packed.packed.term_ptr[t])
    st = np.zeros(NST, np.int64)
    kernels._open_term(stream, packed.packed.term_ptr, t, index.num_docs, len(packed.packed.table), 0, 0, st)
    stream[int(st[kernels.ST_CHUNKS])] = 0x3F  # doc gap width 63: corrupt
    assert start <= int(st[kernels.ST_CHUNKS])
    packed.packed.stream = stream
    with pytest.raises(IndexFormatError):
        packed.search_many([(np.array([t], np.int32), np.array([1.0], np.float32))], 10, "pruned")


def _chunk_body(packed, term, doc):
    """(start, end) of the body of the chunk of ``term``'s list that holds ``doc`` (not its header)."""
    p = packed.packed
    st = np.zeros(NST, np.int64)
    kernels._open_term(p.stream, p.term_ptr, term, packed.num_docs, len(p.table), len(p.norms), len(p.norm_table), st)
    c = int(kernels._find_chunk(p.stream, st, doc))
    offset = lambda i: 0 if i == 0 else int(kernels._bits_at(p.stream, st[kernels.ST_OFFS], i - 1, st[kernels.ST_DWO]))  # noqa: E731
    start, end = int(st[kernels.ST_CHUNKS]) + offset(c), int(st[kernels.ST_CHUNKS]) + offset(c + 1)
    return start + int(kernels._chunk_header(p.stream, start, st[kernels.ST_END])[2]), end


def _narrowing_index():
    """20 rare documents of large impact (ten at the start, ten in the middle), a term in every
    document worth 10 to the first ten and 1.0-1.4 to the rest, and a term in every document worth
    1.0-1.6: after the rare term and the second list, the middle ten cannot reach the k-th score."""
    n = 20_000
    a, b = np.arange(10), np.arange(10_000, 10_010)
    rare = np.concatenate([a, b])
    t = np.concatenate([np.zeros(20, np.int64), np.ones(n, np.int64), np.full(n, 2, np.int64)])
    d = np.concatenate([rare, np.arange(n), np.arange(n)])
    mid = np.where(np.arange(n) < 10, 10.0, 1.0 + (np.arange(n) % 5) / 10)
    values = np.concatenate([np.full(20, 50.0), mid, 1.0 + (np.arange(n) % 7) / 10]).astype(np.float32)
    index = InvertedIndex.from_postings(["rare", "mid", "common"], t, d, values, n)
    query = [(np.array([2, 1, 0], np.int32), np.array([1.0, 1.0, 1.0], np.float32))]
    packed = index.compressed()
    packed.blocks_per_hit = 1e6
    return index, packed, query


def test_candidates_narrow_as_the_unread_lists_are_sought():
    """After the cut the unread terms are sought one at a time, and a candidate that can no longer
    reach the k-th partial score is dropped before the next: the middle ten, out after the second
    list, are never sought in the third, whose chunk there is garbage (the exhaustive kernel
    rejects it; seeking every candidate in every list, as before, did too)."""
    from indexing.manifest import IndexFormatError

    index, packed, query = _narrowing_index()
    want = oracle(index, query[0][0], query[0][1], 5)
    start, end = _chunk_body(packed, 2, 10_000)
    stream = packed.packed.stream.copy()
    stream[start:end] = 0xFF
    packed.packed.stream = stream
    with pytest.raises(IndexFormatError):
        packed.search_many(query, 5, "exhaustive")
    ids, scores = packed.search_many(query, 5, "pruned")[0]
    assert packed.last_route.tolist() == [kernels.ROUTE_MAXSCORE]
    assert ids.tolist() == want[0]
    assert scores.tolist() == pytest.approx(want[1], rel=1e-6)


def test_a_corrupt_list_met_while_narrowing_fails_and_leaves_the_next_query_exact():
    """A garbage chunk where a candidate is sought in an unread list fails the query, and the
    partial scores the narrowing held are cleared: the same searcher (its scratch kept) then
    answers exactly once the stream is whole again."""
    from indexing.manifest import IndexFormatError

    index, packed, query = _narrowing_index()
    whole = packed.packed.stream
    start, end = _chunk_body(packed, 1, 10_000)  # the second list, where all 20 candidates are sought
    stream = whole.copy()
    stream[start:end] = 0xFF
    packed.packed.stream = stream
    with pytest.raises(IndexFormatError):
        packed.search_many(query, 5, "pruned")
    packed.packed.stream = whole
    for k in (5, 20):
        want = packed.search_many(query, k, "exhaustive")
        same(want, packed.search_many(query, k, "pruned"))
        assert want[0][0].tolist() == oracle(index, query[0][0], query[0][1], k)[0]


def test_a_bm25_index_reads_every_exact_query_with_maxscore():
    """Block-max bounds do not pay on BM25 postings (a term's block maxima are about as many as its
    postings), so a BM25 index sends exact queries of any length to MaxScore; an impact index
    keeps MaxScore for queries of up to kernels.MAXSCORE_TERMS terms."""
    bm25 = random_index(12, num_docs=3000, num_terms=60, bm25=True).compressed()
    impact = random_index(12, num_docs=3000, num_terms=60, dtype=np.uint16).compressed()
    assert bm25.maxscore_terms >= 1 << 20 and impact.maxscore_terms == kernels.MAXSCORE_TERMS
    rng = np.random.default_rng(12)
    queries = [(rng.choice(60, m, replace=False).astype(np.int32), rng.random(m).astype(np.float32) + 0.1)
               for m in (3, 17, 40)]
    for index in (bm25, impact):
        index.seek_cost = 0.0
        same(index.search_many(queries, 10, "exhaustive"), index.search_many(queries, 10, "pruned"))
        long_route = index.last_route[1:].tolist()
        assert index.last_route[0] == kernels.ROUTE_MAXSCORE
        if index is bm25:
            assert long_route == [kernels.ROUTE_MAXSCORE] * 2
        else:
            assert kernels.ROUTE_MAXSCORE not in long_route
    loaded_like = bm25._like(bm25.packed)  # the settings travel with the postings (a reopened index)
    assert loaded_like.maxscore_terms == bm25.maxscore_terms


def test_a_dense_exhaustive_query_that_meets_a_corrupt_chunk_leaves_the_accumulator_clear():
    """A query of at least kernels.EXHAUSTIVE_DENSE postings per document keeps no touched list;
    when a chunk half way through its first list is corrupt the query fails and the whole
    accumulator is cleared: the next queries on the same scratch are exact."""
    from indexing.manifest import IndexFormatError

    index, packed, query = _narrowing_index()
    assert sum(int(packed.packed.df[t]) for t in query[0][0]) >= kernels.EXHAUSTIVE_DENSE * packed.num_docs
    whole = packed.packed.stream
    start, end = _chunk_body(packed, 2, 10_000)  # "common", read first: its chunks before this one are added
    stream = whole.copy()
    stream[start:end] = 0xFF
    packed.packed.stream = stream
    with pytest.raises(IndexFormatError):
        packed.search_many(query, 5, "exhaustive")
    packed.packed.stream = whole
    for k in (5, 20, 20_000):
        ids, scores = packed.search_many(query, k, "exhaustive")[0]
        want = oracle(index, query[0][0], query[0][1], k)
        assert ids.tolist() == want[0]
        assert scores.tolist() == pytest.approx(want[1], rel=1e-6)


@pytest.mark.parametrize("scale", [1.4e-45, 1e-44, 1e37, 1e38, 3e38])
def test_weights_at_float32s_extremes_keep_pruned_exact(scale):
    """Sums that overflow to inf tie there (tie order decides), and sums in float32's subnormal
    range round by an absolute amount, not a relative one: the pruned searches' thresholds must
    allow for both (they lost tied documents to the exhaustive kernel before ``kernels._floor``)."""
    for seed, dtype, bm25 in ((0, np.float32, True), (1, np.float32, False), (3, np.uint8, False)):
        index = random_index(seed, num_docs=3000, num_terms=40, dtype=dtype, bm25=bm25)
        rng = np.random.default_rng(seed)
        queries = []
        for i in range(8):
            m = int(rng.integers(1, 12))
            w = np.minimum(rng.choice([0.5, 1, 2, 3], m) * scale, 3.3e38).astype(np.float32)
            if i == 7:
                w[0] = 1.0  # one ordinary weight among them
            queries.append((rng.choice(40, m, replace=False).astype(np.int32), w))
        plain = index.compressed()
        plain.maxscore_terms = plain.superblock_min = 0
        for packed in (maxscore(index.compressed()), plain):
            for k in (1, 10, 100):
                same(packed.search_many(queries, k, "exhaustive"), packed.search_many(queries, k, "pruned"))
