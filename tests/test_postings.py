"""Streaming CSR construction: any chunk and range sizes give the same arrays."""

import numpy as np
import pytest

from indexing.postings import PostingsBuilder


@pytest.mark.parametrize("chunk, ranges", [(10**7, 10**7), (5, 10**7), (7, 3), (1, 1), (13, 40)])
@pytest.mark.parametrize("columns", [1, 2])
def test_chunked_build_equals_a_direct_sort(tmp_path, chunk, ranges, columns):
    rng = np.random.default_rng(0)
    num_terms, triples = 30, []
    builder = PostingsBuilder(columns=columns, dtype=np.int32, chunk_postings=chunk, tmp_dir=tmp_path)
    for doc in range(50):
        terms = rng.choice(num_terms, size=rng.integers(0, 8), replace=False)
        values = rng.integers(1, 100, size=(len(terms), columns))
        builder.add(doc, terms, values if columns > 1 else values[:, 0])
        triples += [(t, doc, tuple(v)) for t, v in zip(terms, values)]
    (tmp_path / "out").mkdir()
    offsets, docs, values = builder.finish(num_terms, tmp_path / "out", "d.npy", "v.npy", range_postings=ranges)
    triples.sort(key=lambda x: (x[0], x[1]))
    assert offsets[-1] == len(triples)
    assert docs.tolist() == [d for _, d, _ in triples]
    got = values.reshape(len(triples), columns).tolist()
    assert got == [list(v) for _, _, v in triples]
    for t in range(num_terms):
        assert all(x[0] == t for x in triples[offsets[t]:offsets[t + 1]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # spilled chunks are gone


def test_by_term_is_the_stable_order_by_term():
    """``by_term`` (one argsort of distinct ``term << 32 | position`` keys) gives exactly the
    stable argsort of the terms: docs stay ascending within each term."""
    from indexing.postings import by_term

    rng = np.random.default_rng(0)
    for n, vocab in ((0, 1), (1, 1), (50, 3), (100_000, 7), (100_000, 5_000)):
        terms = rng.integers(0, vocab, n).astype(np.int32)
        assert by_term(terms).tolist() == np.argsort(terms, kind="stable").tolist()


def test_renumbered_postings_are_sorted_by_new_doc_id(tmp_path):
    """Renumbering sorts each term's postings by new doc id, impacts following (as a two-key
    lexsort would), on a few hundred thousand postings over terms long and short."""
    from indexing.inverted import InvertedIndex

    rng = np.random.default_rng(1)
    n_docs, n_terms = 5_000, 300
    key = np.unique(rng.integers(0, n_terms, 300_000) * n_docs + rng.integers(0, n_docs, 300_000))
    t, d = key // n_docs, (key % n_docs).astype(np.int32)
    offsets = np.zeros(n_terms + 1, np.int64)
    np.cumsum(np.bincount(t, minlength=n_terms), out=offsets[1:])
    impacts = rng.random(len(d)).astype(np.float32)
    index = InvertedIndex([str(i) for i in range(n_terms)], offsets, d, impacts, n_docs)
    order = rng.permutation(n_docs)
    out = index.renumbered(order, tmp_path, chunk_postings=70_000)  # several term ranges
    rank = np.empty(n_docs, np.int64)
    rank[order] = np.arange(n_docs)
    want = np.lexsort((rank[d], t))
    assert np.asarray(out.docs).tolist() == rank[d][want].tolist()
    assert np.asarray(out.impacts).tobytes() == impacts[want].tobytes()
