"""Property tests: the impact kernels (uncompressed and packed postings) equal a numpy oracle
for any weights and postings, and the index loader, given any edit of a manifest, loads or
raises our error, and never opens a path outside the index. Seeded (derandomised) by default;
``-m slow`` runs many more examples."""

import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import guarded_search

from indexing.compress import Bm25Model, bm25_impact
from indexing.inverted import InvertedIndex
from indexing.manifest import (
    CHECKSUM_KEY,
    IndexFormatError,
    manifest_digest,
    sha256_file,
)
from retriever import Retriever

FAST = settings(derandomize=True, max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(derandomize=False, max_examples=3000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- the kernel against numpy -------------------------------------------------------------------

SPECIAL = [0.0, 1e-45, 3e-45, 1e-40, 1e-38, 1e-30, 0.5, 1.0, 3.0, 1e30, 1e38, 3.4e38]
IMPACT = st.one_of(st.just(0.0), st.sampled_from(SPECIAL), st.floats(0, 1e6, width=32))
WEIGHT = st.one_of(st.sampled_from(SPECIAL + [-1.0, -0.0, 5e-324]),
                   st.floats(-10, 1e6, width=32), st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def impact_indexes(draw):
    num_docs = draw(st.integers(1, 40))
    num_terms = draw(st.integers(1, 16))
    quantized = draw(st.sampled_from([None, np.uint8, np.uint16, "bm25"]))
    # adversarial: mostly zero and denormal impacts, whose contributions leave scores at 0
    impact = st.sampled_from([0.0, 0.0, 1e-45, 1.0]) if draw(st.booleans()) else IMPACT
    model = None
    if quantized == "bm25":  # impacts computed as BM25 computes them: stored packed as tf + length byte
        idf = np.array(draw(st.lists(st.sampled_from([1e-30, 0.01, 0.5, 2.3, 7.0, 1e20]), min_size=num_terms,
                                     max_size=num_terms)), np.float32)
        table = (np.float32(1) / (np.float32(0.9) * (np.float32(0.6) + np.float32(0.4)
                                                    * np.arange(256, dtype=np.float32) / np.float32(7.3))))
        lengths = np.array(draw(st.lists(st.integers(0, 255), min_size=num_docs, max_size=num_docs)), np.uint8)
        model = Bm25Model(idf, lengths, table.astype(np.float32))
    offsets, docs, impacts = [0], [], []
    for t in range(num_terms):
        ids = sorted(draw(st.sets(st.integers(0, num_docs - 1), max_size=num_docs)))
        docs += ids
        if quantized is None:
            impacts += [draw(impact) for _ in ids]
        elif quantized == "bm25":
            tfs = np.array([draw(st.sampled_from([1, 1, 2, 3, 40, 70000])) for _ in ids], np.float32)
            impacts += bm25_impact(idf[t], tfs, table[lengths[ids]]).tolist()
        else:
            impacts += [draw(st.integers(0, np.iinfo(quantized).max)) for _ in ids]
        offsets.append(len(docs))
    dtype = quantized if quantized not in (None, "bm25") else np.float32
    scale = None if quantized in (None, "bm25") else draw(st.sampled_from([1.0, 10.0, 100.0, 1e-3]))
    terms = [f"t{i}" for i in range(num_terms)]
    index = InvertedIndex(terms, np.array(offsets, np.int64), np.array(docs, np.int32),
                          np.array(impacts, dtype), num_docs, scale, model=model)
    index.block_cost = draw(st.sampled_from([0.0, 32.0]))  # 0: always the block-max kernel, never the fallback
    index.shift = draw(st.sampled_from([6, 6, 2, 0]))  # small blocks: several blocks, stored block-max lists
    if draw(st.booleans()):  # ties by another order (as doc id strings order them)
        index.set_tie_order(np.array(draw(st.permutations(range(num_docs))), dtype=np.int32))
    return index


def oracle(index, query, k):
    """Accumulate in float32, term by term in query order (the kernel's order); best k by raw
    score then id; then divided by the scale, as the kernel does."""
    acc = np.zeros(index.num_docs, np.float32)
    for term, w in query.items():
        w32 = np.float32(w)
        if term not in index.term_ids or not w32 > 0:
            continue
        t = index.term_ids[term]
        s, e = index.offsets[t], index.offsets[t + 1]
        with np.errstate(over="ignore"):
            acc[index.docs[s:e]] += w32 * index.impacts[s:e].astype(np.float32)
    hits = sorted(np.flatnonzero(acc > 0).tolist(), key=lambda d: (-acc[d], index.tie_rank[d]))[:k]
    scores = acc[hits]
    return hits, (scores / np.float32(index.scale) if index.scale else scores)


def check_kernel(index, query, k):
    with np.errstate(over="ignore"):
        finite = all(np.isfinite(np.float32(w)) for w in query.values())
    if not finite:
        with pytest.raises(ValueError, match="finite"):
            index.top_k(query, k)
        return
    # the same postings packed: stored block-max lists wherever a term has two postings per block
    packed = index.compressed(blockmax_min=0, blockmax_ratio=2)
    with np.errstate(over="ignore"):
        want_ids, want_scores = oracle(index, query, k)
        for searched in (index, packed):
            for strategy in ("pruned", "exhaustive"):
                ids, scores = searched.top_k(query, k, strategy)
                assert ids.tolist() == want_ids
                assert scores.tobytes() == np.asarray(want_scores, np.float32).tobytes()  # bit for bit
    check_buffers(index, query)
    check_buffers(packed, query, arena=0)  # chunk by chunk
    check_buffers(packed, query)  # decoded whole into the arena


def check_buffers(index, query, k=10, arena=None):
    """Both kernels on scratch buffers followed by sentinels (nothing written past them, scratch
    zeroed) agree with each other."""
    q = index.encode(query)
    exhaustive, _, _ = guarded_search(index, [q], k, 0, arena=arena)
    pruned, _, _ = guarded_search(index, [q], k, 1, arena=arena)
    assert exhaustive[0].tolist() == pruned[0].tolist()


QUERIES = st.dictionaries(st.sampled_from([f"t{i}" for i in range(12)] + ["unknown"]), WEIGHT, max_size=12)


@FAST
@given(impact_indexes(), QUERIES, st.integers(1, 50))
def test_kernel_equals_the_oracle(index, query, k):
    check_kernel(index, query, k)


@pytest.mark.slow
@SLOW
@given(impact_indexes(), QUERIES, st.integers(1, 50))
def test_kernel_equals_the_oracle_long(index, query, k):
    check_kernel(index, query, k)


@st.composite
def long_list_indexes(draw):
    """Indexes whose terms reach past a chunk (128 postings: stored block-max lists, superblock
    summaries), built from drawn parameters and a seed (lists this long drawn element by element
    would be slow to generate and to shrink): lengths from one posting to every document, impacts
    as floats, small integers (ties), quantised bytes or BM25's tf and length byte."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    num_docs = draw(st.integers(129, 700))
    num_terms = draw(st.integers(1, 20))
    kind = draw(st.sampled_from(["float", "ties", "uint8", "bm25"]))
    model = None
    if kind == "bm25":
        idf = rng.choice(np.array([0.01, 0.5, 2.3, 7.0], np.float32), num_terms)
        table = (np.float32(1) / (np.float32(0.9) * (np.float32(0.6) + np.float32(0.4)
                                                    * np.arange(256, dtype=np.float32) / np.float32(7.3))))
        lengths = rng.integers(0, 256, num_docs).astype(np.uint8)
        model = Bm25Model(idf, lengths, table.astype(np.float32))
    offsets, docs, impacts = [0], [], []
    for t in range(num_terms):
        share = draw(st.sampled_from([0.002, 0.05, 0.3, 0.9, 1.0]))
        ids = np.flatnonzero(rng.random(num_docs) < share)
        if kind == "bm25":
            tfs = rng.choice(np.array([1, 1, 2, 3, 40], np.float32), len(ids))
            vals = bm25_impact(idf[t], tfs, table[lengths[ids]])
        elif kind == "float":
            vals = rng.random(len(ids)).astype(np.float32) * np.float32(10)
        else:
            vals = rng.integers(1, 4 if kind == "ties" else 256, len(ids))
        docs += ids.tolist()
        impacts += vals.tolist()
        offsets.append(len(docs))
    dtype = np.uint8 if kind == "uint8" else np.float32
    scale = 10.0 if kind == "uint8" else None
    index = InvertedIndex([f"t{i}" for i in range(num_terms)], np.array(offsets, np.int64),
                          np.array(docs, np.int32), np.array(impacts, dtype), num_docs, scale, model=model)
    index.shift = draw(st.sampled_from([0, 2, 3, 6]))
    if draw(st.booleans()):
        index.set_tie_order(rng.permutation(num_docs).astype(np.int32))
    return index


ROUTES = st.fixed_dictionaries({
    "maxscore_terms": st.sampled_from([0, 0, 16]),  # 0: every pruned query by block-max bounds
    "superblock_shift": st.sampled_from([0, 1, 2, 6]),
    "superblock_min": st.sampled_from([None, 0, 1, 2]),  # 0: no superblocks (the plain packed kernel)
    "whole": st.sampled_from([0, 2048]),  # terms decoded whole into the arena up to this many postings
    "blockmax_ratio": st.sampled_from([0.5, 2, 64]),  # stored block-max lists for more or fewer terms
    "seek_cost": st.sampled_from([0.0, 8.0]),  # MaxScore's: 0 cuts wherever the bounds allow
})
LONG_QUERIES = st.dictionaries(st.sampled_from([f"t{i}" for i in range(20)] + ["unknown"]),
                               st.one_of(st.sampled_from([1.0, 2.0, 0.5, 1e-3, 0.0, -1.0]),
                                         st.floats(0.0625, 100, width=32),
                                         st.sampled_from(SPECIAL)), max_size=20)  # (float32's extremes)


def check_routes(index, query, k, routes):
    """The packed pruned kernels, each route forced (block-max bounds with and without
    superblocks, stored or derived block maxima, terms decoded whole or chunk by chunk, MaxScore
    with any cut), equal the oracle bit for bit, twice on the same scratch, and leave their
    scratch clean."""
    with np.errstate(over="ignore"):
        packed = index.compressed(blockmax_min=0, blockmax_ratio=routes["blockmax_ratio"])
        packed.maxscore_terms = routes["maxscore_terms"]
        packed.superblock_shift, packed.superblock_min = routes["superblock_shift"], routes["superblock_min"]
        packed.whole, packed.seek_cost = routes["whole"], routes["seek_cost"]
        packed.block_cost = 0.0  # the bounds kernels run to the end: no fallback to the exhaustive one
        want_ids, want_scores = oracle(index, query, k)
        for _ in range(2):
            ids, scores = packed.top_k(query, k, "pruned")
            assert ids.tolist() == want_ids
            assert scores.tobytes() == np.asarray(want_scores, np.float32).tobytes()
    check_buffers(packed, query, k)


@FAST
@given(long_list_indexes(), LONG_QUERIES, st.sampled_from([1, 2, 10, 50, 1000]), ROUTES)
def test_every_pruned_route_equals_the_oracle(index, query, k, routes):
    check_routes(index, query, k, routes)


@pytest.mark.slow
@SLOW
@given(long_list_indexes(), LONG_QUERIES, st.sampled_from([1, 2, 10, 50, 1000]), ROUTES)
def test_every_pruned_route_equals_the_oracle_long(index, query, k, routes):
    check_routes(index, query, k, routes)


# -- the manifest loader under random edits ---------------------------------------------------

CANARY_NAME = "canary-outside-the-index.npy"
_opened: list[str] = []


def _audit(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes)) and CANARY_NAME in str(args[0]):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)  # cannot be removed; records only opens of the canary file


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    from conftest import write_beir

    root = tmp_path_factory.mktemp("fuzz-manifest")
    beir = write_beir(root / "toy")
    np.save(root / CANARY_NAME, np.arange(10, dtype=np.int32))
    vectors = root / "vectors.jsonl"
    vectors.write_text("".join(json.dumps({"id": f"v{i}", "contents": "x", "vector": {"a": i + 1.0, "b": 2.0}}) + "\n"
                               for i in range(5)))
    built = {"bm25": Retriever.build(beir, root / "bm25").path,
             "multifield": Retriever.build(beir, root / "mf", fields="multifield").path,
             "sparse": Retriever.build(vectors, root / "sparse", kind="sparse", vectors=True).path}
    return root, built


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


ESCAPES = ["../" + CANARY_NAME, "../../" + CANARY_NAME, "/etc/passwd", "sub/../../" + CANARY_NAME, "..", "",
           "/" + CANARY_NAME]
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
              st.sampled_from(ESCAPES + ["bm25", "sparse", "dense", "hybrid", "lucene", "native", "none",
                                         "porter", "flat", "multifield", "model", "idf", "float", "uint8"]),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)


@st.composite
def edits(draw, manifest):
    m = copy.deepcopy(manifest)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(m) if p]
        op = draw(st.sampled_from(["delete", "replace", "escape_file", "rename_file"]))
        if op in ("delete", "replace") and paths:
            path = draw(st.sampled_from(paths))
            parent = m
            for key in path[:-1]:
                parent = parent[key]
            if op == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(JSON_VALUES)
        elif op == "escape_file" and isinstance(m.get("files"), dict):
            m["files"][draw(st.sampled_from(ESCAPES))] = {"bytes": 40, "sha256": "0" * 64}
        elif op == "rename_file" and isinstance(m.get("files"), dict) and m["files"]:
            name = draw(st.sampled_from(sorted(m["files"])))
            m["files"][draw(st.sampled_from(ESCAPES))] = m["files"].pop(name)
    return m, draw(st.booleans())


def check_loader(root, src, data):
    manifest = json.loads((src / "manifest.json").read_text())
    edited, reseal = data.draw(edits(manifest))
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        idx = Path(tmp) / "idx"
        shutil.copytree(src, idx)
        if reseal and isinstance(edited, dict):
            files = edited.get("files")
            for name, info in (files.items() if isinstance(files, dict) else []):
                p = idx / str(name)
                if isinstance(info, dict) and p.is_file() and p.resolve().is_relative_to(idx.resolve()):
                    info.update(bytes=p.stat().st_size, sha256=sha256_file(p))
            edited[CHECKSUM_KEY] = manifest_digest(edited)
        (idx / "manifest.json").write_text(json.dumps(edited))
        _opened.clear()
        try:
            r = Retriever.load(idx)
            if r.searcher.encode_queries is not None:
                r.search("vitamin coffee", k=3)
            r.search_weights({"a": 1.0, "vitamin": 1.0}, k=3)
        except (IndexFormatError, ValueError):
            pass  # our errors; anything else (KeyError, TypeError, ...) fails the test
        assert _opened == [], f"opened a file outside the index: {_opened}"


@settings(FAST, max_examples=60)
@given(data=st.data(), which=st.sampled_from(["bm25", "multifield", "sparse"]))
def test_manifest_edits_load_or_raise_our_error(indexes, data, which):
    root, built = indexes
    check_loader(root, built[which], data)


@pytest.mark.slow
@settings(SLOW, max_examples=800)
@given(data=st.data(), which=st.sampled_from(["bm25", "multifield", "sparse"]))
def test_manifest_edits_long(indexes, data, which):
    root, built = indexes
    check_loader(root, built[which], data)
