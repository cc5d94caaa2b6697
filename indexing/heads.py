"""Approximate top-k from per-term heads, scored exactly from per-document forward lists.

The ``heads`` strategy of an impact index (issue 14; Seismic's idea, Bruch et al. SIGIR 2024,
without its clustering): every term keeps its *head*, the ``cap`` postings of largest impact
(ties: lower internal id first), and every document its *forward list*, its (term, impact)
entries by term. A query

1. adds the ``depth x terms`` postings of largest contribution (query weight x impact) over all
   its terms' heads into partial scores (score-at-a-time, as JASS reads impact-ordered lists,
   Lin & Trotman ICTIR 2015: a heavy term reads deep, a light one little or nothing), in a
   small hash table that stays in cache;
2. takes the ``candidates`` (at least k) documents of best partial score (every document tied
   with the last one too);
3. scores each of them from its forward list against all the query's terms, summed in the
   query's term order in float32 as the exhaustive kernel sums them: a returned score is the
   document's exact score, bit for bit. Only recall is approximate: a document of the exact top
   k is missed when none of its postings is in the heads read, or its partial score is not
   among the best.

With ``depth`` at least every query term's length (and ``cap`` no shorter) and ``candidates`` at
least the documents matched, the result is the exhaustive one (the tests check it).

The heads and forward lists live in ``INDEX/heads/``, an index directory of its own (written
atomically with its own manifest, ``retriever heads INDEX``), derived from the packed postings in
bounded memory (the forward lists filled one range of documents at a time). Its manifest records
the checksum of the index manifest it was derived from: an index rebuilt since makes it stale,
and loading it then fails with a "derive them again" error instead of searching wrong lists.
Forward-list terms are uint16 when the vocabulary fits, impacts uint16 when every impact is an
integer there (quantised SPLADE), else float32 (BM25).
"""

from __future__ import annotations

import json
import mmap
import os
import time
from pathlib import Path

import numpy as np
from numba import njit

from indexing import kernels as K
from indexing.manifest import (CHECKSUM_KEY, IndexFormatError, IndexWriter, load_array, read_manifest)

HEADS_DIR = "heads"
CAP = 4096  # postings kept per term head (1M SPLADE-like: 113.7 per document; 10M: 12.1)
DEPTH = 1024  # default postings read per query term, on average (1M SPLADE-like: 0.9995 top-10 agreement with
CANDIDATES = 256  # 256 candidates, 16.5x the exhaustive kernel: docs/BENCHMARKS.md, "The heads strategy")
LARGE = 2_000_000  # from this many documents on, the defaults are LARGE_DEPTH / LARGE_CANDIDATES (10M SPLADE-like:
LARGE_DEPTH, LARGE_CANDIDATES = 2048, 768  # 0.971-0.976 at 50-61x; 1,024 / 256 there: 0.834)
FILES = ("head_ptr.npy", "head_docs.npy", "head_vals.npy", "doc_ptr.npy", "fwd_terms.npy", "fwd_vals.npy")
MADV_POPULATE_READ = 22  # Linux >= 5.14 (not named by Python's mmap module)
PAGE = 4096
RANGE_ENTRIES = 256_000_000  # forward entries filled per pass over the postings (1 GB at 4 bytes each)


# -- deriving (build time; compiled once per process: the decoding helpers live in kernels.py) ------

@njit(nogil=True, cache=False)
def _term_impacts(buf, term_ptr, t, num_docs, table, float_bits, norms, norm_table, shift, st, arena_docs, arena_vals,
                  arena_blocks, vals):
    """Term ``t``'s postings decoded whole: doc ids in ``arena_docs``, float32 impacts (what the
    kernels multiply) in ``vals``. Returns the count, or -1 when corrupt."""
    if K._open_term(buf, term_ptr, t, num_docs, table.shape[0], norms.shape[0], norm_table.shape[0], st) < 0:
        return -1
    df = st[K.ST_DF]
    if df == 0:
        return 0
    used = np.zeros(2, dtype=np.int64)
    if K._decode_whole(buf, st, num_docs, shift, table, float_bits, norms, norm_table, arena_docs, arena_vals,
                       arena_blocks, used) < 0:
        return -1
    mode = st[K.ST_MODE]
    idf = K._idf(st, table)
    for i in range(df):
        vals[i] = K._impact(mode, idf, arena_vals[i])
    return df


@njit(nogil=True, cache=False)
def _count(buf, term_ptr, num_docs, table, float_bits, norms, norm_table, shift, cap, st, arena_docs, arena_vals,
           arena_blocks, vals, head_len, doc_len):
    """Per term its head's length, per document its forward entries; returns (0 or -1 when
    corrupt, 1 when every impact is an integer in [0, 65535])."""
    integral = 1
    for t in range(term_ptr.shape[0] - 1):
        df = _term_impacts(buf, term_ptr, t, num_docs, table, float_bits, norms, norm_table, shift, st, arena_docs,
                           arena_vals, arena_blocks, vals)
        if df < 0:
            return -1, 0
        head_len[t] = min(df, cap)
        for i in range(df):
            doc_len[arena_docs[i]] += 1
            v = vals[i]
            if integral and not (v >= 0 and v <= 65535 and np.float32(np.int64(v)) == v):
                integral = 0
    return 0, integral


@njit(nogil=True, cache=False)
def _fill(buf, term_ptr, num_docs, table, float_bits, norms, norm_table, shift, st, arena_docs, arena_vals,
          arena_blocks, all_vals, head_ptr, head_docs, head_vals, lo, hi, cursor, base, fwd_terms, fwd_vals):
    """Forward entries of documents [lo, hi) into ``fwd_*[cursor[d] - base]`` (terms ascending),
    and, when ``head_docs`` is not empty, every term's head. Returns 0, or -1 when corrupt."""
    heads = head_docs.shape[0] > 0
    for t in range(term_ptr.shape[0] - 1):
        df = _term_impacts(buf, term_ptr, t, num_docs, table, float_bits, norms, norm_table, shift, st, arena_docs,
                           arena_vals, arena_blocks, all_vals)
        if df < 0:
            return -1
        vals = all_vals[:df]
        a = np.searchsorted(arena_docs[:df], lo)
        z = np.searchsorted(arena_docs[:df], hi)
        for i in range(a, z):
            d = arena_docs[i]
            e = cursor[d] - base
            fwd_terms[e] = t
            fwd_vals[e] = vals[i]
            cursor[d] += 1
        if heads:
            h0 = head_ptr[t]
            h = head_ptr[t + 1] - h0
            if h < df:
                cut = np.partition(vals, df - h)[df - h]  # the h-th largest impact
                pick = np.empty(h, dtype=np.int64)
                m = 0
                for i in range(df):  # above the cut, then tied with it in doc order, up to h
                    if vals[i] > cut:
                        pick[m] = i
                        m += 1
                for i in range(df):
                    if m == h:
                        break
                    if vals[i] == cut:
                        pick[m] = i
                        m += 1
                pick = np.sort(pick)
            else:
                pick = np.arange(df)
            order = np.argsort(-vals[pick], kind="mergesort")  # impact descending, doc ascending
            for i in range(h):
                p = pick[order[i]]
                head_docs[h0 + i] = arena_docs[p]
                head_vals[h0 + i] = vals[p]
    return 0


def derive(index, out: str | Path, cap: int = CAP, parent_checksum: str | None = None,
           overwrite: bool = True, range_entries: int = RANGE_ENTRIES, still=None) -> dict:
    """Write ``out`` (an index directory of its own) with the heads of ``index``'s terms (``cap``
    postings each) and its documents' forward lists. Returns the build record. ``still``: called
    before the heads are swapped in, False when the index they were derived from was replaced
    meanwhile (they are then refused, not written). The writer's lock is taken first: a second
    derivation fails at once, not after counting."""
    if index.packed is None:
        raise IndexFormatError("heads are derived from packed postings; this index holds the older "
                               "uncompressed layout: rebuild it with `retriever index`")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"cap must be a positive integer, got {cap!r}")
    cap = min(cap, (1 << 31) - 1)  # (no list is longer: doc ids are int32)
    with IndexWriter(out, overwrite=overwrite) as w:
        record = _derive_into(w, index, cap, range_entries)
        if still is not None and not still():
            raise IndexFormatError(f"{Path(out).parent} was rebuilt while its heads were derived; "
                                   "derive them again")
        w.finish({"kind": "heads", "backend": "native", "doc_count": index.num_docs, "terms": len(index.terms),
                  "cap": cap, "of": parent_checksum, "build": record})
    return record


def _reserved_memmap(path: Path, dtype, n: int) -> np.ndarray:
    """A new ``.npy`` of ``n`` items mapped for writing, its blocks reserved first: pages written
    through a mapping of a sparse file on a full disk kill the process with SIGBUS, a reservation
    that cannot be made is an OSError (ENOSPC) naming the file."""
    array = np.lib.format.open_memmap(path, "w+", dtype, (n,))
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
    except OSError as e:
        raise OSError(e.errno, f"cannot reserve {os.path.getsize(path):,} bytes for {path} ({e.strerror})") from None
    return array


def _derive_into(w: IndexWriter, index, cap: int, range_entries: int) -> dict:
    p = index.packed
    t0 = time.perf_counter()
    n, n_terms = index.num_docs, len(index.terms)
    maxdf = int(index.doc_freqs().max()) if n_terms else 0
    st = np.zeros(K.NST, dtype=np.int64)
    arena = (np.zeros(maxdf + 1, np.int32), np.zeros(maxdf + 1, np.float32), np.zeros(maxdf + 1, np.int64),
             np.zeros(maxdf + 1, np.float32))  # doc ids, value codes, blocks, impacts
    common = (p.stream, p.term_ptr, n, p.table, p.float_bits, p.norms, p.norm_table, index.shift)
    head_ptr = np.zeros(n_terms + 1, dtype=np.int64)
    doc_ptr = np.zeros(n + 1, dtype=np.int64)
    status, integral = _count(*common, cap, st, *arena, head_ptr[1:], doc_ptr[1:])
    if status < 0:
        raise IndexFormatError("corrupt postings (run `retriever info INDEX --verify`)")
    np.cumsum(head_ptr, out=head_ptr)
    np.cumsum(doc_ptr, out=doc_ptr)
    count_s = time.perf_counter() - t0
    term_dtype = np.uint16 if n_terms <= 1 << 16 else np.int32
    val_dtype = np.uint16 if integral else np.float32
    total = int(doc_ptr[-1])
    w.save_array("head_ptr.npy", head_ptr)
    w.save_array("doc_ptr.npy", doc_ptr)
    head_docs = _reserved_memmap(w.path("head_docs.npy"), np.int32, int(head_ptr[-1]))
    head_vals = _reserved_memmap(w.path("head_vals.npy"), np.float32, int(head_ptr[-1]))
    fwd_terms = _reserved_memmap(w.path("fwd_terms.npy"), term_dtype, total)
    fwd_vals = _reserved_memmap(w.path("fwd_vals.npy"), val_dtype, total)
    cursor = doc_ptr[:-1].copy()
    passes, lo = 0, 0
    while True:  # documents [lo, hi) hold at most range_entries entries (or one document)
        hi = int(np.searchsorted(doc_ptr, doc_ptr[lo] + max(1, range_entries), side="right")) - 1
        hi = min(n, max(hi, lo + 1))
        base = int(doc_ptr[lo])
        size = int(doc_ptr[hi]) - base
        terms_buf, vals_buf = np.empty(size, term_dtype), np.empty(size, val_dtype)
        heads = (head_docs, head_vals) if passes == 0 else (np.empty(0, np.int32), np.empty(0, np.float32))
        if _fill(*common, st, *arena, head_ptr, *heads, lo, hi, cursor, base, terms_buf, vals_buf) < 0:
            raise IndexFormatError("corrupt postings (run `retriever info INDEX --verify`)")
        fwd_terms[base:base + size] = terms_buf
        fwd_vals[base:base + size] = vals_buf
        passes += 1
        lo = hi
        if lo >= n:
            break
    for a in (head_docs, head_vals, fwd_terms, fwd_vals):
        a.flush()
    del head_docs, head_vals, fwd_terms, fwd_vals
    return {"cap": cap, "heads": int(head_ptr[-1]), "entries": total, "passes": passes,
            "count_s": round(count_s, 1), "seconds": round(time.perf_counter() - t0, 1)}


class Heads:
    """A loaded ``heads/`` directory (memory-mapped)."""

    def __init__(self, root: str | Path, num_docs: int, num_terms: int, parent_checksum: str | None = None,
                 verify: bool = True) -> None:
        root = Path(root)
        manifest = read_manifest(root, verify=False)
        if manifest.get("kind") != "heads":
            raise IndexFormatError(f"{root}: not a heads directory (kind {manifest.get('kind')!r})")
        if parent_checksum is not None and manifest.get("of") != parent_checksum:
            raise IndexFormatError(f"{root}: derived from another version of this index (rebuilt since); "
                                   f"derive them again: `retriever heads {root.parent} --overwrite`")
        if manifest.get("doc_count") != num_docs or manifest.get("terms") != num_terms:
            raise IndexFormatError(f"{root}: made for {manifest.get('doc_count')} documents and "
                                   f"{manifest.get('terms')} terms, the index has {num_docs} and {num_terms}")
        if verify:  # every file against its checksum (after the cheap checks above)
            read_manifest(root, verify=True)
        self.cap = int(manifest["cap"])
        (self.head_ptr, self.head_docs, self.head_vals, self.doc_ptr, self.fwd_terms,
         self.fwd_vals) = (load_array(root, name) for name in FILES)
        hp, dp = self.head_ptr, self.doc_ptr
        ok = (hp.shape == (num_terms + 1,) and dp.shape == (num_docs + 1,) and hp.dtype == np.int64
              and dp.dtype == np.int64 and int(hp[0]) == 0 and int(dp[0]) == 0
              and int(hp[-1]) == len(self.head_docs) == len(self.head_vals)
              and int(dp[-1]) == len(self.fwd_terms) == len(self.fwd_vals)
              and self.head_docs.dtype == np.int32 and self.head_vals.dtype == np.float32
              and self.fwd_terms.dtype in (np.uint16, np.int32) and self.fwd_vals.dtype in (np.uint16, np.float32)
              and bool((np.diff(hp) >= 0).all()) and bool((np.diff(hp) <= self.cap).all())
              and _ascending(dp))  # (then every forward list lies inside the forward arrays)
        if not ok:
            raise IndexFormatError(f"{root}: corrupt heads (array shapes, types or pointers); derive them "
                                   f"again: `retriever heads {root.parent} --overwrite`")


    def preload(self) -> float:
        """Copy the heads and forward lists into this process's memory, on huge pages where the
        system gives them (``MADV_HUGEPAGE``), as a search server would before taking queries.
        A query touches ~60 short head ranges and a few hundred forward lists, each on a page of
        its own: on 4 KB pages of a memory map every one is a TLB miss, which costs microseconds
        in a virtual machine (nested page tables). Measured on 1M SPLADE-like documents, queries
        never seen before, depth 64 / 256 candidates: 0.87 ms mapped, 0.35 ms on huge pages. When
        the copy does not fit, the mapping is kept and its page tables filled
        (``MADV_POPULATE_READ``). Returns the seconds it took."""
        t0 = time.perf_counter()
        for name in ("head_ptr", "head_docs", "head_vals", "doc_ptr", "fwd_terms", "fwd_vals"):
            arr = getattr(self, name)
            try:
                setattr(self, name, _in_memory(arr))
            except (MemoryError, OSError, ValueError, AttributeError):  # (no anonymous maps: not POSIX)
                _populate(arr)
        return time.perf_counter() - t0


def _ascending(ptr: np.ndarray, step: int = 1 << 24) -> bool:
    """Whether ``ptr`` never decreases (checked a slice at a time: bounded memory at 10M)."""
    return all(bool((np.diff(ptr[i:i + step + 1]) >= 0).all()) for i in range(0, max(1, len(ptr) - 1), step))


def _in_memory(arr: np.ndarray) -> np.ndarray:
    """``arr`` copied into anonymous memory, advised onto huge pages."""
    if arr.nbytes < (1 << 21):
        return np.array(arr)
    buf = mmap.mmap(-1, arr.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buf.madvise(mmap.MADV_HUGEPAGE)
    out = np.frombuffer(buf, dtype=arr.dtype, count=len(arr))
    step = 1 << 26  # copied in slices: the source's pages are read once, in order
    for i in range(0, len(arr), step):
        out[i:i + step] = arr[i:i + step]
    return out


def _populate(arr: np.ndarray) -> None:
    """Fill the page tables of a memory-mapped array (one read per page where the kernel lacks
    ``MADV_POPULATE_READ``)."""
    mm = getattr(arr, "_mmap", None)
    try:
        if not isinstance(mm, mmap.mmap):
            raise OSError
        mm.madvise(MADV_POPULATE_READ)
    except (OSError, ValueError):
        if len(arr):
            int(np.asarray(arr[::max(1, PAGE // max(1, arr.itemsize))]).astype(np.int64).sum())


def parent_checksum(root: str | Path) -> str | None:
    """The checksum field of the index manifest at ``root`` (what a heads directory records);
    None when ``root`` holds no manifest (an index in memory, its heads saved beside it)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get(CHECKSUM_KEY)


# -- searching -----------------------------------------------------------------------------------

def default_knobs(num_docs: int) -> tuple[int, int]:
    """The (depth, candidates) a ``heads`` search of an index of ``num_docs`` documents uses when
    not given: the heads keep ``CAP`` postings a term whatever the collection's size, so a larger
    collection needs them read deeper and more candidates scored for the same agreement (measured
    at 1M and 10M SPLADE-like documents; above ``LARGE`` the 10M knobs, which cost only speed on a
    smaller collection)."""
    return (LARGE_DEPTH, LARGE_CANDIDATES) if num_docs > LARGE else (DEPTH, CANDIDATES)


@njit(nogil=True, cache=True)
def _above(head_ptr, head_vals, t, w, c):
    """The end of term ``t``'s head prefix whose contributions ``w x impact`` exceed ``c``."""
    x, y = head_ptr[t], head_ptr[t + 1]
    while x < y:
        m = (x + y) >> 1
        if w * head_vals[m] > c:
            x = m + 1
        else:
            y = m
    return x


@njit(nogil=True, cache=True)
def _ends(q_terms, q_weights, a, nq, head_ptr, head_vals, depth, ends):
    """Where each query term's head stops being read (``ends[j]``): the ``depth x nq`` postings
    of largest contribution (weight x impact) over all the query's heads, found by bisecting the
    contribution threshold (heads are sorted by impact, so each term's share is a prefix). The
    same depth for every term instead measured worse (1M SPLADE-like, 512 / 128 candidates:
    agreement 0.904 against 0.979)."""
    budget = depth * nq
    top = np.float32(0.0)
    total = 0
    for j in range(nq):
        t = q_terms[a + j]
        total += head_ptr[t + 1] - head_ptr[t]
        if head_ptr[t + 1] > head_ptr[t]:
            top = max(top, q_weights[a + j] * head_vals[head_ptr[t]])
    if total <= budget:
        for j in range(nq):
            ends[j] = head_ptr[q_terms[a + j] + 1]
        return
    lo_c, hi_c = np.float32(0.0), top  # count(lo_c) > budget >= count(hi_c) (strictly above hi_c)
    for _ in range(40):
        mid = np.float32(0.5) * (lo_c + hi_c)
        if mid <= lo_c or mid >= hi_c:
            break
        count = 0
        for j in range(nq):
            t = q_terms[a + j]
            count += _above(head_ptr, head_vals, t, q_weights[a + j], mid) - head_ptr[t]
        if count > budget:
            lo_c = mid
        else:
            hi_c = mid
    for j in range(nq):
        ends[j] = _above(head_ptr, head_vals, q_terms[a + j], q_weights[a + j], hi_c)


@njit(nogil=True, cache=True)
def _candidates(hkeys, hvals, mask, nt, n_cand, out):
    """The documents of the ``n_cand`` best partial scores among the ``nt`` in the hash table's
    slots ``0..mask`` (every one tied with the last too; all of them when there are fewer), into
    ``out``; returns how many. The cut is the exact ``n_cand``-th score, but selected among the
    few slots at or above an estimate of it, the ``1.5 n_cand``-th best of the table's first
    eighth (hashed slots: a sample); when fewer lie above the estimate, among all. The table is
    read in order, branch-free: on 10M SPLADE-like, 2,048 / 768, 1.47 -> 1.37 ms a query against
    gathering every slot in insertion order for ``np.partition``."""
    size = mask + 1
    sel = out if nt < out.shape[0] else np.empty(nt + 1, dtype=out.dtype)  # (a write lands one past the last)
    every = np.float32(-np.inf)
    est = every
    if nt > n_cand:
        span = size >> 3
        sample = np.empty(span + 1, dtype=np.float32)
        m = 0
        for slot in range(span):
            sample[m] = hvals[slot]
            m += np.int64(hkeys[slot] != -1)
        r = np.int64(1.5 * n_cand * m / nt) + 16  # the estimate's rank in the sample
        if r < m:
            est = np.partition(sample[:m], m - r)[m - r]
    while True:
        ns = 0  # the slots selected, listed in ``sel`` (then the documents, in place)
        for slot in range(size):
            sel[ns] = slot
            ns += np.int64((hkeys[slot] != -1) & (hvals[slot] >= est))
        if ns >= n_cand or est == every:
            break
        est = every  # (the estimate was too high: every slot)
    part = np.empty(ns, dtype=np.float32)
    for i in range(ns):
        part[i] = hvals[sel[i]]
    cut = every if ns <= n_cand else np.partition(part, ns - n_cand)[ns - n_cand]
    n_c = 0
    for i in range(ns):
        if part[i] >= cut:
            sel[n_c] = hkeys[sel[i]]
            n_c += 1
    out[:n_c] = sel[:n_c]
    return n_c


@njit(nogil=True, cache=True)
def search(lo, hi, q_ptr, q_terms, q_weights, k, depth, n_cand, head_ptr, head_docs, head_vals, doc_ptr, fwd_terms,
           fwd_vals, tie_rank, hkeys, hvals, touched, qmark, qpos, qnext, qval, out_keys, out_counts, out_scored,
           ends):
    """Queries ``lo..hi`` of a batch (module docstring). Partial scores go to a hash table
    (``hkeys`` int32, all -1, and ``hvals`` float32, of a power-of-two size at least twice the
    postings a query reads, or the documents), not to an array over all documents: its few
    hundred KB stay in cache where an array's lines would each be a miss (10M documents: a 40 MB
    array). ``qmark`` (uint8 per term, zeros) marks the query's terms, ``qpos`` (int32 per term,
    all -1) maps one to its last position in the query, ``qnext`` chains positions of a repeated
    term; all are left as found. ``out_counts[q]`` is -1 when the heads or forward lists hold a doc
    id or term outside the index."""
    num_docs = tie_rank.shape[0]
    n_terms = qpos.shape[0]
    low = np.uint64(0xFFFFFFFF)
    for q in range(lo, hi):
        a = q_ptr[q]
        nq = q_ptr[q + 1] - a
        for j in range(nq):
            t = q_terms[a + j]
            qnext[j] = qpos[t]
            qpos[t] = j
            qval[j] = 0.0
            qmark[t] = 1
        _ends(q_terms, q_weights, a, nq, head_ptr, head_vals, depth, ends)
        total = 0
        for j in range(nq):
            total += ends[j] - head_ptr[q_terms[a + j]]
        bits = 10
        while (1 << bits) < 2 * min(total, num_docs) and (1 << bits) < hkeys.shape[0]:
            bits += 1
        mask = (1 << bits) - 1
        shift = np.uint64(32 - bits)
        nt = 0  # slots in use
        bad = False
        for j in range(nq):
            t = q_terms[a + j]
            w = q_weights[a + j]
            for i in range(head_ptr[t], ends[j]):
                d = head_docs[i]
                if d < 0 or d >= num_docs:
                    bad = True
                    break
                x = w * head_vals[i]
                slot = np.int64(((np.uint64(d) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) >> shift)
                while hkeys[slot] != d and hkeys[slot] != -1:
                    slot = (slot + 1) & mask
                if hkeys[slot] == -1:
                    hkeys[slot] = d
                    hvals[slot] = x
                    nt += 1
                else:
                    hvals[slot] += x
        n_c = 0 if bad else _candidates(hkeys, hvals, mask, nt, n_cand, touched)
        hkeys[:mask + 1] = -1
        # Read one entry per cache line of every candidate's forward list first: these loads are
        # independent, so many are in flight at once; the scoring loop below then finds its lines
        # in cache instead of waiting for each in turn (measured 1M: ~1.1 -> ~0.5 us a document).
        sink = 0
        for c in range(n_c):
            d = touched[c]
            for e in range(doc_ptr[d], doc_ptr[d + 1], 32):
                sink += np.int64(fwd_terms[e]) + np.int64(fwd_vals[e])
        if n_c < touched.shape[0]:
            touched[n_c] = sink  # (kept, so the loads are not optimised away)
        keys = np.empty(n_c + 1, dtype=np.uint64)
        m = 0
        scored = 0
        for c in range(n_c):
            d = touched[c]
            e1 = doc_ptr[d + 1]
            for e in range(doc_ptr[d], e1):
                t = np.int64(fwd_terms[e])
                if t < 0 or t >= n_terms:  # (int32 terms of a corrupt file can be negative)
                    bad = True
                    break
                if qmark[t] == 0:  # not a query term (a byte per term: stays in the first-level cache)
                    continue
                j = qpos[t]
                while j >= 0:
                    qval[j] = np.float32(fwd_vals[e])
                    j = qnext[j]
            score = np.float32(0.0)
            for j in range(nq):
                v = qval[j]
                if v != 0.0:
                    score += q_weights[a + j] * v
                    qval[j] = 0.0
            scored += 1
            if score > 0.0:
                key = (np.uint64(np.float32(score).view(np.uint32)) << np.uint64(32)) | (low - np.uint64(tie_rank[d]))
                keys[m] = key
                m += 1
        for j in range(nq):
            qpos[q_terms[a + j]] = -1
            qmark[q_terms[a + j]] = 0
        if bad:
            out_counts[q] = -1
            continue
        top = keys[:m] if m <= k else np.partition(keys[:m], m - k)[m - k:]  # keys are distinct (tie ranks are)
        top = np.sort(top)[::-1]  # (the k best sorted, not all m: numba's sort is ~33 ns a key)
        out_keys[q, :top.shape[0]] = top
        out_counts[q] = top.shape[0]
        out_scored[q] = scored


def derive_index(root: str | Path, cap: int = CAP, overwrite: bool = False) -> dict:
    """Derive ``root/heads`` for the native BM25 or sparse index at ``root`` (``retriever heads``);
    for a sharded index, each shard's."""
    from indexing.inverted import InvertedIndex

    from indexing.manifest import safe_join

    root = Path(root)
    manifest = read_manifest(root, verify=False)
    if manifest.get("shards"):  # each shard is an index of its own, searched with its own heads
        records = [derive_index(safe_join(root, e["path"], f"shard {i}"), cap, overwrite)
                   for i, e in enumerate(manifest["shards"])]
        return {"cap": cap, "shards": len(records), **{key: sum(r[key] for r in records)
                                                        for key in ("heads", "entries", "seconds")}}
    if manifest.get("kind") not in ("bm25", "sparse") or manifest.get("backend", "native") != "native":
        raise ValueError(f"{root}: a {manifest.get('kind')} ({manifest.get('backend')}) index; heads are "
                         "for native bm25 and sparse indexes")
    scale = manifest["impacts"]["scale"] if manifest["kind"] == "sparse" else None
    generation = _generation(root)
    if generation[1] != manifest.get(CHECKSUM_KEY):
        raise IndexFormatError(f"{root} was rebuilt while its heads were derived; derive them again")
    index = InvertedIndex.load(root, num_docs=manifest["doc_count"], scale=scale,
                               layout=InvertedIndex.layout_of(manifest))
    # the heads record the generation read before the load, and are written only if it is still there
    # (one read after the load stamped an index rebuilt meanwhile on heads of the one before it)
    return derive(index, root / HEADS_DIR, cap, generation[1], overwrite,
                  still=lambda: _generation(root) == generation)


def _generation(root: Path) -> tuple:
    """What identifies the index generation at ``root``: its directory and manifest checksum."""
    st = os.stat(root)
    return (st.st_dev, st.st_ino), parent_checksum(root)
