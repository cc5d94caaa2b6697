"""Dense FAISS index layer, checked against an exact numpy oracle on seeded clustered vectors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from indexing.faiss_index import (  # noqa: E402
    DEFAULT_REFINE_FACTOR,
    ACCEPTED_SPECS, INDEX_FILE, REFINE_FILE, DenseIndex, resolve_spec,
)

N, DIM, K = 3000, 32, 10
HAS_GPU_FAISS = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def clustered(n: int, dim: int, seed: int, centers: int = 16, latent: int = 8) -> np.ndarray:
    """Unit vectors around a few Gaussian centres in a ``latent``-dimensional subspace plus a
    little full-rank noise (embeddings have low intrinsic dimension); same centres every seed."""
    fixed = np.random.default_rng(1234)
    means = fixed.standard_normal((centers, latent))
    lift = fixed.standard_normal((latent, dim)) / np.sqrt(latent)
    rng = np.random.default_rng(seed)
    z = means[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, latent))
    x = z @ lift + 0.05 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(N, DIM, seed=0), clustered(100, DIM, seed=1)


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """One OpenMP thread: these indexes are tiny, and on a busy machine faiss's thread team
    spins (PQ training went from 0.6 s to 6 s with two threads on two loaded cores)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def oracle(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k by inner product, ties broken by lower id."""
    s = q.astype(np.float64) @ x.astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)]))


def assert_exact(ids, scores, x, q, k):
    """Same ranking as the oracle; positions where the oracle has a near-tie may swap."""
    o_ids, o_scores = oracle(x, q, k + 1)
    np.testing.assert_allclose(scores, o_scores[:, :k], atol=1e-5)
    gap_before = np.abs(np.diff(o_scores, axis=1, prepend=np.inf))[:, :k]
    gap_after = np.abs(np.diff(o_scores, axis=1))[:, :k]
    ambiguous = (gap_before < 1e-5) | (gap_after < 1e-5)
    assert ((ids == o_ids[:, :k]) | ambiguous).all()


_built: dict = {}


def build(x, spec, **kwargs) -> DenseIndex:
    """Build once per (spec, options) for this module; indexes are not mutated by the tests."""
    key = (spec, tuple(sorted(kwargs.items())))
    if key not in _built:
        _built[key] = DenseIndex.build(x, spec, **kwargs)
    return _built[key]


# -- every spec form against the oracle --------------------------------------------------------

def test_flat_is_exact(data):
    x, q = data
    index = build(x, "Flat")
    ids, scores = index.search(q, K)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (100, K)
    assert_exact(ids, scores, x, q, K)


def test_ivf_flat_with_every_list_probed_is_exact(data):
    x, q = data
    index = build(x, "IVF32,Flat")
    ids, scores = index.search(q, K, nprobe=32)
    assert_exact(ids, scores, x, q, K)


def test_nprobe_override_is_per_call(data):
    x, q = data
    truth, _ = oracle(x, q, K)
    index = build(x, "IVF32,Flat")
    narrow = recall(index.search(q, K, nprobe=1)[0], truth)
    wide = recall(index.search(q, K, nprobe=32)[0], truth)
    assert narrow < wide == 1.0
    assert index.nprobe == 32 and faiss.extract_index_ivf(index.index).nprobe == 32
    default = index.search(q, K)[0]
    np.testing.assert_array_equal(default, index.search(q, K, nprobe=32)[0])


@pytest.mark.parametrize("spec", ["IVF16,PQ8", "OPQ8,IVF16,PQ8", "IVF16,PQ16x4"])
def test_pq_with_refine_reaches_recall(data, spec):
    x, q = data
    truth, _ = oracle(x, q, K)
    index = build(x, spec, refine=True)
    ids, scores = index.search(q, K)
    assert recall(ids, truth) >= 0.95
    # refined scores are exact inner products against the float16 copy
    expected = np.einsum("qd,qkd->qk", q, x[ids].astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_pq_without_refine_is_plausible(data):
    x, q = data
    truth, _ = oracle(x, q, K)
    index = build(x, "IVF16,PQ8")
    ids, scores = index.search(q, K)
    assert 0.5 < recall(ids, truth) < 1.0
    assert (ids >= 0).all() and (np.diff(scores, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("spec", ["HNSW16", "HNSW16,Flat"])
def test_hnsw_reaches_recall(data, spec):
    x, q = data
    truth, _ = oracle(x, q, K)
    index = build(x, spec)
    assert index.factory == "HNSW16" and index.ef_search == 128
    assert recall(index.search(q, K)[0], truth) >= 0.95
    assert recall(index.search(q, K, ef_search=1)[0], truth) < 1.0  # raised to k, still rough


def test_equal_scores_order_by_lower_id(data):
    x, _ = data
    y = x[:200].copy()
    y[150] = y[40]
    y[90] = y[40]
    ids, scores = DenseIndex.build(y, "Flat").search(y[40:41], 3)
    assert ids[0].tolist() == [40, 90, 150]
    assert scores[0, 0] == scores[0, 1] == scores[0, 2]


# -- auto and validation -------------------------------------------------------------------------

def test_auto_rule():
    assert resolve_spec("auto", 0, 768) == "Flat"
    assert resolve_spec("auto", 100_000, 768) == "Flat"
    assert resolve_spec("auto", 100_001, 768) == "HNSW32"
    assert resolve_spec("auto", 1_000_000, 768) == "HNSW32"
    assert resolve_spec("auto", 500_000, 768, gpu=True) == "IVF2828,Flat"
    assert resolve_spec("auto", 8_841_823, 768) == "OPQ192,IVF11894,PQ192"
    assert resolve_spec("auto", 8_841_823, 768, gpu=True) == "OPQ96,IVF11894,PQ96"
    assert resolve_spec("auto", 4_000_000, 100) == "OPQ25,IVF8000,PQ25"
    assert resolve_spec("auto", 4_000_000, 3) == "OPQ1,IVF8000,PQ1"


def test_auto_builds_flat_for_small_corpora(data):
    x, q = data
    index = DenseIndex.build(x[:500], "auto")
    assert index.factory == "Flat" and index.spec == "auto"


def test_explicit_specs_canonicalise():
    assert resolve_spec("Flat", 10, 32) == "Flat"
    assert resolve_spec("IVF16, Flat", 100, 32) == "IVF16,Flat"
    assert resolve_spec("IVF16,PQ8x8", 300, 32) == "IVF16,PQ8"
    assert resolve_spec("IVF16,PQ8x4", 300, 32) == "IVF16,PQ8x4"
    assert resolve_spec("OPQ8,IVF16,PQ8", 300, 32) == "OPQ8,IVF16,PQ8"
    assert resolve_spec("HNSW32,Flat", 10, 32) == "HNSW32"


@pytest.mark.parametrize("spec, problem", [
    ("IVF16,PQ7", "must divide the dimension 32"),
    ("OPQ7,IVF16,PQ7", "must divide the dimension 32"),
    ("IVF5000,Flat", "nlist = 5000"),
    ("IVF0,Flat", "nlist = 0"),
    ("OPQ4,IVF16,PQ8", "same m"),
    ("IVF16,PQ8x12", "needs at least that many vectors"),
    ("HNSW1", "HNSW M"),
    ("PQ8", "unknown form"),
    ("IVF16,SQ8", "unknown form"),
    ("flat", "unknown form"),
])
def test_bad_specs_are_clear_errors(spec, problem):
    with pytest.raises(ValueError) as error:
        resolve_spec(spec, 3000, 32)
    assert problem in str(error.value) and ACCEPTED_SPECS in str(error.value)


def test_build_validates_input(data):
    x, _ = data
    with pytest.raises(ValueError, match="2-d float"):
        DenseIndex.build(x[0], "Flat")
    with pytest.raises(ValueError, match="training"):
        DenseIndex.build(x, "IVF64,Flat", train_size=10)
    with pytest.raises(ValueError, match="device"):
        DenseIndex.build(x, "Flat", device="tpu")
    index = build(x, "Flat")
    with pytest.raises(ValueError, match=r"shape \(q, 32\)"):
        index.search(x[:3, :16], K)
    with pytest.raises(ValueError, match="k must be"):
        index.search(x[:3], 0)


# -- persistence ---------------------------------------------------------------------------------

SETTINGS_KEYS = {"spec", "factory", "metric", "dim", "ntotal", "nprobe", "ef_search", "refine",
                 "refine_factor", "train_size", "seed", "bytes_per_vector", "refine_bytes_per_vector"}


@pytest.mark.parametrize("spec, refine", [("Flat", False), ("IVF32,Flat", False), ("IVF16,PQ8", True),
                                          ("OPQ8,IVF16,PQ8", True), ("HNSW16", False)])
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(data, tmp_path, spec, refine, mmap):
    x, q = data
    index = build(x, spec, refine=refine)
    settings = index.save(tmp_path)
    assert set(settings) == SETTINGS_KEYS
    assert settings["factory"] == index.factory and settings["ntotal"] == N and settings["dim"] == DIM
    assert (tmp_path / INDEX_FILE).is_file() and (tmp_path / REFINE_FILE).is_file() == refine
    loaded = DenseIndex.load(tmp_path, settings, mmap=mmap)
    assert loaded.mmapped == mmap
    if refine:
        assert isinstance(loaded.refine_vectors, np.memmap) == mmap
    for kwargs in ({}, {"nprobe": 1}, {"ef_search": 20}):
        expected = index.search(q, K, **kwargs)
        got = loaded.search(q, K, **kwargs)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("spec", ["Flat", "IVF32,Flat", "IVF16,PQ8", "OPQ8,IVF16,PQ8", "HNSW16"])
def test_mmap_load_maps_the_files(data, tmp_path, spec):
    x, _ = data
    settings = build(x, spec, refine=True).save(tmp_path)
    loaded = DenseIndex.load(tmp_path, settings, mmap=True)
    maps = Path("/proc/self/maps").read_text()
    assert str((tmp_path / INDEX_FILE).resolve()) in maps
    assert str((tmp_path / REFINE_FILE).resolve()) in maps
    del loaded


def test_settings_values(data, tmp_path):
    x, _ = data
    flat = build(x, "Flat").save(tmp_path / "flat")
    assert flat["nprobe"] is None and flat["ef_search"] is None and flat["refine"] is False
    assert flat["bytes_per_vector"] == pytest.approx(4 * DIM, rel=0.01)
    pq = build(x, "IVF16,PQ8", refine=True).save(tmp_path / "pq")
    assert pq["nprobe"] == 16 and pq["refine_factor"] == DEFAULT_REFINE_FACTOR == 16 and pq["refine_bytes_per_vector"] == 2 * DIM
    assert pq["bytes_per_vector"] < 4 * DIM / 2          # 8 code bytes + 8 id bytes + tables
    assert pq["train_size"] == N and pq["metric"] == "inner_product"


def test_load_rejects_mismatched_settings(data, tmp_path):
    x, _ = data
    settings = build(x, "Flat").save(tmp_path)
    with pytest.raises(ValueError, match="settings say"):
        DenseIndex.load(tmp_path, {**settings, "ntotal": N + 1})
    with pytest.raises(FileNotFoundError, match=REFINE_FILE):
        DenseIndex.load(tmp_path, {**settings, "refine": True})
    loaded = DenseIndex.load(tmp_path, settings)
    with pytest.raises(ValueError, match="new directory"):
        loaded.save(tmp_path)
    with pytest.raises(ValueError, match="holds a faiss IndexFlatIP; the settings say 'IVF16,PQ8'"):
        DenseIndex.load(tmp_path, {**settings, "factory": "IVF16,PQ8"})  # (a manifest that lies)


@pytest.mark.parametrize("mmap", [True, False])
def test_damaged_faiss_files_are_index_format_errors(data, tmp_path, mmap):
    """Unchecked by checksums (verify=False), a damaged faiss.index is refused at load with
    IndexFormatError (not faiss's C++ RuntimeError), and ids FAISS returns past the vectors fail
    the search the same way (not a numpy IndexError, not another document)."""
    from indexing.manifest import IndexFormatError

    x, q = data
    settings = build(x, "IVF16,Flat").save(tmp_path / "a")
    path = tmp_path / "a" / "faiss.index"
    whole = path.read_bytes()
    path.write_bytes(bytes(len(whole)))
    with pytest.raises(IndexFormatError, match="faiss.index: not a readable FAISS index"):
        DenseIndex.load(tmp_path / "a", settings, mmap=mmap)
    path.write_bytes(whole)
    loaded = DenseIndex.load(tmp_path / "a", settings, mmap=mmap)
    real = loaded.index

    class Damaged:  # what flipped bits in an IVF list's ids give back
        def __getattr__(self, name):
            return getattr(real, name)

        def search(self, queries, k, params=None):
            scores, ids = real.search(queries, k, params=params)
            ids[0, 0] = 562949953423780
            return scores, ids

    loaded.index = Damaged()
    with pytest.raises(IndexFormatError, match="FAISS returned id 562949953423780 of"):
        loaded.search(q[:3], 10)


# -- devices -------------------------------------------------------------------------------------

@pytest.mark.skipif(HAS_GPU_FAISS, reason="checks the CPU fallback; this machine has GPU faiss")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_falls_back_to_cpu_with_one_warning(data, caplog, tmp_path, device):
    x, q = data
    with caplog.at_level(logging.DEBUG, logger="retriever"):
        index = DenseIndex.build(x, "IVF32,Flat", device=device)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name == "retriever"
    assert device in warnings[0].getMessage() and "CPU" in warnings[0].getMessage()
    assert index.device == "cpu" and index.gpus == []
    ids, scores = index.search(q, K, nprobe=32)
    assert_exact(ids, scores, x, q, K)

    settings = index.save(tmp_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retriever"):
        loaded = DenseIndex.load(tmp_path, settings, device=device)
    assert len(caplog.records) == 1 and loaded.device == "cpu"
    np.testing.assert_array_equal(loaded.search(q, K)[0], index.search(q, K)[0])


@pytest.mark.skipif(HAS_GPU_FAISS, reason="checks the CPU fallback; this machine has GPU faiss")
def test_auto_device_is_cpu_without_warning(data, caplog):
    x, _ = data
    with caplog.at_level(logging.WARNING, logger="retriever"):
        index = DenseIndex.build(x[:100], "Flat", device="auto")
    assert index.device == "cpu" and not caplog.records


@pytest.mark.skipif(not HAS_GPU_FAISS, reason="needs faiss with a visible GPU")
@pytest.mark.parametrize("spec", ["Flat", "IVF32,Flat", "OPQ8,IVF16,PQ8"])
def test_cuda_matches_cpu(data, tmp_path, spec):
    x, q = data
    truth, _ = oracle(x, q, K)
    index = DenseIndex.build(x, spec, device="cuda", refine=spec.startswith("OPQ"))
    assert index.device == "cuda"
    ids, _ = index.search(q, K, nprobe=32)
    assert recall(ids, truth) >= 0.95
    loaded = DenseIndex.load(tmp_path, index.save(tmp_path))
    assert recall(loaded.search(q, K, nprobe=32)[0], truth) >= 0.95


# -- edges ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, refine", [("Flat", False), ("IVF4,Flat", False), ("HNSW8", False),
                                          ("IVF4,PQ8x4", True)])
def test_k_larger_than_n(data, spec, refine):
    x, q = data
    small = x[:50]
    index = DenseIndex.build(small, spec, refine=refine, nprobe=4)
    ids, scores = index.search(q[:5], 80)
    assert ids.shape == scores.shape == (5, 50)  # k clamped to the collection before allocating
    assert (ids >= 0).all()
    assert all(sorted(row[:50]) == list(range(50)) for row in ids.tolist())
    assert np.isfinite(scores).all()


def test_empty_query_batch_and_empty_index(data):
    x, _ = data
    ids, scores = build(x, "Flat").search(np.zeros((0, DIM), np.float32), K)
    assert ids.shape == scores.shape == (0, K)
    empty = DenseIndex.build(np.zeros((0, DIM), np.float32), "auto")
    ids, scores = empty.search(x[:2], 2**31)  # nothing allocated for hits that cannot exist
    assert ids.shape == scores.shape == (2, 0)


def test_refine_on_tiny_index_scores_everything(data):
    x, q = data
    index = DenseIndex.build(x[:30], "IVF2,PQ4x4", refine=True, refine_factor=4, nprobe=1)
    ids, scores = index.search(q, 8)                     # 4 * 8 candidates >= 30: exact
    assert_exact(ids, scores, x[:30].astype(np.float16).astype(np.float32), q, 8)
    assert recall(index.search(q, 7)[0], oracle(x[:30], q, 7)[0]) < 1.0   # 28 < 30: approximate


def test_threads_argument_restores_faiss_setting(data):
    x, q = data
    before = faiss.omp_get_max_threads()
    index = DenseIndex.build(x[:500], "IVF8,Flat", threads=1)
    index.search(q, K, threads=1)
    assert faiss.omp_get_max_threads() == before


def test_faiss_threads_are_capped_at_the_usable_cpus(data, monkeypatch):
    """``threads`` past the CPUs this process may use does not oversubscribe them (RELIABILITY:
    one rule for threads), and the search is the same; the setting is restored after."""
    import indexing.faiss_index as fi

    x, q = data
    before = faiss.omp_get_max_threads()
    monkeypatch.setattr(fi, "usable_cpus", lambda: 1)
    with fi._omp_threads(10 ** 6):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    index = DenseIndex.build(x[:500], "Flat")
    ids, scores = index.search(q, K, threads=10 ** 6)
    assert np.array_equal(ids, index.search(q, K, threads=1)[0])


def test_float64_and_memmap_input(data, tmp_path):
    x, q = data
    path = tmp_path / "x.npy"
    np.save(path, x.astype(np.float64))
    mapped = np.load(path, mmap_mode="r")
    index = DenseIndex.build(mapped, "Flat", chunk_size=700)
    assert index.ntotal == N
    assert_exact(*index.search(q, K), x, q, K)


def test_a_refused_write_of_the_faiss_file_is_an_error_naming_it(tmp_path):
    """On a full disk faiss's own writer only printed "close error" when its last flush failed and
    left a short faiss.index, which a dense build then checksummed and swapped over the previous
    index; a write failing midway was a RuntimeError traceback. Both are now an OSError naming
    the file (writes past the process's file-size limit fail as a full disk does)."""
    from tests.conftest import writes_fail_past

    x = np.random.default_rng(0).random((600, 32), dtype=np.float32)
    index = DenseIndex.build(x, "Flat")
    for limit in (4096, 76_000):  # cut midway, and in the last block (76,845 bytes in all)
        out = tmp_path / f"cut-{limit}"
        with writes_fail_past(limit):
            with pytest.raises(OSError, match="could not be written") as e:
                index.save(out)
        assert e.value.filename == str(out / "faiss.index")
    settings = index.save(tmp_path / "whole")
    assert DenseIndex.load(tmp_path / "whole", settings).ntotal == 600
