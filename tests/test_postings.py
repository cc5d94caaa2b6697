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
