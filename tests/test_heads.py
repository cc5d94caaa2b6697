"""The ``heads`` strategy (indexing.heads): per-term heads and per-document forward lists derived
from packed postings; candidates scored exactly. Reading every posting (depth and candidates at
least the postings and documents) returns exactly the exhaustive result; fewer return exact scores
for fewer documents; stale, missing and corrupt heads fail with a clear error."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from indexing import heads
from indexing.inverted import InvertedIndex
from indexing.manifest import IndexFormatError


def _index(tmp_path, seed=0, num_docs=900, num_terms=60, ints=True, ties=False, cap=4096):
    """A packed index with skewed term frequencies, its heads derived into ``tmp_path/heads``."""
    rng = np.random.default_rng(seed)
    p = np.minimum(0.6, 3.0 / (1 + np.arange(num_terms)) ** 0.8)
    dense = rng.random((num_docs, num_terms)) < p
    dense[:, -1] = False
    dense[rng.integers(0, num_docs), -1] = True  # a term in one document only
    if ints or ties:
        vals = rng.integers(1, 4 if ties else 3000, size=dense.shape).astype(np.float32)
    else:
        vals = (rng.random(dense.shape) * 3).astype(np.float32)
    matrix = np.where(dense, vals, 0).astype(np.float32)
    d, t = np.nonzero(matrix)
    index = InvertedIndex.from_postings([f"t{i}" for i in range(num_terms)], t, d, matrix[d, t], num_docs)
    index = index.compressed()
    index.root = tmp_path
    heads.derive(index, tmp_path / heads.HEADS_DIR, cap=cap)
    return index, matrix


def _queries(rng, num_terms, n=25):
    out = []
    for i in range(n):
        size = [1, 2, 5, 20, 60][i % 5]
        terms = rng.choice(num_terms, min(size, num_terms), replace=False).astype(np.int32)
        if i % 7 == 3:
            terms = np.r_[terms, terms[:2]]  # a term repeated: each occurrence adds, as exhaustively
        out.append((terms, rng.integers(1, 5, len(terms)).astype(np.float32)))
    return out


def _same(a, b):
    return a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()


@pytest.mark.parametrize("seed,ints,ties", [(0, True, False), (1, False, False), (2, True, True)])
@pytest.mark.parametrize("k", [1, 10, 2000])
def test_every_posting_read_equals_exhaustive(tmp_path, seed, ints, ties, k):
    index, _ = _index(tmp_path, seed, ints=ints, ties=ties)
    queries = _queries(np.random.default_rng(seed), len(index.terms))
    exact = index.search_many(queries, k, "exhaustive")
    got = index.search_many(queries, k, "heads", heads_depth=10**6, candidates=10**6)
    assert all(_same(a, b) for a, b in zip(got, exact))
    assert (index.last_route == 3).all()
    huge = index.search_many(queries, k, "heads", heads_depth=10**20, candidates=10**20)  # (past int64: clamped)
    assert all(_same(a, b) for a, b in zip(huge, exact))


def test_fewer_candidates_return_exact_scores_of_fewer_documents(tmp_path):
    index, matrix = _index(tmp_path, 3, ints=False)
    queries = _queries(np.random.default_rng(3), len(index.terms))
    missed = 0
    for (terms, w), (ids, scores), (eids, _) in zip(
            queries, index.search_many(queries, 10, "heads", heads_depth=8, candidates=12),
            index.search_many(queries, 10, "exhaustive")):
        assert len(ids) == min(10, len(eids)) or len(ids) < len(eids)
        assert (np.diff(scores) <= 0).all()
        full = index.search_many([(terms, w)], index.num_docs, "exhaustive")[0]
        exact = dict(zip(full[0].tolist(), full[1].tolist()))
        assert all(exact[i] == s for i, s in zip(ids.tolist(), scores.tolist()))  # bit for bit
        missed += len(set(eids.tolist()) - set(ids.tolist()))
    assert missed > 0  # depth 8 of heads of up to 540 postings: an approximation, measurably


def test_candidates_at_least_k(tmp_path):
    index, _ = _index(tmp_path, 4)
    q = [(np.arange(10, dtype=np.int32), np.ones(10, np.float32))]
    ids, _ = index.search_many(q, 300, "heads", heads_depth=10**6, candidates=5)[0]
    exact_ids, _ = index.search_many(q, 300, "exhaustive")[0]
    assert ids.tolist() == exact_ids.tolist()


@pytest.mark.parametrize("seed", range(6))
def test_candidates_are_the_best_partials_with_every_tie(seed):
    """``heads._candidates`` (the cut estimated from a sample of the table, then exact) against
    the definition: every document whose partial score reaches the ``n_cand``-th best; with
    ties at the cut, a sample holding the best scores (an estimate too high), tables full to
    the output's last slot, and fewer documents than candidates."""
    rng = np.random.default_rng(seed)
    for bits in (10, 12):
        size = 1 << bits
        for nt in (1, 5, size // 4, size // 2, size - 1):
            hkeys = np.full(size, -1, dtype=np.int32)
            hvals = np.zeros(size, dtype=np.float32)
            slots = rng.choice(size, nt, replace=False)
            hkeys[slots] = rng.choice(10**6, nt, replace=False)
            hvals[slots] = rng.integers(1, 6 if seed % 2 else 1000, nt).astype(np.float32)  # few values: ties
            if seed == 5:  # the best scores all in the sampled first eighth: the estimate overshoots
                hvals[slots] = np.where(slots < size >> 3, 2000.0, hvals[slots]).astype(np.float32)
            for n_cand in (1, 3, 64, nt, nt + 7):
                out = np.empty(nt, dtype=np.int32)  # no room to spare
                n_c = heads._candidates(hkeys, hvals, size - 1, nt, n_cand, out)
                vals = np.sort(hvals[slots])[::-1]
                cut = vals[min(n_cand, nt) - 1]
                want = sorted(hkeys[slots][hvals[slots] >= cut].tolist())
                assert sorted(out[:n_c].tolist()) == want


def test_default_knobs_grow_with_the_collection(tmp_path, monkeypatch):
    """Knobs not given come from ``heads.default_knobs`` by the index's size: the 1M defaults up
    to ``LARGE`` documents, the 10M ones above."""
    assert heads.default_knobs(heads.LARGE) == (heads.DEPTH, heads.CANDIDATES)
    assert heads.default_knobs(heads.LARGE + 1) == (heads.LARGE_DEPTH, heads.LARGE_CANDIDATES)
    index, _ = _index(tmp_path, 13)
    queries = _queries(np.random.default_rng(13), len(index.terms))
    monkeypatch.setattr(heads, "DEPTH", 1)
    monkeypatch.setattr(heads, "CANDIDATES", 1)
    monkeypatch.setattr(heads, "LARGE_DEPTH", 3)
    monkeypatch.setattr(heads, "LARGE_CANDIDATES", 12)
    small = index.search_many(queries, 10, "heads", heads_depth=1, candidates=1)
    large = index.search_many(queries, 10, "heads", heads_depth=3, candidates=12)
    assert not all(_same(a, b) for a, b in zip(small, large))  # (the two settings differ here)
    got = index.search_many(queries, 10, "heads")
    assert all(_same(a, b) for a, b in zip(got, small))
    monkeypatch.setattr(heads, "LARGE", index.num_docs - 1)
    got = index.search_many(queries, 10, "heads")
    assert all(_same(a, b) for a, b in zip(got, large))


def test_heads_are_the_largest_impacts_and_forward_lists_the_documents(tmp_path):
    index, matrix = _index(tmp_path, 5, ties=True, cap=50)
    h = index.ensure_heads()
    for t in range(matrix.shape[1]):
        col = matrix[:, t]
        docs = np.flatnonzero(col)
        order = docs[np.lexsort((docs, -col[docs]))][:50]  # impact descending, doc ascending
        got = h.head_docs[h.head_ptr[t]:h.head_ptr[t + 1]]
        assert got.tolist() == order.tolist()
        assert h.head_vals[h.head_ptr[t]:h.head_ptr[t + 1]].tolist() == col[order].tolist()
    assert h.fwd_terms.dtype == np.uint16 and h.fwd_vals.dtype == np.uint16
    for d in (0, 17, matrix.shape[0] - 1):
        terms = np.flatnonzero(matrix[d])
        assert h.fwd_terms[h.doc_ptr[d]:h.doc_ptr[d + 1]].tolist() == terms.tolist()
        assert h.fwd_vals[h.doc_ptr[d]:h.doc_ptr[d + 1]].tolist() == matrix[d, terms].tolist()


def test_passes_over_document_ranges_write_the_same_lists(tmp_path):
    index, _ = _index(tmp_path / "a", 6, ints=False)
    heads.derive(index, tmp_path / "b", range_entries=37)  # many passes, some of one document
    one, many = heads.Heads(tmp_path / "a" / "heads", index.num_docs, len(index.terms)), \
        heads.Heads(tmp_path / "b", index.num_docs, len(index.terms))
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["build"]["passes"] > 10
    assert one.fwd_vals.dtype == np.float32  # impacts that are not integers stay float32
    for name in heads.FILES:
        name = name[:-len(".npy")]
        assert np.array_equal(getattr(one, name), getattr(many, name)), name
    record = heads.derive(index, tmp_path / "c", cap=10**20)  # past int64: clamped, whole lists kept
    whole = heads.Heads(tmp_path / "c", index.num_docs, len(index.terms))
    assert record["cap"] == 2**31 - 1 and len(whole.head_docs) == index.num_postings


def test_threads_give_the_same_results(tmp_path):
    index, _ = _index(tmp_path, 7)
    queries = _queries(np.random.default_rng(7), len(index.terms), n=40)
    one = index.search_many(queries, 10, "heads", heads_depth=30, candidates=20)
    two = index.search_many(queries, 10, "heads", heads_depth=30, candidates=20, threads=2)
    assert all(_same(a, b) for a, b in zip(one, two))


def test_knobs_are_checked(tmp_path):
    index, _ = _index(tmp_path, 8)
    q = [(np.array([0], np.int32), np.ones(1, np.float32))]
    for bad in ({"heads_depth": 0}, {"candidates": -1}, {"heads_depth": 2.5}, {"candidates": True}):
        with pytest.raises(ValueError, match="positive integer"):
            index.search_many(q, 10, "heads", **bad)


def test_missing_and_corrupt_heads_fail_clearly(tmp_path):
    index, _ = _index(tmp_path / "x", 9)
    bare = InvertedIndex.from_postings(["a"], np.array([0]), np.array([0]), np.array([1.0], np.float32), 1)
    bare = bare.compressed()
    q = [(np.array([0], np.int32), np.ones(1, np.float32))]
    with pytest.raises(IndexFormatError, match="retriever heads"):
        bare.search_many(q, 10, "heads")
    bare.root = tmp_path / "empty"
    with pytest.raises(IndexFormatError, match="no heads"):
        bare.search_many(q, 10, "heads")
    # a doc id out of range in a head: refused by its checksum; unchecked (verify=False), the
    # query fails and nothing is read outside the arrays
    docs_file = tmp_path / "x" / "heads" / "head_docs.npy"
    arr = np.load(docs_file)
    t = int(np.searchsorted(index.ensure_heads().head_ptr, 0, side="right") - 1)
    arr[0] = index.num_docs + 5
    np.save(docs_file, arr)
    index._heads = None
    with pytest.raises(IndexFormatError, match="head_docs.npy: checksum does not match"):
        index.search_many([(np.array([t], np.int32), np.ones(1, np.float32))], 10, "heads")
    index.verify_heads = False
    with pytest.raises(IndexFormatError, match="corrupt heads.*retriever heads"):
        index.search_many([(np.array([t], np.int32), np.ones(1, np.float32))], 10, "heads")
    # a truncated file: refused at open, by the size its manifest records
    vals = tmp_path / "x" / "heads" / "fwd_vals.npy"
    whole = vals.read_bytes()
    vals.write_bytes(whole[:-2])
    index._heads = None
    with pytest.raises(IndexFormatError, match="fwd_vals.npy.*corrupt"):
        index.search_many([(np.array([t], np.int32), np.ones(1, np.float32))], 10, "heads")
    vals.write_bytes(whole)
    # heads for another index (other counts)
    index._heads = None
    with pytest.raises(IndexFormatError, match="made for"):
        heads.Heads(tmp_path / "x" / "heads", index.num_docs + 1, len(index.terms))



def test_forward_pointers_and_terms_out_of_range_fail_clearly(tmp_path):
    """Corrupt forward lists never make the kernel read outside its arrays: inner ``doc_ptr``
    entries past the forward arrays (first and last intact) are refused at open; negative term
    ids in int32 forward lists (a vocabulary past 65,536) fail the query."""
    num_terms, num_docs = 66_000, 300
    rng = np.random.default_rng(3)
    t = np.r_[np.arange(num_terms), np.zeros(num_docs, np.int64)]
    d = np.r_[rng.integers(0, num_docs, num_terms), np.arange(num_docs)]
    key = np.unique(d * num_terms + t)
    d, t = key // num_terms, key % num_terms
    index = InvertedIndex.from_postings([f"t{i}" for i in range(num_terms)], t, d,
                                        rng.integers(1, 9, len(t)).astype(np.float32), num_docs).compressed()
    index.root = tmp_path
    heads.derive(index, tmp_path / heads.HEADS_DIR)
    index.verify_heads = False  # (the kernel's own guards, as when loaded with verify=False)
    q = [(np.array([0, 5], np.int32), np.ones(2, np.float32))]
    assert index.search_many(q, 10, "heads")[0][0].size == 10
    root = tmp_path / heads.HEADS_DIR
    terms = np.load(root / "fwd_terms.npy")
    assert terms.dtype == np.int32
    bad = terms.copy()
    bad[:] = -5
    np.save(root / "fwd_terms.npy", bad)
    index._heads = None
    with pytest.raises(IndexFormatError, match="term outside the index"):
        index.search_many(q, 10, "heads")
    np.save(root / "fwd_terms.npy", terms)
    ptr = np.load(root / "doc_ptr.npy")
    bad = ptr.copy()
    bad[1:-1] += 1 << 40
    np.save(root / "doc_ptr.npy", bad)
    index._heads = None
    with pytest.raises(IndexFormatError, match="corrupt heads"):
        index.search_many(q, 10, "heads")
    bad = ptr.copy()
    bad[[1, 2]] = bad[[2, 1]] if bad[2] != bad[1] else (bad[1] + 1, bad[1])  # one step backwards
    np.save(root / "doc_ptr.npy", bad)
    index._heads = None
    with pytest.raises(IndexFormatError, match="corrupt heads"):
        index.search_many(q, 10, "heads")


def test_info_verify_checks_the_heads(tmp_path):
    from retriever.api import verify_index

    out = _bm25_index(tmp_path)
    heads.derive_index(out)
    assert any("heads" in line and "checksums" in line for line in verify_index(out))
    vals = out / heads.HEADS_DIR / "head_vals.npy"
    data = bytearray(vals.read_bytes())
    data[-1] ^= 0x40  # same size: only the checksum notices
    vals.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="head_vals.npy: checksum"):
        verify_index(out)
    from retriever import Retriever

    with pytest.raises(IndexFormatError, match="head_vals.npy: checksum"):  # a search, as the index's files
        Retriever.load(out, strategy="heads").search("w1 w2", k=3)
    assert len(Retriever.load(out, strategy="heads", verify=False).search("w1 w2", k=3)) == 3  # (unchecked)

def _bm25_index(tmp_path):
    from retriever import Retriever

    corpus = tmp_path / "corpus.jsonl"
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    with open(corpus, "w") as f:
        for i in range(300):
            text = " ".join(rng.choice(words, int(rng.integers(3, 12)), p=None))
            f.write(json.dumps({"_id": f"d{i}", "text": text}) + "\n")
    out = tmp_path / "idx"
    Retriever.build(corpus, out, kind="bm25")
    return out


def test_cli_heads_then_search_and_stale_heads(tmp_path):
    from retriever import Retriever
    from retriever.cli import main

    out = _bm25_index(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["heads", str(out)])
    assert res.exit_code == 0, res.output
    assert "forward lists" in res.output
    assert "heads      cap=4096" in runner.invoke(main, ["info", str(out)]).output
    res = runner.invoke(main, ["heads", str(out)])
    assert res.exit_code != 0 and "already exists" in res.output
    exact = Retriever.load(out, strategy="exhaustive").search("w1 w2 w3", k=10)
    full = Retriever.load(out, strategy="heads", heads_depth=10**6, candidates=10**6).search("w1 w2 w3", k=10)
    assert exact == full
    res = runner.invoke(main, ["search", str(out), "w1 w2", "--strategy", "heads", "--heads-depth", "50",
                               "--candidates", "3"])
    assert res.exit_code == 0, res.output
    # k 10 > 3 candidates: at least k documents are scored
    assert len([line for line in res.output.splitlines() if line.strip()]) == 10
    # an index rebuilt drops its heads; heads of another version of it are refused
    loaded = Retriever.load(out, strategy="heads")  # its heads not opened yet (they open on first use)
    Retriever.build(tmp_path / "corpus.jsonl", out, kind="bm25", overwrite=True, k1=1.2)
    assert not (out / "heads").exists()  # rebuilding replaced the directory: heads are gone
    res = runner.invoke(main, ["heads", str(out)])
    assert res.exit_code == 0, res.output
    with pytest.raises(IndexFormatError, match="rebuilt since this index was loaded"):
        loaded.search("w1 w2 w3", k=10)  # the new version's heads would name other documents
    manifest = json.loads((out / "heads" / "manifest.json").read_text())
    assert manifest["of"] == heads.parent_checksum(out)
    m = json.loads((out / "manifest.json").read_text())
    from indexing.manifest import write_manifest

    write_manifest(out, {**m, "corpus": {**m.get("corpus", {}), "note": "edited"}})
    assert "stale" in runner.invoke(main, ["info", str(out)]).output
    with pytest.raises(IndexFormatError, match="another version"):
        Retriever.load(out, strategy="heads").search("w1", k=3)


def test_cli_heads_refuses_other_kinds(tmp_path):
    from retriever.cli import main

    idx = tmp_path / "idx"
    idx.mkdir()
    from indexing.manifest import write_manifest

    write_manifest(idx, {"format_version": 3, "kind": "dense", "backend": "faiss", "doc_count": 0, "files": {}})
    res = CliRunner().invoke(main, ["heads", str(idx)])
    assert res.exit_code != 0 and "heads are for native bm25 and sparse" in res.output


def test_spread_reads_the_largest_contributions_within_the_budget(tmp_path):
    index, _ = _index(tmp_path, 10, ints=False)
    h = index.ensure_heads()
    rng = np.random.default_rng(10)
    for _ in range(20):
        terms = rng.choice(len(index.terms), 6, replace=False).astype(np.int32)
        w = (rng.random(6) * 4 + 0.1).astype(np.float32)
        ends = np.zeros(6, np.int64)
        heads._ends(terms, w, 0, 6, h.head_ptr, h.head_vals, 20, ends)
        read, unread = [], []
        for j, t in enumerate(terms):
            contrib = (w[j] * h.head_vals[h.head_ptr[t]:h.head_ptr[t + 1]]).tolist()
            n = ends[j] - h.head_ptr[t]
            read += contrib[:n]
            unread += contrib[n:]
        assert len(read) <= 20 * 6
        assert not read or not unread or min(read) >= max(unread)
        assert len(read) >= 20 * 6 - sum(x == max(unread) for x in read + unread) if unread else True


def test_sharded_index_heads_per_shard_equal_unsharded(tmp_path):
    from retriever import Retriever
    from retriever.cli import main

    one = _bm25_index(tmp_path)
    Retriever.build(tmp_path / "corpus.jsonl", tmp_path / "three", kind="bm25", shards=3)
    res = CliRunner().invoke(main, ["heads", str(tmp_path / "three")])
    assert res.exit_code == 0, res.output
    assert "3 shards" in res.output
    everything = {"strategy": "heads", "heads_depth": 10**6, "candidates": 10**6}
    for q in ("w1 w2 w3", "w7", "w0 w39 w12 w5"):
        assert Retriever.load(tmp_path / "three", **everything).search(q, k=20) == \
            Retriever.load(one, strategy="exhaustive").search(q, k=20)
    shard = tmp_path / "three" / "shards" / "001"
    vals = shard / "heads" / "fwd_vals.npy"
    data = bytearray(vals.read_bytes())
    data[-1] ^= 0x40  # a shard's heads changed, same size: refused as the shards' own files are
    vals.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="fwd_vals.npy: checksum"):
        Retriever.load(tmp_path / "three", **everything).search("w1 w2 w3", k=20)


def test_preload_copies_or_falls_back_to_the_mapping(tmp_path, monkeypatch):
    index, _ = _index(tmp_path, 11)
    queries = _queries(np.random.default_rng(11), len(index.terms))
    want = index.search_many(queries, 10, "heads", heads_depth=40, candidates=30)
    h = heads.Heads(tmp_path / "heads", index.num_docs, len(index.terms))
    assert isinstance(h.fwd_terms, np.memmap)
    h.preload()
    assert not isinstance(h.fwd_terms, np.memmap)  # in this process's memory now

    def no_memory(arr):
        raise MemoryError

    monkeypatch.setattr(heads, "_in_memory", no_memory)
    index._heads = None
    mapped = index.ensure_heads()
    assert isinstance(mapped.fwd_terms, np.memmap)  # too big to copy: searched from the mapping
    got = index.search_many(queries, 10, "heads", heads_depth=40, candidates=30)
    assert all(_same(a, b) for a, b in zip(got, want))


def test_threads_opening_at_once_share_one_copy(tmp_path):
    import threading

    index, _ = _index(tmp_path, 12)
    got, barrier = [], threading.Barrier(4)

    def open_it():
        barrier.wait()
        got.append(index.ensure_heads())

    workers = [threading.Thread(target=open_it) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(got) == 4 and all(h is got[0] for h in got)


@pytest.mark.parametrize("when", ["during the load", "while writing"])
def test_heads_of_an_index_rebuilt_meanwhile_are_refused_not_stamped(tmp_path, monkeypatch, when):
    """`retriever index --overwrite` while `retriever heads` runs. During the load: the heads of
    the old generation were stamped with the new one's checksum (read again after the load) and
    its heads searches returned wrong documents (20 of 20 queries). While writing: the arrays went
    into the old directory, removed by the rebuild, and an empty heads directory was swapped into
    the new one with exit 0. Both now fail with one line and leave the new index without heads."""
    from indexing import inverted
    from retriever import Retriever

    out = _bm25_index(tmp_path)
    rebuild = lambda: Retriever.build(tmp_path / "corpus.jsonl", out, kind="bm25", overwrite=True, k1=1.1)  # noqa: E731
    if when == "during the load":
        real = inverted.InvertedIndex.load.__func__

        def load_then_rebuild(cls, *args, **kwargs):
            monkeypatch.setattr(inverted.InvertedIndex, "load", classmethod(real))  # (the rebuild loads too)
            index = real(cls, *args, **kwargs)
            rebuild()
            return index

        monkeypatch.setattr(inverted.InvertedIndex, "load", classmethod(load_then_rebuild))
    else:
        real_fill = heads._fill

        def fill_then_rebuild(*args):
            monkeypatch.setattr(heads, "_fill", real_fill)
            status = real_fill(*args)
            rebuild()
            return status

        monkeypatch.setattr(heads, "_fill", fill_then_rebuild)
    with pytest.raises(IndexFormatError, match="rebuilt while its heads were derived|vanished while it was written"):
        heads.derive_index(out)
    monkeypatch.undo()
    assert not (out / heads.HEADS_DIR).exists()
    assert heads.derive_index(out)["heads"] > 0  # derived again, they serve the new index
    exact = Retriever.load(out, strategy="exhaustive").search("w1 w2 w3", k=10)
    assert Retriever.load(out, strategy="heads", heads_depth=10**6, candidates=10**6).search("w1 w2 w3", k=10) == exact


def test_a_second_derivation_fails_before_counting(tmp_path, monkeypatch):
    from indexing.manifest import IndexBusyError, WriterLock

    out = _bm25_index(tmp_path)
    counted = []
    real_count = heads._count
    monkeypatch.setattr(heads, "_count", lambda *a: counted.append(1) or real_count(*a))
    first = WriterLock(out / heads.HEADS_DIR)  # a derivation in progress
    try:
        with pytest.raises(IndexBusyError, match="another process"):
            heads.derive_index(out)
    finally:
        first.release()
    assert counted == []  # (it failed after the whole counting pass: 10.6 s on a test index)


def test_a_full_disk_is_one_error_not_sigbus(tmp_path, monkeypatch):
    """Pages written through a mapping of a sparse file on a full disk killed `retriever heads`
    with SIGBUS (exit 135, no message; tmpfs, measured). The mapped files' blocks are reserved
    first, so a full disk is an OSError naming the file, and nothing is left in the index."""
    import errno
    import os

    out = _bm25_index(tmp_path)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(heads.os, "posix_fallocate", full)
    with pytest.raises(OSError, match=r"cannot reserve [\d,]+ bytes for .*head_docs.npy \(No space left"):
        heads.derive_index(out)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("heads")) == []


@pytest.mark.parametrize("scale", [1.4e-45, 3e38])
def test_weights_at_float32s_extremes(tmp_path, scale):
    """Subnormal and overflowing sums: heads reading every posting is the exhaustive result, and a
    shallow one returns exact scores, best first, for what it finds."""
    index, _ = _index(tmp_path, 2, ties=True)
    queries = [(t, np.minimum(w.astype(np.float64) * scale, 3.3e38).astype(np.float32))
               for t, w in _queries(np.random.default_rng(2), len(index.terms))]
    exact = index.search_many(queries, 10, "exhaustive")
    every = index.search_many(queries, 10, "heads", heads_depth=10**6, candidates=10**6)
    assert all(_same(a, b) for a, b in zip(every, exact))
    full = index.search_many(queries, index.num_docs, "exhaustive")
    for (ids, scores), (all_ids, all_scores) in zip(index.search_many(queries, 10, "heads", heads_depth=4,
                                                                      candidates=10), full):
        truth = dict(zip(all_ids.tolist(), all_scores.tolist()))
        assert [truth[i] for i in ids.tolist()] == scores.tolist()
        assert scores.tolist() == sorted(scores.tolist(), reverse=True)
