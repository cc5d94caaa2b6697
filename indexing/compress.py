"""Compressed ("packed") postings of an impact index: the on-disk layout and its encoder (the
decoder is compiled with the search kernels, in ``indexing.kernels``).

Files (all memory-mapped on load):

- ``term_ptr.npy``: uint32 (uint64 when the stream passes 4 GiB), terms + 1: where each term's
  bytes start in ``postings.npy``; a term without postings has an empty range.
- ``postings.npy``: uint8, every term's postings, one term after the other, then ``PAD`` (4)
  zero bytes (the decoder reads 4 bytes at a time).
- ``impact_table.npy``: the impact type (float32, uint16 or uint8): values the terms refer to
  (their tables of distinct impacts, or a BM25 term's idf).
- ``doc_norms.npy`` (uint8, one per document) and ``norm_table.npy`` (float32, 256): a BM25
  index's document length bytes and ``1 / (k1 * (1 - b + b * length / avgdl))`` per byte, as
  Lucene keeps its norms; only when some term is stored in the BM25 mode.

A term's bytes (varints are LEB128; "packed" means little-endian bit packing, byte aligned at
its end):

    varint df << 3 | flags             df: postings, 1 <= df <= documents; flags: the impact
                                       mode (bits 0-1) | 4 if a block-max list is stored
    [mode TABLE]  varint base, varint size      codes index impact_table[base : base + size]
    [mode BM25]   varint base                   the term's idf is impact_table[base]
    [chunks > 1]  byte wd, byte wo, packed (chunks - 1) doc ids (the last one of the chunk
                  before each chunk, wd bits) and packed (chunks - 1) byte offsets of the
                  chunks 1.. from the first chunk (wo bits): the chunk directory
    [block-max]   varint m, varint bytes, byte wg, byte wv, packed m block gaps, packed m value
                  codes [BM25: packed m length bytes]: for each 2**shift-document block holding
                  postings of the term, the code of its largest impact
    chunks of CHUNK postings (the last one shorter), each:
                  widths (a byte wd | wv << 6 when wv < 3, else wd | 3 << 6 and a byte wv),
                  packed doc gaps (wd bits), packed value codes (wv bits)

Doc ids are coded as gaps ``d - previous - 1`` (the previous doc of the first chunk is -1; of
a later one, the last doc of the chunk before), bit-packed with the width of the chunk's
largest gap. Impact modes, chosen per term by size:

- ``TABLE``: a code into the term's sorted table of distinct values (float32 terms whose
  impacts take few values; integers when that is smaller than the values themselves);
- ``VALUES``: the value itself (an integer impact; a float32 impact's bit pattern);
- ``BM25``: ``tf - 1``, the impact being ``idf - idf / (1 + tf * norm[length byte of d])`` in
  float32, exactly the float32 operations that computed it (``bm25_impact``); a term is stored
  so only when that reproduces each of its impacts bit for bit (checked while encoding).

Every impact is reproduced exactly: kernels over packed postings return what the uncompressed
kernels return, bit for bit (same documents, scores, tie order, and the same blocks scored).
Block-max lists are stored only for long lists (``BLOCKMAX_MIN`` postings) with at least
``BLOCKMAX_RATIO`` postings per block (``BLOCKMAX_RATIO_BM25`` for BM25 terms); for the others
the kernel derives the block maxima from the decoded postings (free to store, slower to read).

Why this layout (measured with ``scripts/bench_index_size.py``): doc ids bit-packed per chunk of
128 take 8.2 bits a posting on SciFact (Elias-Fano would take 7.5; chunks of 64: 8.1; PFOR-style
exceptions would save about 10% more on SPLADE) and decode in one sequential pass with a 64-bit
bit buffer; BM25 impacts as tf and a document length byte (Lucene's own layout) take 2.9 bits a
posting, against 11.6 for codes into tables shared by the terms of equal df (17.0 with a table
per term) or 32 raw. Block-max lists only where long lists pay for them: they were 0.41 entries
a posting (12 bytes each).

Every read is bounds-checked against the term's byte range, every bit width against 32, every
decoded doc id against the collection and every code against its table, so a corrupt file
fails the query (status -1) instead of reading or writing outside a buffer.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexing.io import save_npy
from indexing.kernels import (  # the format's constants and the decoder (compiled with the kernels)
    CHUNK,
    FLAG_BLOCKMAX,
    HAVE_NUMBA,
    MODE_BM25,
    MODE_TABLE,
    MODE_VALUES,
    NST,
    PAD,
    _decode_all,
    _doc_freqs,
    _term_modes,
    _verify_terms,
    bm25_impact,
)

__all__ = ["CHUNK", "FORMAT", "NST", "PAD", "Bm25Model", "PackedPostings", "bm25_impact", "encode"]

if HAVE_NUMBA:
    from numba import njit

FORMAT = "packed-v1"  # recorded in the manifest ("postings": {"format": ...})
TERM_PTR = "term_ptr.npy"
STREAM = "postings.npy"
TABLE = "impact_table.npy"
NORMS = "doc_norms.npy"
NORM_TABLE = "norm_table.npy"
FILES = (TERM_PTR, STREAM, TABLE)

# a term's block-max list is stored when it has >= BLOCKMAX_MIN postings, >= BLOCKMAX_RATIO per block
# it touches (BLOCKMAX_RATIO_BM25 for a BM25 term, whose entries also hold a length byte); else the
# kernel derives the maxima from its decoded postings (~10 ns a posting against ~4 ns a stored
# entry: on the 1M SPLADE-like set the bounds pass took 2.0 ms a query with ratio 4, 0.58 ms with
# ratio 1, for 23% more bytes; BM25 keeps 4, which keeps the BM25 1M index under Lucene's)
BLOCKMAX_MIN = 4096
BLOCKMAX_RATIO = 1
BLOCKMAX_RATIO_BM25 = 4


# verify's findings
ERRORS = {
    1: "doc ids outside [0, {n})",
    2: "a bit width above 32 or an unknown impact mode",
    3: "a header, directory, block-max list or chunk runs past its term's bytes",
    4: "an impact code outside its table",
    5: "impacts negative or not finite",
    6: "a block-max list that does not match the postings",
    7: "a chunk directory that does not match the chunks",
    8: "a term's bytes do not end where its last chunk does",
}


@dataclass
class Bm25Model:
    """What the BM25 mode needs besides tf: each term's idf (float32, one per term), each
    document's length byte (uint8) and the norm of each byte (float32, 256)."""

    idf: np.ndarray
    norms: np.ndarray
    norm_table: np.ndarray

    def renumbered(self, order: np.ndarray) -> "Bm25Model":
        return Bm25Model(self.idf, np.asarray(self.norms)[order], self.norm_table)


# -- the encoder (compiled; the decoder is in indexing.kernels) ------------------------------

def _bits(v):
    """Bits needed for the non-negative integer ``v`` (0 for 0)."""
    n = 0
    while v > 0:
        n += 1
        v >>= 1
    return n


def _nbytes(n, w):
    return (n * w + 7) >> 3


def _put_varint(out, pos, v):
    while v >= 128:
        out[pos] = (v & 127) | 128
        v >>= 7
        pos += 1
    out[pos] = v
    return pos + 1


def _pack(out, pos, vals, lo, n, w):
    """Bit-pack ``vals[lo:lo+n]`` (non-negative, < 2**w, w <= 32) at byte ``pos``; returns the
    position after the last byte written."""
    if w == 0:
        return pos
    acc = 0
    nb = 0
    for i in range(lo, lo + n):
        acc |= np.int64(vals[i]) << nb
        nb += w
        while nb >= 8:
            out[pos] = acc & 255
            acc >>= 8
            nb -= 8
            pos += 1
    if nb > 0:
        out[pos] = acc & 255
        pos += 1
    return pos


def _put_chunk_header(out, pos, wd, wv):
    if wv < 3:
        out[pos] = wd | (wv << 6)
        return pos + 1
    out[pos] = wd | (3 << 6)
    out[pos + 1] = wv
    return pos + 2


def _encode_range(t0, t1, offsets, docs, codes, keys, ncodes, modes, bases, sizes, has_bm, shift, out, term_bytes,
                  gaps, chunk_wd, chunk_wv, chunk_off, bm_blocks, bm_codes, bm_norms):
    """Encode terms ``t0..t1-1`` into ``out``. Per posting (indexed from ``offsets[t0]``): its doc
    id, value code, impact (``keys``, float32: which posting is a block's largest) and, in the
    BM25 mode, its document's length byte (``ncodes``). Returns the bytes written;
    ``term_bytes[t - t0]`` gets each term's size. Scratch: ``gaps`` (CHUNK), ``chunk_*`` (the
    most chunks of a term), ``bm_*`` (the longest list)."""
    p_base = offsets[t0]
    pos = 0
    for t in range(t0, t1):
        s = offsets[t] - p_base
        e = offsets[t + 1] - p_base
        df = e - s
        start = pos
        if df == 0:
            term_bytes[t - t0] = 0
            continue
        mode = modes[t - t0]
        bm = has_bm[t - t0]
        nc = (df + CHUNK - 1) // CHUNK
        total = 0
        for c in range(nc):  # each chunk's widths and where it starts
            lo = s + c * CHUNK
            n = min(CHUNK, e - lo)
            prev = -1 if c == 0 else np.int64(docs[lo - 1])
            mg = 0
            mv = 0
            for i in range(lo, lo + n):
                g = np.int64(docs[i]) - prev - 1
                prev = np.int64(docs[i])
                mg = max(mg, g)
                mv = max(mv, np.int64(codes[i]))
            chunk_wd[c] = _bits(mg)
            chunk_wv[c] = _bits(mv)
            chunk_off[c] = total
            total += (1 if chunk_wv[c] < 3 else 2) + _nbytes(n, chunk_wd[c]) + _nbytes(n, chunk_wv[c])
        pos = _put_varint(out, pos, (df << 3) | mode | (FLAG_BLOCKMAX if bm else 0))
        if mode == MODE_TABLE:
            pos = _put_varint(out, pos, bases[t - t0])
            pos = _put_varint(out, pos, sizes[t - t0])
        elif mode == MODE_BM25:
            pos = _put_varint(out, pos, bases[t - t0])
        if nc > 1:
            dwd = _bits(np.int64(docs[s + (nc - 1) * CHUNK - 1]))
            dwo = _bits(chunk_off[nc - 1])
            out[pos] = dwd
            out[pos + 1] = dwo
            pos += 2
            pos = _pack_prev_docs(out, pos, docs, s, nc, dwd)
            pos = _pack(out, pos, chunk_off, 1, nc - 1, dwo)
        if bm:
            m = 0
            last = -1
            best = np.float32(0.0)
            for i in range(s, e):
                b = np.int64(docs[i]) >> shift
                if b != last:
                    bm_blocks[m] = b
                    bm_codes[m] = codes[i]
                    bm_norms[m] = ncodes[i]
                    best = keys[i]
                    last = b
                    m += 1
                elif keys[i] > best:
                    best = keys[i]
                    bm_codes[m - 1] = codes[i]
                    bm_norms[m - 1] = ncodes[i]
            prevb = -1
            mg = 0
            mv = 0
            for i in range(m):
                g = bm_blocks[i] - prevb - 1
                prevb = bm_blocks[i]
                bm_blocks[i] = g
                mg = max(mg, g)
                mv = max(mv, np.int64(bm_codes[i]))
            wg = _bits(mg)
            wv = _bits(mv)
            nbytes = 2 + _nbytes(m, wg) + _nbytes(m, wv) + (m if mode == MODE_BM25 else 0)
            pos = _put_varint(out, pos, m)
            pos = _put_varint(out, pos, nbytes)
            out[pos] = wg
            out[pos + 1] = wv
            pos += 2
            pos = _pack(out, pos, bm_blocks, 0, m, wg)
            pos = _pack(out, pos, bm_codes, 0, m, wv)
            if mode == MODE_BM25:
                pos = _pack(out, pos, bm_norms, 0, m, 8)
        for c in range(nc):
            lo = s + c * CHUNK
            n = min(CHUNK, e - lo)
            prev = -1 if c == 0 else np.int64(docs[lo - 1])
            for i in range(n):
                gaps[i] = np.int64(docs[lo + i]) - prev - 1
                prev = np.int64(docs[lo + i])
            pos = _put_chunk_header(out, pos, chunk_wd[c], chunk_wv[c])
            pos = _pack(out, pos, gaps, 0, n, chunk_wd[c])
            pos = _pack(out, pos, codes, lo, n, chunk_wv[c])
        term_bytes[t - t0] = pos - start
    return pos


def _pack_prev_docs(out, pos, docs, s, nc, w):
    """Pack the last doc id of chunks 0..nc-2 (the directory's previous docs)."""
    return _pack(out, pos, docs[s + CHUNK - 1:s + (nc - 1) * CHUNK:CHUNK], 0, nc - 1, w)


if HAVE_NUMBA:
    _jit = njit(nogil=True, cache=True)
    _bits = _jit(_bits)
    _nbytes = _jit(_nbytes)
    _put_varint = _jit(_put_varint)
    _pack = _jit(_pack)
    _put_chunk_header = _jit(_put_chunk_header)
    _pack_prev_docs = _jit(_pack_prev_docs)
    _encode_range = _jit(_encode_range)


# -- encoding (numpy around the compiled encoder) ----------------------------------------------

def _bit_width(x: np.ndarray) -> np.ndarray:
    """Bits of each non-negative integer below 2**53 (0 for 0)."""
    return np.frexp(np.asarray(x, dtype=np.float64))[1].astype(np.int64)


def _term_max(values: np.ndarray, off: np.ndarray) -> np.ndarray:
    """The largest of each term's values (0 for a term without postings); ``off`` relative."""
    df = np.diff(off)
    out = np.zeros(len(df), dtype=values.dtype)
    if len(values):
        out[df > 0] = np.maximum.reduceat(values, off[:-1][df > 0])
    return out


def _infer_tf(w: np.ndarray, norm: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The smallest tf >= 1 with ``bm25_impact(w, tf, norm)`` equal to ``v`` bit for bit (0 where none)."""
    with np.errstate(all="ignore"):
        approx = (w.astype(np.float64) / (w.astype(np.float64) - v) - 1.0) / norm
    approx = np.nan_to_num(approx, nan=1.0, posinf=2.0 ** 24, neginf=1.0)
    tf0 = np.rint(np.clip(approx, 1.0, 2.0 ** 24)).astype(np.int64)
    best = np.zeros(len(v), dtype=np.int64)
    target = v.view(np.uint32)
    for delta in (-2, -1, 0, 1, 2):
        cand = tf0 + delta
        with np.errstate(all="ignore"):
            got = bm25_impact(w, cand.astype(np.float32), norm)
        hit = (best == 0) & (cand >= 1) & (got.view(np.uint32) == target)
        best[hit] = cand[hit]
    return best


class _Tables:
    """The growing impact table: per-term tables appended, BM25 idfs shared by value."""

    def __init__(self, dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.parts: list[np.ndarray] = []
        self.size = 0
        self.idf_at: dict[int, int] = {}

    def add(self, values: np.ndarray) -> int:
        base = self.size
        self.parts.append(np.asarray(values, dtype=self.dtype))
        self.size += len(values)
        return base

    def idf(self, bits: int) -> int:
        at = self.idf_at.get(bits)
        if at is None:
            at = self.idf_at[bits] = self.add(np.array([bits], np.uint32).view(np.float32))
        return at

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, self.dtype)


def _encode_terms(offsets, docs, impacts, t0: int, t1: int, tables: _Tables, model: Bm25Model | None,
                  shift: int, blockmax_min: int, blockmax_ratio: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Terms ``t0..t1-1`` encoded: (bytes, bytes per term, mode per term)."""
    p0, p1 = int(offsets[t0]), int(offsets[t1])
    n_t = t1 - t0
    off = np.asarray(offsets[t0:t1 + 1], dtype=np.int64)
    df = np.diff(off)
    d = np.ascontiguousarray(docs[p0:p1], dtype=np.int32)
    v = np.ascontiguousarray(impacts[p0:p1])
    term_of = np.repeat(np.arange(n_t, dtype=np.int64), df)
    is_float = v.dtype == np.float32
    bits = v.view(np.uint32) if is_float else v.astype(np.uint32)
    keys = v if is_float else v.astype(np.float32)
    # VALUES: the values themselves; cost ~ df * width of the term's largest value
    rel = off - off[0]
    cost_values = df * _bit_width(_term_max(bits, rel))
    # TABLE: codes into the term's sorted distinct values
    pair = (term_of.astype(np.uint64) << np.uint64(32)) | bits.astype(np.uint64)
    uniq, code_of = np.unique(pair, return_inverse=True)
    u_term = (uniq >> np.uint64(32)).astype(np.int64)
    distinct = np.bincount(u_term, minlength=n_t)
    first_u = np.zeros(n_t + 1, dtype=np.int64)
    np.cumsum(distinct, out=first_u[1:])
    table_codes = (code_of.reshape(-1) - first_u[term_of]).astype(np.uint32)
    cost_table = distinct * 8 * v.dtype.itemsize + df * _bit_width(np.maximum(distinct - 1, 0)) + 24
    modes = np.where(cost_table < cost_values, MODE_TABLE, MODE_VALUES).astype(np.int64)
    codes = np.where(modes[term_of] == MODE_TABLE, table_codes, bits).astype(np.uint32)
    ncodes = np.zeros(len(d), dtype=np.uint8)
    bases = np.zeros(n_t, dtype=np.int64)
    if model is not None and is_float and len(d):
        w = np.asarray(model.idf[t0:t1], dtype=np.float32)[term_of]
        lengths = np.asarray(model.norms)[d]
        tf = _infer_tf(w, np.asarray(model.norm_table, np.float32)[lengths], v)
        bad = np.bincount(term_of[tf == 0], minlength=n_t)
        tmax = _term_max(tf, rel)
        cost_bm25 = df * _bit_width(np.maximum(tmax - 1, 0)) + 8
        idf_ok = np.isfinite(np.asarray(model.idf[t0:t1], np.float32)) & (np.asarray(model.idf[t0:t1]) > 0)
        use = (bad == 0) & (df > 0) & idf_ok & (cost_bm25 <= np.minimum(cost_table, cost_values))
        if use.any():
            modes[use] = MODE_BM25
            on = use[term_of]
            codes[on] = (tf[on] - 1).astype(np.uint32)
            ncodes[on] = lengths[on]
            idf_bits = np.asarray(model.idf[t0:t1], dtype=np.float32).view(np.uint32)
            distinct_idf, which = np.unique(idf_bits[use], return_inverse=True)
            bases[use] = np.array([tables.idf(int(b)) for b in distinct_idf], dtype=np.int64)[which]
    sizes = np.where(modes == MODE_TABLE, distinct, 0).astype(np.int64)
    tabled = (modes == MODE_TABLE) & (df > 0)
    if tabled.any():
        starts = np.zeros(int(tabled.sum()), dtype=np.int64)
        np.cumsum(distinct[tabled][:-1], out=starts[1:])
        vals = (uniq[tabled[u_term]] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        bases[tabled] = tables.add(vals.view(np.float32) if is_float else vals) + starts
    # block-max lists where they pay: several chunks, >= BLOCKMAX_RATIO(_BM25) postings per block
    blocks = (term_of << np.int64(40)) | (d.astype(np.int64) >> shift)
    touched = np.bincount(term_of[np.flatnonzero(np.diff(blocks, prepend=-1))], minlength=n_t) if len(d) \
        else np.zeros(n_t, np.int64)
    ratio = np.where(modes == MODE_BM25, BLOCKMAX_RATIO_BM25, BLOCKMAX_RATIO) if blockmax_ratio is None \
        else blockmax_ratio
    has_bm = (df > CHUNK) & (df >= blockmax_min) & (df >= ratio * touched)
    nc = (df + CHUNK - 1) // CHUNK
    most = max(int(df.max()) if n_t else 0, 1)
    bound = 64 * n_t + 20 * len(d) + 12 * int(nc.sum()) + 64
    out = np.empty(bound, dtype=np.uint8)
    term_bytes = np.zeros(n_t, dtype=np.int64)
    used = _encode_range(0, n_t, rel, d, codes, keys, ncodes, modes, bases, sizes, has_bm, shift, out,
                         term_bytes, np.zeros(CHUNK, np.int64), np.zeros(int(nc.max(initial=1)), np.int64),
                         np.zeros(int(nc.max(initial=1)), np.int64), np.zeros(int(nc.max(initial=1)), np.int64),
                         np.zeros(most, np.int64), np.zeros(most, np.uint32), np.zeros(most, np.uint8))
    return out[:used], term_bytes, modes


def _term_ranges(offsets, range_postings: int):
    n_terms, t0 = len(offsets) - 1, 0
    while t0 < n_terms:
        t1 = int(np.searchsorted(offsets, offsets[t0] + range_postings, side="right")) - 1
        t1 = min(max(t1, t0 + 1), n_terms)
        yield t0, t1
        t0 = t1


def encode(offsets, docs, impacts, model: Bm25Model | None = None, shift: int = 6,
           range_postings: int = 2_000_000, sink=None, blockmax_min: int = BLOCKMAX_MIN,
           blockmax_ratio: float | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Encode CSR postings (per term, doc ids ascending) a term range at a time (bounded memory).

    Bytes go to ``sink(bytes)`` when given (a file being written), else are kept and returned.
    Returns (term_ptr, impact table, stats) and, without a sink, the stream as ``stats["stream"]``.
    ``blockmax_*``: which terms get a stored block-max list (module docstring).
    """
    impacts_dtype = np.asarray(impacts[:0]).dtype
    if impacts_dtype not in (np.float32, np.uint8, np.uint16):
        raise ValueError(f"impacts must be float32, uint8 or uint16, not {impacts_dtype}")
    n_terms = len(offsets) - 1
    tables = _Tables(impacts_dtype)
    term_bytes = np.zeros(n_terms, dtype=np.int64)
    mode_counts = np.zeros(3, dtype=np.int64)
    pieces = []
    for t0, t1 in _term_ranges(offsets, range_postings):
        data, sizes, modes = _encode_terms(offsets, docs, impacts, t0, t1, tables, model, shift, blockmax_min,
                                           blockmax_ratio)
        term_bytes[t0:t1] = sizes
        mode_counts += np.bincount(modes[sizes > 0], minlength=3)[:3]
        if sink is not None:
            sink(data)
        else:
            pieces.append(data.copy())
    if sink is not None:
        sink(np.zeros(PAD, np.uint8))
    else:
        pieces.append(np.zeros(PAD, np.uint8))
    ptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(term_bytes, out=ptr[1:])
    ptr = ptr.astype(np.uint32 if ptr[-1] + PAD < 2 ** 32 else np.uint64)
    stats = {"format": FORMAT, "chunk": CHUNK, "block_shift": shift,
             "terms_by_mode": {"table": int(mode_counts[0]), "values": int(mode_counts[1]),
                               "bm25": int(mode_counts[2])}}
    if sink is None:
        stats["stream"] = np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)
    return ptr, tables.array(), stats


# -- the packed postings of one index ----------------------------------------------------------

_EMPTY_NORMS = np.zeros(0, np.uint8)
_EMPTY_NORM_TABLE = np.zeros(0, np.float32)


class PackedPostings:
    """The compressed postings of an index (module docstring), memory-mapped or in memory."""

    def __init__(self, term_ptr: np.ndarray, stream: np.ndarray, table: np.ndarray, num_docs: int,
                 norms: np.ndarray | None = None, norm_table: np.ndarray | None = None, shift: int = 6) -> None:
        self.term_ptr = term_ptr
        self.stream = stream
        self.table = table
        self.num_docs = num_docs
        self.norms = _EMPTY_NORMS if norms is None else norms
        self.norm_table = _EMPTY_NORM_TABLE if norm_table is None else norm_table
        self.shift = shift
        self.df: np.ndarray | None = None  # posting count per term, read by check()

    @property
    def dtype(self) -> np.dtype:
        return self.table.dtype

    @property
    def float_bits(self) -> bool:
        return self.table.dtype == np.float32

    @property
    def num_postings(self) -> int:
        return int(self.df.sum())

    @classmethod
    def build(cls, offsets, docs, impacts, num_docs: int, model: Bm25Model | None = None, shift: int = 6,
              range_postings: int = 2_000_000, **options) -> "PackedPostings":
        """Compress CSR postings in memory (``options``: ``encode``'s block-max ones)."""
        ptr, table, stats = encode(offsets, docs, impacts, model, shift, range_postings, **options)
        bm25 = stats["terms_by_mode"]["bm25"] > 0
        packed = cls(ptr, stats["stream"], table, num_docs, model.norms if bm25 else None,
                     model.norm_table if bm25 else None, shift)
        packed.check()
        return packed

    @staticmethod
    def write(offsets, docs, impacts, num_docs: int, out_dir: Path, model: Bm25Model | None = None,
              shift: int = 6, range_postings: int = 2_000_000) -> dict:
        """Compress CSR postings into ``out_dir`` (a term range at a time: memory stays bounded);
        returns the manifest's description of them."""
        from indexing.postings import NpyAppender

        out_dir = Path(out_dir)
        raw = out_dir / (STREAM + ".bytes.tmp")
        with open(raw, "wb") as f:
            ptr, table, stats = encode(offsets, docs, impacts, model, shift, range_postings,
                                       sink=lambda b: f.write(b.tobytes()))
        total = int(ptr[-1]) + PAD
        out = NpyAppender(out_dir / STREAM, np.uint8, (total,))
        with open(raw, "rb") as f:
            shutil.copyfileobj(f, out._f, 1 << 24)
        out.close()
        os.unlink(raw)
        save_npy(out_dir / TERM_PTR, ptr)
        save_npy(out_dir / TABLE, table)
        if stats["terms_by_mode"]["bm25"]:
            save_npy(out_dir / NORMS, np.ascontiguousarray(model.norms, dtype=np.uint8))
            save_npy(out_dir / NORM_TABLE, np.ascontiguousarray(model.norm_table, dtype=np.float32))
        stats["bytes"] = total
        return stats

    def save_into(self, out_dir: Path) -> None:
        """Write these (already packed) arrays as the files of an index."""
        out_dir = Path(out_dir)
        for name, array in ((TERM_PTR, self.term_ptr), (STREAM, self.stream), (TABLE, self.table)):
            save_npy(out_dir / name, np.ascontiguousarray(array))
        if len(self.norm_table):
            save_npy(out_dir / NORMS, np.ascontiguousarray(self.norms))
            save_npy(out_dir / NORM_TABLE, np.ascontiguousarray(self.norm_table))

    @staticmethod
    def present(root: Path) -> bool:
        return (Path(root) / TERM_PTR).is_file()

    @classmethod
    def load(cls, root: Path, num_docs: int, mmap: bool = True, shift: int = 6) -> "PackedPostings":
        from indexing.manifest import IndexFormatError, load_array

        root = Path(root)
        arrays = [load_array(root, name, mmap) for name in FILES]
        norms = norm_table = None
        has = [(root / name).is_file() for name in (NORMS, NORM_TABLE)]
        if any(has):
            if not all(has):
                raise IndexFormatError(f"{root}: {NORMS} and {NORM_TABLE} go together; one is missing")
            norms, norm_table = load_array(root, NORMS, mmap), load_array(root, NORM_TABLE, mmap)
        return cls(*arrays, num_docs, norms, norm_table, shift)

    def _state(self) -> np.ndarray:
        return np.zeros(NST, dtype=np.int64)

    def check(self, where="index", n_terms: int | None = None) -> None:
        """Cheap checks (O(vocabulary)): array shapes and types, term pointers from 0, ascending,
        ending at the stream's end, each term's header sound. Reads the doc frequencies."""
        from indexing.manifest import IndexFormatError

        def bad(msg: str) -> IndexFormatError:
            return IndexFormatError(f"{where}: corrupt postings: {msg}")

        ptr, stream, table = self.term_ptr, self.stream, self.table
        if ptr.ndim != 1 or ptr.dtype not in (np.uint32, np.uint64) or len(ptr) < 1 \
                or (n_terms is not None and len(ptr) != n_terms + 1):
            raise bad(f"{TERM_PTR} must be {'' if n_terms is None else n_terms + 1} uint32/uint64 "
                      f"(terms + 1), got shape {ptr.shape} {ptr.dtype}")
        if stream.ndim != 1 or stream.dtype != np.uint8:
            raise bad(f"{STREAM} must be uint8 of one dimension, got shape {stream.shape} {stream.dtype}")
        if table.ndim != 1 or table.dtype not in (np.float32, np.uint8, np.uint16):
            raise bad(f"{TABLE} must be float32, uint8 or uint16 of one dimension, got {table.shape} {table.dtype}")
        if int(ptr[0]) != 0 or int(ptr[-1]) + PAD != len(stream):
            raise bad(f"term pointers run from {int(ptr[0])} to {int(ptr[-1])}, expected 0 to {len(stream) - PAD} "
                      f"(the stream's length less {PAD} bytes of padding)")
        if len(ptr) > 1 and not (np.diff(ptr.astype(np.int64)) >= 0).all():
            raise bad("term pointers decrease")
        if (len(self.norm_table) or len(self.norms)) and (
                self.norms.shape != (self.num_docs,) or self.norms.dtype != np.uint8
                or self.norm_table.shape != (256,) or self.norm_table.dtype != np.float32):
            raise bad(f"{NORMS} must be uint8 ({self.num_docs},) and {NORM_TABLE} float32 (256,)")
        df = np.zeros(len(ptr) - 1, dtype=np.int64)
        t = _doc_freqs(stream, ptr, self.num_docs, len(table), len(self.norms), len(self.norm_table),
                       self._state(), df)
        if t >= 0:
            raise bad(f"the header of term {t} is corrupt")
        self.df = df

    def verify(self, where="index") -> None:
        """Full scan (O(postings)): every chunk decoded, its directory entry, widths, doc ids,
        codes and impacts (finite, non-negative) checked; block-max lists against the postings."""
        from indexing.manifest import IndexFormatError

        self.check(where)
        if self.table.dtype == np.float32 and len(self.table) and not (np.isfinite(self.table).all()):
            raise IndexFormatError(f"{where}: corrupt postings: {ERRORS[5]} (impact table)")
        most = int(self.df.max(initial=0))
        out = np.zeros(2, dtype=np.int64)
        max_value = -1 if self.float_bits else int(np.iinfo(self.table.dtype).max)
        _verify_terms(self.stream, self.term_ptr, self.num_docs, self.table, self.float_bits, max_value, self.norms,
                      self.norm_table, self.shift, self._state(), np.zeros(CHUNK, np.int32),
                      np.zeros(CHUNK, np.float32), np.zeros(max(most, 1), np.int64),
                      np.zeros(max(most, 1), np.float32), out)
        if out[0]:
            raise IndexFormatError(f"{where}: corrupt postings: {ERRORS[int(out[0])].format(n=self.num_docs)} "
                                   f"(term {int(out[1])})")

    def materialize(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets int64, doc ids int32, impacts of the index's type): the uncompressed CSR."""
        from indexing.manifest import IndexFormatError

        offsets = np.zeros(len(self.df) + 1, dtype=np.int64)
        np.cumsum(self.df, out=offsets[1:])
        docs = np.empty(int(offsets[-1]), dtype=np.int32)
        vals = np.empty(int(offsets[-1]), dtype=np.float32)
        t = _decode_all(self.stream, self.term_ptr, offsets, self.num_docs, self.table, self.float_bits, self.norms,
                        self.norm_table, self._state(), np.zeros(CHUNK, np.int32), np.zeros(CHUNK, np.float32),
                        docs, vals)
        if t >= 0:
            raise IndexFormatError(f"corrupt postings: term {t} cannot be decoded "
                                   "(run `retriever info INDEX --verify`)")
        return offsets, docs, (vals if self.float_bits else vals.astype(self.table.dtype))

    def model(self) -> Bm25Model | None:
        """The BM25 model of the terms stored in the BM25 mode (their idf; NaN for the others),
        so that decoded postings can be packed again the same way; None without BM25 terms."""
        if not len(self.norm_table):
            return None
        modes = np.full(len(self.df), -1, dtype=np.int64)
        bases = np.zeros(len(self.df), dtype=np.int64)
        _term_modes(self.stream, self.term_ptr, self.num_docs, len(self.table), len(self.norms), len(self.norm_table),
                    self._state(), modes, bases)
        idf = np.full(len(self.df), np.nan, dtype=np.float32)
        bm25 = modes == MODE_BM25
        idf[bm25] = np.asarray(self.table)[bases[bm25]]
        return Bm25Model(idf, self.norms, self.norm_table)

    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.term_ptr, self.stream, self.table, self.norms, self.norm_table))
