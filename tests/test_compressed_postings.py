"""Packed postings (indexing.compress): the encoding round-trips any postings exactly, searching
them equals searching the uncompressed ones and a numpy oracle bit for bit (every strategy), a
corrupt file fails with IndexFormatError instead of a crash, and indexes written before the
format change still load."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import guarded_search

from indexing import compress, kernels
from indexing.analysis import Analyzer
from indexing.bm25 import BM25Params, build_bm25_index
from indexing.compress import CHUNK, Bm25Model, PackedPostings, bm25_impact, encode
from indexing.corpus import Doc
from indexing.inverted import CSR, InvertedIndex
from indexing.manifest import CHECKSUM_KEY, FORMAT_VERSION, IndexFormatError, IndexWriter, manifest_digest, sha256_file
from retriever import Retriever

FAST = settings(derandomize=True, max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(derandomize=False, max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ROOT = Path(__file__).resolve().parent.parent
SPECIAL = [0.0, 1e-45, 3e-45, 1e-40, 1.17549435e-38, 0.5, 1.0, 3.0, 1e30, 3.4028235e38]


def csr(lists, dtype):
    """(offsets, docs, impacts) from per-term [(doc, impact), ...] lists (docs ascending)."""
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    docs = np.array([d for x in lists for d, _ in x], np.int32)
    impacts = np.array([v for x in lists for _, v in x], dtype)
    return offsets, docs, impacts


@st.composite
def postings(draw):
    """Adversarial postings: empty lists, single postings, doc 0 and the last doc, huge gaps,
    long lists of one impact, hundreds of distinct impacts, denormal and huge floats."""
    dtype = draw(st.sampled_from([np.float32, np.uint8, np.uint16]))
    num_docs = draw(st.sampled_from([1, 2, 300, 5000, 2 ** 31 - 1]))
    lists = []
    for _ in range(draw(st.integers(0, 8))):
        shape = draw(st.sampled_from(["empty", "one", "ends", "dense", "sparse"]))
        if shape == "empty":
            ids = []
        elif shape == "one":
            ids = [draw(st.integers(0, num_docs - 1))]
        elif shape == "ends":
            ids = sorted({0, num_docs - 1})
        elif shape == "dense" and num_docs <= 5000:
            ids = list(range(draw(st.integers(0, num_docs - 1)), num_docs))[:draw(st.integers(1, 700))]
        else:
            ids = sorted(draw(st.sets(st.integers(0, num_docs - 1), max_size=300)))
        if dtype == np.float32:
            values = st.one_of(st.sampled_from(SPECIAL), st.floats(0, float(np.float32(1e38)), width=32))
        else:
            values = st.integers(0, np.iinfo(dtype).max)
        if draw(st.booleans()):
            one = draw(values)
            vals = [one] * len(ids)  # many equal impacts: zero-bit codes
        elif draw(st.booleans()):
            vals = [(i * 7919) % (np.iinfo(dtype).max if dtype != np.float32 else 1000) + 1 for i in range(len(ids))]
        else:
            vals = [draw(values) for _ in ids]
        lists.append(list(zip(ids, vals)))
    return csr(lists, dtype), num_docs


def check_round_trip(data, range_postings, blockmax_min):
    (offsets, docs, impacts), num_docs = data
    packed = PackedPostings.build(offsets, docs, impacts, num_docs, range_postings=range_postings,
                                  blockmax_min=blockmax_min, blockmax_ratio=1)
    packed.verify()
    got_offsets, got_docs, got_impacts = packed.materialize()
    assert np.array_equal(got_offsets, offsets) and np.array_equal(got_docs, docs)
    assert got_impacts.dtype == impacts.dtype and got_impacts.tobytes() == impacts.tobytes()
    assert packed.df.tolist() == np.diff(offsets).tolist()


@FAST
@given(postings(), st.sampled_from([10 ** 7, 50]), st.sampled_from([0, 4096]))
def test_round_trip(data, range_postings, blockmax_min):
    check_round_trip(data, range_postings, blockmax_min)


@pytest.mark.slow
@SLOW
@given(postings(), st.sampled_from([10 ** 7, 50]), st.sampled_from([0, 4096]))
def test_round_trip_long(data, range_postings, blockmax_min):
    check_round_trip(data, range_postings, blockmax_min)


def test_widths_of_31_bits_and_huge_gaps():
    top = 2 ** 31 - 1
    offsets, docs, impacts = csr([[(0, 3.4028235e38), (top - 1, 1e-45)], [(top - 1, 2.0)], [(5, 1.0), (top - 1, 1.0)]],
                                 np.float32)
    packed = PackedPostings.build(offsets, docs, impacts, top)
    assert [a.tobytes() for a in packed.materialize()] == [a.tobytes() for a in (offsets, docs, impacts)]


def test_a_range_at_a_time_writes_the_same_bytes():
    rng = np.random.default_rng(3)
    lists = [[(int(d), float(rng.integers(1, 300))) for d in np.sort(rng.choice(3000, rng.integers(0, 900), False))]
             for _ in range(40)]
    offsets, docs, impacts = csr(lists, np.uint16)
    one = encode(offsets, docs, impacts, range_postings=10 ** 7)
    many = encode(offsets, docs, impacts, range_postings=100)
    assert np.array_equal(one[0], many[0]) and np.array_equal(one[1], many[1])
    assert one[2]["stream"].tobytes() == many[2]["stream"].tobytes()


def test_bm25_impacts_are_stored_as_tf_and_length_byte(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    docs = [Doc(f"d{i}", "", " ".join(rng.choice(words, rng.integers(1, 90)))) for i in range(700)]
    index, _, _ = build_bm25_index(docs, Analyzer(stopwords="none", stemmer="none"), BM25Params(), tmp_path)
    packed = index.compressed()
    assert packed.packed.table.dtype == np.float32
    _, _, stats = encode(index.offsets, index.docs, index.impacts, index.model)
    assert stats["terms_by_mode"] == {"table": 0, "values": 0, "bm25": len(index.terms)}
    assert packed.packed.materialize()[2].tobytes() == np.asarray(index.impacts).tobytes()
    # multifield impacts are sums of two fields: stored as table codes, still exact
    (tmp_path / "mf").mkdir()
    mf, _, _ = build_bm25_index(docs, Analyzer(), BM25Params(fields="multifield"), tmp_path / "mf")
    assert mf.model is None
    assert mf.compressed().packed.materialize()[2].tobytes() == np.asarray(mf.impacts).tobytes()


def test_bm25_impact_compiled_equals_numpy():
    rng = np.random.default_rng(1)
    idf = rng.uniform(0.01, 12, 2000).astype(np.float32)
    tf = rng.integers(1, 500, 2000).astype(np.float32)
    norm = rng.uniform(0.01, 5, 2000).astype(np.float32)
    want = bm25_impact(idf, tf, norm)
    compiled = kernels._bm25
    got = np.array([compiled(i, t, n) for i, t, n in zip(idf, tf, norm)], np.float32)
    assert got.tobytes() == want.tobytes()



def test_float_of_bits_is_the_bit_cast():
    rng = np.random.default_rng(2)
    bits = np.concatenate([rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32),
                           np.array([0, 1, 0x7FFFFF, 0x800000, 0x7F7FFFFF, 0x7F800000, 0xFF800000, 0x80000001,
                                     0x3F800000], np.uint32)])
    got = np.array([kernels._float_of_bits(b) for b in bits], np.float32)
    want = bits.view(np.float32)
    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all()
    assert got[~nan].tobytes() == want[~nan].tobytes()  # denormals, infinities and signs included

# -- search: packed == uncompressed == oracle ---------------------------------------------------

def oracle(index, terms, weights, k):
    acc = np.zeros(index.num_docs, np.float32)
    for t, w in zip(terms, weights):
        s, e = index.offsets[t], index.offsets[t + 1]
        acc[index.docs[s:e]] += np.float32(w) * index.impacts[s:e].astype(np.float32)
    hits = sorted(np.flatnonzero(acc > 0).tolist(), key=lambda d: (-acc[d], index.tie_rank[d]))[:k]
    return hits, acc[hits] / np.float32(index.scale) if index.scale else acc[hits]


def random_index(seed, num_docs=2000, num_terms=30, dtype=np.float32, bm25=False, shift=6):
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.0005, 0.6, num_terms)
    dense = rng.random((num_docs, num_terms)) < density
    d, t = np.nonzero(dense)
    model = None
    if bm25:
        idf = rng.uniform(0.1, 9, num_terms).astype(np.float32)
        table = (1 / (0.9 * (0.6 + 0.4 * np.arange(256) / 40.0))).astype(np.float32)
        lengths = rng.integers(0, 256, num_docs).astype(np.uint8)
        tf = rng.choice([1, 1, 1, 2, 3, 9], len(d)).astype(np.float32)
        values = bm25_impact(idf[t], tf, table[lengths[d]])
        model = Bm25Model(idf, lengths, table)
    elif dtype == np.float32:
        values = rng.choice([0.25, 0.5, 1.0, 1.5], len(d)).astype(np.float32) if seed % 2 else \
            rng.random(len(d)).astype(np.float32)
    else:
        values = rng.integers(1, 300 if dtype == np.uint16 else 256, len(d)).astype(dtype)
    index = InvertedIndex.from_postings([f"t{i}" for i in range(num_terms)], t, d, values, num_docs,
                                       None if dtype == np.float32 else 100.0)
    index.model = model
    index.shift = shift
    index.set_tie_order(rng.permutation(num_docs).astype(np.int32))
    return index


def queries_for(index, seed, n=10):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = 1 if i == 0 else int(rng.integers(2, 9))
        terms = rng.choice(len(index.terms), m, replace=False).astype(np.int32)
        weights = rng.choice([0.5, 1.0, 2.0, 3.0], m).astype(np.float32)
        out.append((terms, weights))
    return out


@pytest.mark.parametrize("seed, dtype, bm25, shift", [(0, np.float32, False, 6), (1, np.float32, False, 4),
                                                     (2, np.uint16, False, 6), (3, np.uint8, False, 5),
                                                     (4, np.float32, True, 6), (5, np.float32, True, 3)])
def test_search_equals_uncompressed_and_oracle(seed, dtype, bm25, shift):
    index = random_index(seed, dtype=dtype, bm25=bm25, shift=shift)
    variants = [index.compressed(), index.compressed(blockmax_min=0, blockmax_ratio=1.5)]
    for packed in variants:  # plain block-max bounds for every query, as the uncompressed index (MaxScore:
        packed.maxscore_terms = packed.superblock_min = 0  # test_maxscore; superblocks: test_superblocks)
    if bm25:
        assert variants[0].packed.norm_table.shape == (256,)  # the BM25 mode was used
    queries = queries_for(index, seed)
    for k in (1, 10, 1000):
        for strategy, approx in (("exhaustive", 1.0), ("pruned", 1.0), ("approx", 1.0), ("approx", 0.6)):
            for block_cost in (0.0, kernels.BLOCK_COST):
                index.block_cost = block_cost
                want = index.search_many(queries, k, strategy, approx)
                if approx == 1.0:
                    for (ids, scores), (t, w) in zip(want, queries):
                        o_ids, o_scores = oracle(index, t, w, k)
                        assert ids.tolist() == o_ids
                        assert scores.tobytes() == np.asarray(o_scores, np.float32).tobytes()
                for packed in variants:
                    packed.block_cost = block_cost
                    got = packed.search_many(queries, k, strategy, approx, threads=2)
                    for (a, sa), (b, sb) in zip(want, got):
                        assert a.tolist() == b.tolist() and sa.tobytes() == sb.tobytes()
                    if strategy != "exhaustive":  # the same blocks scored: bounds equal bit for bit
                        assert packed.last_blocks_scored.tolist() == index.last_blocks_scored.tolist()


def test_pruned_search_learns_the_blocks_it_needs_per_hit():
    index = random_index(4, dtype=np.float32, bm25=True, shift=3).compressed()
    index.maxscore_terms = index.superblock_min = 0  # (short queries would go to MaxScore)
    queries = queries_for(index, 4)
    want = index.search_many(queries, 10, "exhaustive")
    index.blocks_per_hit = 1e6  # every query expected to need more blocks than its postings cost
    got = index.search_many(queries, 10, "pruned")
    assert index.last_blocks_scored.tolist() == [-1] * len(queries)  # read exhaustively, nothing learnt
    assert index.blocks_per_hit == 1e6
    index.blocks_per_hit = 0.5  # every query tries the blocks
    got2 = index.search_many(queries, 10, "pruned")
    scored = index.last_blocks_scored
    need = np.where(scored >= 0, scored, -1 - scored)
    assert (need > 0).any()
    assert index.blocks_per_hit == pytest.approx(0.75 * 0.5 + 0.25 * float(np.median(need[need > 0])) / 10)
    for (a, sa), (b, sb), (c, sc) in zip(want, got, got2):  # exact whatever it expected
        assert a.tolist() == b.tolist() == c.tolist() and sa.tobytes() == sb.tobytes() == sc.tobytes()


@pytest.mark.parametrize("arena", [0, 700, None])
def test_packed_kernel_stays_inside_its_buffers(arena):
    index = random_index(7, num_docs=2000, bm25=True)
    packed = index.compressed(blockmax_min=200, blockmax_ratio=1.5)
    queries = queries_for(index, 8, n=6)
    for mode, ms_terms in ((0, None), (1, 0), (1, None)):  # exhaustive, block-max, MaxScore
        want, _, _ = guarded_search(index, queries, 50, mode, block_cost=32.0)
        got, _, _ = guarded_search(packed, queries, 50, mode, block_cost=32.0, arena=arena, ms_terms=ms_terms)
        assert [w.tolist() for w in want] == [g.tolist() for g in got]


def test_plain_python_driver_equals_the_compiled_kernel():
    index = random_index(9, num_docs=700, num_terms=12, dtype=np.uint16).compressed(blockmax_min=0)
    queries = queries_for(index, 9, n=4)
    for mode, ms_terms in ((0, None), (1, 0), (1, None)):
        compiled, _, _ = guarded_search(index, queries, 20, mode, ms_terms=ms_terms)
        python, _, _ = guarded_search(index, queries, 20, mode, fn=kernels._search_packed, ms_terms=ms_terms)
        assert [k.tolist() for k in compiled] == [k.tolist() for k in python]


# -- indexes on disk ----------------------------------------------------------------------------

def test_built_indexes_are_packed_and_search_as_before(beir_dir, tmp_path):
    r = Retriever.build(beir_dir, tmp_path / "idx")
    m = r.manifest
    assert m["format_version"] == FORMAT_VERSION == 3 and m["postings"]["format"] == compress.FORMAT
    assert {"term_ptr.npy", "postings.npy", "impact_table.npy", "doc_norms.npy", "norm_table.npy"} <= set(m["files"])
    assert not {"offsets.npy", "postings_docs.npy", "bm_ptr.npy"} & set(m["files"])
    assert sorted(p.name for p in (tmp_path / "idx").iterdir() if "postings_" in p.name) == []
    index = r.searcher.index
    assert index.layout == compress.FORMAT
    index.verify()
    csr_index = index.uncompressed()
    for query in ({"vitamin": 1.0, "fractur": 2.0}, {"coffe": 1.0, "sleep": 1.0, "adult": 0.5}):
        for strategy in ("pruned", "exhaustive"):
            a, b = index.top_k(query, 6, strategy), csr_index.top_k(query, 6, strategy)
            assert a[0].tolist() == b[0].tolist() and a[1].tobytes() == b[1].tobytes()
    # the uncompressed layout can still be written, and loads
    with IndexWriter(tmp_path / "csr") as writer:
        assert index.save(writer, compressed=False) == {"format": CSR}
        writer.finish({"kind": "x", "doc_count": index.num_docs})
    again = InvertedIndex.load(tmp_path / "csr", index.num_docs)
    assert again.layout == CSR and again.top_k({"vitamin": 1.0}, 3)[0].tolist() == index.top_k({"vitamin": 1.0}, 3)[0].tolist()


def test_sparse_and_reordered_indexes_are_packed(tmp_path):
    vectors = tmp_path / "v.jsonl"
    rows = [{"id": f"v{i}", "contents": "x", "vector": {f"t{j}": 1.0 + (i * j) % 7 for j in range(i % 9 + 1)}}
            for i in range(150)]
    vectors.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for options in ({}, {"reorder": "bp"}, {"quantize": "float"}):
        r = Retriever.build(vectors, tmp_path / f"s{len(options)}{options.get('quantize', '')}", kind="sparse",
                            vectors=True, **options)
        assert r.manifest["postings"]["format"] == compress.FORMAT
        r.searcher.index.verify()
        assert [h.docid for h in r.search_weights({"t3": 1.0, "t8": 2.0}, k=5)]


@pytest.mark.parametrize("name", ["v1-bm25", "v1-sparse-vectors", "v2-bm25", "v2-sparse-vectors"])
def test_old_uncompressed_indexes_load_and_equal_their_packed_twin(name, tmp_path):
    root = tmp_path / name
    shutil.copytree(ROOT / "tests" / "data" / "old-indexes" / name, root)
    old = Retriever.load(root)
    index = old.searcher.index
    assert index.layout == CSR
    index.verify()
    twin = index.compressed()
    for t in range(len(index.terms)):
        for strategy in ("pruned", "exhaustive"):
            a = index.top_k_ids(np.array([t]), np.array([1.0], np.float32), 10, strategy)
            b = twin.top_k_ids(np.array([t]), np.array([1.0], np.float32), 10, strategy)
            assert a[0].tolist() == b[0].tolist() and a[1].tobytes() == b[1].tobytes()


def test_an_unknown_postings_format_is_a_clear_error(beir_dir, tmp_path):
    r = Retriever.build(beir_dir, tmp_path / "idx")
    reseal(r.path, lambda m: m["postings"].update(format="packed-v9"))
    with pytest.raises(IndexFormatError, match="postings format 'packed-v9'.*rebuild"):
        Retriever.load(r.path)


# -- corruption ---------------------------------------------------------------------------------

def reseal(root: Path, edit=lambda m: None) -> None:
    """Re-seal a manifest after editing files (sizes, checksums), as an adversary would."""
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    for name, info in m["files"].items():
        info.update(bytes=(root / name).stat().st_size, sha256=sha256_file(root / name))
    m[CHECKSUM_KEY] = manifest_digest(m)
    (root / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory):
    """A packed BM25 index with long lists (several chunks, stored block-max lists)."""
    root = tmp_path_factory.mktemp("packed")
    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(30)]
    p = 1 / np.arange(1, 31)
    lines = [json.dumps({"_id": f"d{i}", "title": "",
                         "text": " ".join(rng.choice(words, rng.integers(1, 40), p=p / p.sum()))})
             for i in range(6000)]
    (root / "c.jsonl").write_text("\n".join(lines) + "\n")
    r = Retriever.build(root / "c.jsonl", root / "idx", store_docs=False)
    packed = r.searcher.index.packed
    assert packed.df.max() > compress.BLOCKMAX_MIN  # several chunks, a stored block-max list
    return r.path


def search_all(root: Path):
    r = Retriever.load(root, verify=False)
    index = r.searcher.index
    for strategy in ("pruned", "exhaustive"):
        index.search_many([(np.arange(len(index.terms), dtype=np.int32), np.ones(len(index.terms), np.float32))]
                          + [(np.array([t], np.int32), np.ones(1, np.float32)) for t in range(len(index.terms))],
                          10, strategy)


def corrupt(packed_dir, tmp_path, edit_stream=None, edit_ptr=None):
    root = tmp_path / "idx"
    shutil.copytree(packed_dir, root)
    stream = np.load(root / "postings.npy")
    ptr = np.load(root / "term_ptr.npy")
    if edit_stream:
        edit_stream(stream, ptr)
        np.save(root / "postings.npy", stream)
    if edit_ptr:
        edit_ptr(ptr)
        np.save(root / "term_ptr.npy", ptr)
    reseal(root)
    return root


def longest(root):
    index = Retriever.load(root, verify=False).searcher.index
    return int(np.argmax(index.packed.df)), index


def expect_failure(root, load_error=False, search_may_pass=False):
    """Loading fails, or searching does (unless ``search_may_pass``: then it returns) and a full
    verify does: an IndexFormatError, never a crash."""
    from retriever.api import verify_index

    if load_error:
        with pytest.raises(IndexFormatError, match="corrupt postings"):
            Retriever.load(root)
        return
    if search_may_pass:
        try:
            search_all(root)
        except IndexFormatError:
            pass
    else:
        with pytest.raises(IndexFormatError, match="corrupt postings"):
            search_all(root)
    with pytest.raises(IndexFormatError, match="corrupt postings"):
        verify_index(root)


def term_state(index, t):
    p = index.packed
    state = np.zeros(kernels.NST, np.int64)
    assert kernels._open_term(np.asarray(p.stream), p.term_ptr, t, p.num_docs, len(p.table), len(p.norms),
                              len(p.norm_table), state) == 0
    return state


def test_a_chunk_width_above_32_fails_cleanly(packed_dir, tmp_path):
    t, index = longest(packed_dir)
    first_chunk = int(term_state(index, t)[kernels.ST_CHUNKS])

    def edit(stream, ptr):
        stream[first_chunk] = 40 | (stream[first_chunk] & 0xC0)  # doc gap width 40

    expect_failure(corrupt(packed_dir, tmp_path, edit))


def test_a_directory_offset_past_the_term_fails_cleanly(packed_dir, tmp_path):
    t, index = longest(packed_dir)
    state = term_state(index, t)
    offs, width = int(state[kernels.ST_OFFS]), int(state[kernels.ST_DWO])

    def edit(stream, ptr):
        stream[offs:offs + (width + 7) // 8] = 0xFF  # chunk 1 starts elsewhere

    expect_failure(corrupt(packed_dir, tmp_path, edit), search_may_pass=True)


def test_doc_gaps_past_the_collection_fail_cleanly(packed_dir, tmp_path):
    t, index = longest(packed_dir)
    state = term_state(index, t)
    last = int(state[kernels.ST_NC]) - 1
    at = int(state[kernels.ST_CHUNKS]) + kernels._bits_at(index.packed.stream, state[kernels.ST_OFFS], last - 1,
                                                          state[kernels.ST_DWO])

    def edit(stream, ptr):
        stream[at] = 32 | (stream[at] & 0xC0)  # 32-bit gaps: past the collection, or past the term
        stream[at + 2:int(ptr[t + 1])] = 0xFF

    expect_failure(corrupt(packed_dir, tmp_path, edit))


def test_a_code_outside_its_table_fails_cleanly(tmp_path):
    docs = [Doc(f"d{i}", f"t{i % 3}", " ".join(["cat"] * (1 + i % 5) + ["dog"] * (i % 7))) for i in range(300)]
    (tmp_path / "b").mkdir()
    index, _, _ = build_bm25_index(docs, Analyzer(), BM25Params(fields="multifield"), tmp_path / "b")
    packed = index.compressed()
    t = index.term_ids["cat"]
    state = term_state(packed, t)
    assert state[kernels.ST_MODE] == kernels.MODE_TABLE
    stream = np.array(packed.packed.stream)
    wd, _, h = kernels._chunk_header(stream, state[kernels.ST_CHUNKS], state[kernels.ST_END])
    vpos = int(state[kernels.ST_CHUNKS]) + h + (CHUNK * wd + 7) // 8
    stream[vpos:vpos + 4] = 0xFF  # codes at their width's maximum: past the table
    bad = PackedPostings(packed.packed.term_ptr, stream, packed.packed.table, index.num_docs)
    bad.check()
    broken = packed._like(bad)
    with pytest.raises(IndexFormatError, match="corrupt postings"):
        broken.top_k({"cat": 1.0}, 10, "exhaustive")
    with pytest.raises(IndexFormatError, match="code outside its table"):
        bad.verify()


@pytest.mark.parametrize("edit", ["past_end", "decreasing", "header"])
def test_bad_term_pointers_or_headers_fail_at_load(packed_dir, tmp_path, edit):
    t, _ = longest(packed_dir)

    def ptr_edit(ptr):
        if edit == "past_end":
            ptr[-1] += 5
        elif edit == "decreasing":
            ptr[t + 1] = ptr[t] - 1

    def stream_edit(stream, ptr):
        stream[ptr[t]] = 0xFF  # the df varint never ends inside the term ...
        stream[ptr[t] + 1:ptr[t + 1]] = 0xFF

    root = corrupt(packed_dir, tmp_path, stream_edit if edit == "header" else None,
                   ptr_edit if edit != "header" else None)
    expect_failure(root, load_error=True)


@FAST
@given(st.data())
def test_any_byte_edit_loads_searches_or_raises_our_error(packed_dir, tmp_path_factory, data):
    check_byte_edit(packed_dir, tmp_path_factory, data)


@pytest.mark.slow
@settings(SLOW, max_examples=400)
@given(st.data())
def test_any_byte_edit_long(packed_dir, tmp_path_factory, data):
    check_byte_edit(packed_dir, tmp_path_factory, data)


def check_byte_edit(packed_dir, tmp_path_factory, data):
    """Random bytes overwritten in the stream (re-sealed): a search returns or raises
    IndexFormatError, inside its buffers; when a full verify passes, searching succeeds."""
    from retriever.api import verify_index

    tmp = tmp_path_factory.mktemp("edit")
    stream = np.load(packed_dir / "postings.npy")
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(stream) - 1))
        stream[at] = data.draw(st.integers(0, 255))
    root = tmp / "idx"
    shutil.copytree(packed_dir, root)
    np.save(root / "postings.npy", stream)
    reseal(root)
    try:
        r = Retriever.load(root)
    except IndexFormatError:
        return
    index = r.searcher.index
    queries = [(np.array([t], np.int32), np.ones(1, np.float32)) for t in range(len(index.terms))]
    try:
        for mode in (0, 1):
            guarded_search(index, queries, 10, mode, block_cost=32.0, arena=data.draw(st.sampled_from([0, None])))
        search_all(root)
        searched = True
    except IndexFormatError:
        searched = False
    try:
        verify_index(root)
    except IndexFormatError:
        return
    assert searched, "verify passed but a search failed"
