"""A native in-process impact index: for each term, the documents that contain it and a weight.

BM25 and SPLADE indexes are both impact indexes: the score of a document for a query is
``sum(query_weight[t] * impact[t, d])`` over the query's terms. Impacts are float32, or
integers (uint8/uint16) with a ``scale`` such that ``impact ~= value / scale``.

Two layouts of the postings, searched by the same kernels' logic (``indexing.kernels``):

- packed (``indexing.compress``, what indexes are written in since format 3): doc ids
  delta-coded and bit-packed in chunks of 128, impacts as small codes (a BM25 term's tf with
  the document's length byte, a table code, or the integer itself), block-max lists only where
  they pay; memory-mapped and decoded chunk by chunk inside the kernels;
- CSR by term (``offsets``, ``postings_docs``, ``postings_impacts``, plus block-max lists
  ``bm_*.npy``: the blocks of ``2**shift`` documents each term occurs in, its largest impact
  there, where its postings for that block start): what the builders produce before writing,
  what indexes of formats 1 and 2 hold (they still load and are searched as they are, by the
  uncompressed kernels, with no rebuild and no conversion at load).

Search strategies: ``pruned`` (the default) skips blocks whose upper bound cannot reach the top
k and returns exactly what ``exhaustive`` (every posting of every query term) returns;
``approx`` prunes more (``approx`` factor < 1) and may miss documents. Both layouts give the
same results bit for bit. Batches run in threads with every per-query step compiled.

Opening an index checks its arrays' shapes, types and offsets (cheap: one pass over the
vocabulary); :meth:`InvertedIndex.verify` also scans every posting (doc ids in range and
ascending within each term, impacts finite and non-negative, packed chunks and block-max lists
consistent). The kernels bounds-check what they read, so even a corrupt index that skipped
``verify`` cannot make them read or write outside their buffers: the query fails with
:class:`IndexFormatError` instead.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import threading
from pathlib import Path

import numpy as np

from indexing import kernels
from indexing.compress import CHUNK, FORMAT, NST, Bm25Model, PackedPostings
from indexing.cpus import usable_cpus
from indexing.io import load_npy
from indexing.manifest import IndexFormatError, IndexWriter, load_array
from indexing.results import STRATEGIES

TERMS = "terms.json"
OFFSETS = "offsets.npy"
POSTINGS_DOCS = "postings_docs.npy"
POSTINGS_IMPACTS = "postings_impacts.npy"
BLOCKMAX = ("bm_ptr.npy", "bm_block.npy", "bm_max.npy", "bm_start.npy")
BLOCK_SHIFT = 6  # 64 documents per block
CSR = "csr"  # the uncompressed layout's name in a manifest ("postings": {"format": ...})
ARENA = 1 << 20  # postings per thread the pruned kernel may keep decoded for a query (16 MB)
PIECES_PER_THREAD = 8  # a threaded batch is cut into this many pieces per thread, taken as threads free up
BP_MAX_POSTINGS = 400_000_000  # postings BP reorders by at most (3.2 GB of forward index and its copy)


def _finite_float32(weights) -> np.ndarray:
    """Weights as float32, refused (ValueError) unless each is a number finite in float32."""
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("query weights must be numbers") from None
    with np.errstate(over="ignore", invalid="ignore"):
        w32 = w.astype(np.float32)
    if not np.isfinite(w32).all():
        bad = np.flatnonzero(~np.isfinite(w32))[0]
        raise ValueError(f"query weight {w[bad]!r} is not a finite float32 number")
    return w32


class InvertedIndex:
    _NO_SUPER = (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))

    def __init__(self, terms: list[str], offsets: np.ndarray | None, docs: np.ndarray | None,
                 impacts: np.ndarray | None, num_docs: int, scale: float | None = None, *,
                 packed: PackedPostings | None = None, model: Bm25Model | None = None) -> None:
        """CSR postings (``offsets``, ``docs``, ``impacts``), or ``packed`` ones (the three
        arrays then None: decoded only if asked for). ``model``: what a BM25 index's impacts
        are computed from, kept for the compressed writer (``indexing.compress.Bm25Model``)."""
        self.terms = terms
        self.term_ids = {t: i for i, t in enumerate(terms)}
        self._offsets, self._docs, self._impacts = offsets, docs, impacts
        self.packed = packed
        self.model = model
        self.num_docs = num_docs
        self.scale = scale
        self._local = threading.local()
        self._pools: dict = {}  # search threads by count (see _pool)
        self._pool_lock = threading.Lock()
        self.set_tie_order(None)
        self.blockmax: tuple | None = None  # the block-max lists (CSR layout), see ensure_blockmax
        self.shift = BLOCK_SHIFT
        self.block_cost = kernels.BLOCK_COST  # 0: never fall back from the pruned to the exhaustive kernel
        self.blocks_per_hit = float(kernels.BLOCKS_PER_HIT)  # learnt from the searches (see _learn)
        self.whole = kernels.WHOLE  # packed: a term of up to this many postings is decoded whole when scored
        self._maxscore_terms: int | None = None  # see maxscore_terms (None: by the index's kind)
        self.seek_cost = float(kernels.TAAT_SEEK_COST_SMALL if num_docs <= kernels.TAAT_SMALL_DOCS
                               else kernels.TAAT_SEEK_COST)  # ... its cost of a seek, in postings (0: always MaxScore)
        self.last_route = np.zeros(0, dtype=np.int8)  # how each query of the last batch was read (ROUTE_*)
        self.superblock_shift = kernels.SB_SHIFT  # packed: 2**this blocks per superblock
        self.superblock_min: int | None = None  # ... for terms of this many block-max entries (0: off; None:
        # kernels.SB_SHARE of the blocks)
        self._super: tuple | None = None  # (key, summary arrays), see ensure_superblocks
        self._super_lock = threading.Lock()
        self.root: Path | None = None  # the directory it was loaded from (where its heads live)
        self._heads = None  # indexing.heads.Heads, see ensure_heads
        self.loaded_checksum = None  # the manifest checksum of the directory ``load`` opened
        self.verify_heads = True  # check the heads' files against their checksums when opened
        self._heads_lock = threading.Lock()

    def _csr(self) -> None:
        """Decode packed postings into CSR arrays (for tools and references; searches never need it)."""
        self._offsets, self._docs, self._impacts = self.packed.materialize()

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            self._csr()
        return self._offsets

    @property
    def docs(self) -> np.ndarray:
        if self._docs is None:
            self._csr()
        return self._docs

    @property
    def impacts(self) -> np.ndarray:
        if self._impacts is None:
            self._csr()
        return self._impacts

    @property
    def layout(self) -> str:
        """``packed-v1`` (compressed) or ``csr``."""
        return FORMAT if self.packed is not None else CSR

    @property
    def impact_dtype(self) -> np.dtype:
        return self.packed.dtype if self.packed is not None else self._impacts.dtype

    def doc_freqs(self) -> np.ndarray:
        """Postings per term (int64)."""
        return self.packed.df.copy() if self.packed is not None else np.diff(self._offsets)

    def compressed(self, **options) -> "InvertedIndex":
        """This index with packed postings, in memory (same terms, tie order and settings;
        ``options``: ``indexing.compress.encode``'s, e.g. ``range_postings``, ``blockmax_min``)."""
        if self.packed is not None:
            return self
        packed = PackedPostings.build(self._offsets, self._docs, self._impacts, self.num_docs, self.model, self.shift,
                                      **options)
        return self._like(packed)

    def uncompressed(self) -> "InvertedIndex":
        """This index with CSR postings decoded into memory (searched by the uncompressed kernels)."""
        if self.packed is None:
            return self
        index = InvertedIndex(self.terms, *self.packed.materialize(), self.num_docs, self.scale,
                              model=self.model if self.model is not None else self.packed.model())
        return self._copy_settings(index)

    @property
    def maxscore_terms(self) -> int:
        """Packed postings: exact pruned queries of up to this many terms are read with MaxScore
        (0: never); by default every one on a BM25 index (``kernels.MAXSCORE_TERMS_BM25``: block-max
        bounds do not pay there), ``kernels.MAXSCORE_TERMS`` on an impact index."""
        if self._maxscore_terms is not None:
            return self._maxscore_terms
        bm25 = self.model is not None or (self.packed is not None and self.packed.norms.shape[0] > 0)
        return kernels.MAXSCORE_TERMS_BM25 if bm25 else kernels.MAXSCORE_TERMS

    @maxscore_terms.setter
    def maxscore_terms(self, value: int) -> None:
        self._maxscore_terms = int(value)

    def _like(self, packed: PackedPostings) -> "InvertedIndex":
        index = InvertedIndex(self.terms, None, None, None, self.num_docs, self.scale, packed=packed,
                              model=self.model)
        return self._copy_settings(index)

    def _copy_settings(self, index: "InvertedIndex") -> "InvertedIndex":
        index.tie_order, index.tie_rank = self.tie_order, self.tie_rank
        index.shift, index.block_cost, index.whole = self.shift, self.block_cost, self.whole
        index._maxscore_terms, index.seek_cost = self._maxscore_terms, self.seek_cost
        index.superblock_shift, index.superblock_min = self.superblock_shift, self.superblock_min
        return index

    def set_tie_order(self, order: np.ndarray | None) -> None:
        """How equal scores are ordered: ``order`` lists internal ids from first to last (the ids
        sorted by their external doc id string, :func:`indexing.manifest.read_docid_order`);
        None: by internal id."""
        if order is None:
            self.tie_order = np.arange(self.num_docs, dtype=np.int32)
            self.tie_rank = self.tie_order
            return
        order = np.asarray(order, dtype=np.int32)
        rank = np.empty(self.num_docs, dtype=np.int32)
        rank[order] = np.arange(self.num_docs, dtype=np.int32)
        self.tie_order, self.tie_rank = order, rank

    @classmethod
    def from_postings(cls, terms: list[str], term_ids: np.ndarray, doc_ids: np.ndarray,
                      impacts: np.ndarray, num_docs: int, scale: float | None = None) -> "InvertedIndex":
        """Build in memory from unordered (term, doc, impact) triples; repeated pairs are summed."""
        key = term_ids.astype(np.int64) * num_docs + doc_ids.astype(np.int64)
        order = np.argsort(key, kind="stable")
        key, impacts = key[order], impacts[order]
        starts = np.flatnonzero(np.diff(key, prepend=-1))
        if len(starts) != len(key):
            impacts = np.add.reduceat(impacts.astype(np.float64), starts).astype(impacts.dtype)
            key = key[starts]
        keep = impacts > 0
        key, impacts = key[keep], impacts[keep]
        t = key // num_docs
        d = (key % num_docs).astype(np.int32)
        offsets = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(t, minlength=len(terms)), out=offsets[1:])
        return cls(terms, offsets, d, impacts, num_docs, scale)

    def save(self, writer: IndexWriter, compressed: bool = True) -> dict:
        """Write the terms and the postings into ``writer``: packed (``compressed``, the
        default: a term range at a time, so memory stays bounded), or as CSR with block-max
        lists (the layout of formats 1 and 2). Uncompressed postings a builder wrote into the
        directory are removed once packed. Returns the manifest's ``postings`` description."""
        with open(writer.path(TERMS), "w", encoding="utf-8") as f:
            json.dump(self.terms, f, ensure_ascii=False, separators=(",", ":"))
        built = [writer.tmp / name for name in (POSTINGS_DOCS, POSTINGS_IMPACTS)]
        if not compressed:
            csr = self if self.packed is None else self.uncompressed()
            writer.save_array(OFFSETS, csr.offsets)
            if not isinstance(csr.docs, np.memmap) or Path(csr.docs.filename).parent != writer.tmp:
                writer.save_array(POSTINGS_DOCS, csr.docs)
                writer.save_array(POSTINGS_IMPACTS, csr.impacts)
            for name, array in zip(BLOCKMAX, csr.ensure_blockmax()):
                writer.save_array(name, array)
            return {"format": CSR}
        if self.shift != BLOCK_SHIFT:  # stored block-max lists are per block of the loader's size
            raise ValueError(f"an index is written with blocks of {1 << BLOCK_SHIFT} documents, not {1 << self.shift}")
        if self.packed is not None:
            self.packed.save_into(writer.tmp)
            stats = {"format": FORMAT, "chunk": CHUNK, "block_shift": self.shift}
        else:
            stats = PackedPostings.write(self._offsets, self._docs, self._impacts, self.num_docs, writer.tmp,
                                         self.model, self.shift)
            stats.pop("bytes", None)
        for path in built:  # a builder's uncompressed postings (still mapped here: fine on POSIX)
            if path.is_file():
                path.unlink()
        return stats

    def renumbered(self, order: np.ndarray, out_dir: Path, chunk_postings: int = 20_000_000) -> "InvertedIndex":
        """This index with its documents in another internal order: new id ``i`` is old id
        ``order[i]``. The postings are rewritten into ``out_dir`` (``postings_docs.npy``,
        ``postings_impacts.npy``, replaced atomically; a term range at a time, so memory stays
        bounded) and the result maps them."""
        from indexing.postings import NpyAppender, by_term

        order = np.asarray(order, dtype=np.int64)
        if order.shape != (self.num_docs,) or not np.array_equal(np.sort(order), np.arange(self.num_docs)):
            raise ValueError("order must be a permutation of the documents")
        rank = np.empty(self.num_docs, dtype=np.int32)
        rank[order] = np.arange(self.num_docs, dtype=np.int32)
        out_dir = Path(out_dir)
        total = self.num_postings
        docs_out = NpyAppender(out_dir / (POSTINGS_DOCS + ".tmp"), np.int32, (total,))
        imps_out = NpyAppender(out_dir / (POSTINGS_IMPACTS + ".tmp"), self.impacts.dtype, (total,))
        n_terms, t0 = len(self.terms), 0
        while t0 < n_terms:
            t1 = int(np.searchsorted(self.offsets, self.offsets[t0] + chunk_postings, side="right")) - 1
            t1 = min(max(t1, t0 + 1), n_terms)
            lo, hi = int(self.offsets[t0]), int(self.offsets[t1])
            new_docs = rank[np.asarray(self.docs[lo:hi])]
            term_of = np.repeat(np.arange(t1 - t0, dtype=np.int64), np.diff(self.offsets[t0:t1 + 1]))
            sort = by_term(term_of, new_docs)  # (a term's doc ids are distinct)
            docs_out.append(new_docs[sort])
            imps_out.append(np.asarray(self.impacts[lo:hi])[sort])
            t0 = t1
        docs_out.close()
        imps_out.close()
        for name in (POSTINGS_DOCS, POSTINGS_IMPACTS):
            os.replace(out_dir / (name + ".tmp"), out_dir / name)
        model = self.model.renumbered(order) if self.model is not None else None
        return InvertedIndex(self.terms, self.offsets, load_npy(out_dir / POSTINGS_DOCS, "r"),
                             load_npy(out_dir / POSTINGS_IMPACTS, "r"), self.num_docs, self.scale,
                             model=model)

    def bp_order(self, max_postings: int | None = BP_MAX_POSTINGS) -> np.ndarray:
        """An order of the documents that puts similar ones together (recursive graph bisection,
        ``indexing.reorder``): tighter block maxima, smaller gaps between postings. Memory stays
        bounded: BP's forward index (and its working copy, 8 bytes a posting in all) holds at
        most ``max_postings`` postings, of the rarest terms of two or more documents
        (``reorder.bp_terms``; None: every such term)."""
        from indexing.reorder import bisect_order, bp_terms, doc_term_csr

        terms = bp_terms(np.diff(self.offsets), max_postings)
        indptr, indices = doc_term_csr(self.offsets, self.docs, self.num_docs, terms)
        return bisect_order(indptr, indices, len(self.terms))

    def ensure_blockmax(self) -> tuple:
        """The block-max lists, computed from the postings if the index has none yet."""
        if self.blockmax is None:
            self.blockmax = kernels.build_blockmax(self.offsets, self.docs, self.impacts, self.shift)
        return self.blockmax

    def ensure_superblocks(self) -> tuple:
        """Packed postings: the superblock summary the pruned kernel bounds first
        (``kernels._pruned_super``: per summarised term, for each superblock it touches, the first
        block, its block-max entry, the largest impact), derived from the stored block-max lists
        on the first pruned search (nothing stored on disk). Empty (a pointer of length 1, the
        plain block-max kernel) when ``superblock_min`` is 0 or no term has that many entries
        (default: ``kernels.SB_SHARE`` of the blocks)."""
        key = (self.superblock_shift, self.superblock_min, self.shift)
        with self._super_lock:
            if self._super is None or self._super[0] != key:
                self._super = (key, self._summarise())
            return self._super[1]

    def _summarise(self) -> tuple:
        p = self.packed
        none = self._NO_SUPER
        n_blocks = (self.num_docs >> self.shift) + 1
        least = self.superblock_min if self.superblock_min is not None else math.ceil(kernels.SB_SHARE * n_blocks)
        if p is None or least < 1:
            return none
        st = np.zeros(NST, dtype=np.int64)
        ptr = np.zeros(len(p.term_ptr), dtype=np.int64)
        args = (p.stream, p.term_ptr, self.num_docs, p.table, p.float_bits, p.norms.shape[0], p.norm_table,
                self.shift, int(self.superblock_shift), int(least), st, ptr)
        total = kernels.super_summary(*args, *none[1:], False)
        if total == 0:
            return none
        np.cumsum(ptr, out=ptr)
        first, entry, val = np.empty(total, np.int32), np.empty(total, np.int32), np.empty(total, np.float32)
        kernels.super_summary(*args, first, entry, val, True)
        return ptr, first, entry, val

    def ensure_heads(self):
        """The heads and forward lists of ``INDEX/heads`` (``indexing.heads``), opened and copied
        into memory (``Heads.preload``) on the first ``heads`` search; a clear error when the index has none or
        they are stale."""
        from indexing import heads

        with self._heads_lock:  # one copy in memory, whichever thread searches first
            if self._heads is None:
                where = None if self.root is None else self.root / heads.HEADS_DIR
                if where is None or not (where / "manifest.json").is_file():
                    raise IndexFormatError(f"{self.root or 'this index'}: no heads for strategy 'heads'; derive "
                                           f"them with `retriever heads {self.root or 'INDEX'}`")
                now = heads.parent_checksum(self.root)
                if self.loaded_checksum is not None and now != self.loaded_checksum:
                    raise IndexFormatError(f"{self.root}: rebuilt since this index was loaded (its heads are for the "
                                           "new version); load it again to search with strategy 'heads'")
                found = heads.Heads(where, self.num_docs, len(self.terms), now, verify=self.verify_heads)
                found.preload()  # in memory on huge pages, as a server would (heads.Heads.preload)
                self._heads = found
            return self._heads

    @staticmethod
    def layout_of(manifest: dict) -> str | None:
        """The postings layout an index's manifest records (``postings.format``); None when it
        records none (indexes before format 3: whichever the directory holds)."""
        postings = manifest.get("postings")
        if not isinstance(postings, dict) or "format" not in postings:
            return None
        if not isinstance(postings["format"], str):
            raise IndexFormatError("manifest field 'postings.format' must be str, got "
                                   f"{json.dumps(postings['format'])[:60]}")
        return postings["format"]

    @classmethod
    def load(cls, root: str | Path, num_docs: int, scale: float | None = None,
             mmap: bool = True, layout: str | None = None) -> "InvertedIndex":
        """Open an index directory's postings (memory-mapped). ``layout``: what its manifest
        says (``packed-v1`` or ``csr``); None: whichever the directory holds."""
        root = Path(root)
        try:
            terms = json.loads((root / TERMS).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexFormatError(f"{root / TERMS}: not a JSON list of terms ({e})") from None
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise IndexFormatError(f"{root / TERMS}: expected a JSON list of strings")
        if layout is None:
            layout = FORMAT if PackedPostings.present(root) else CSR
        if layout == FORMAT:
            packed = PackedPostings.load(root, num_docs, mmap, BLOCK_SHIFT)
            index = cls(terms, None, None, None, num_docs, scale, packed=packed)
            index.check(root)
            index.root = root
            from indexing.heads import parent_checksum

            index.loaded_checksum = parent_checksum(root)  # the generation opened (its heads must match it)
            return index
        if layout != CSR:
            raise IndexFormatError(f"{root}: postings format {layout!r} is unknown to this retriever; "
                                   "rebuild the index with `retriever index` (or upgrade)")
        index = cls(terms, load_array(root, OFFSETS, mmap), load_array(root, POSTINGS_DOCS, mmap),
                    load_array(root, POSTINGS_IMPACTS, mmap), num_docs, scale)
        index.check(root)
        if all((root / name).is_file() for name in BLOCKMAX):
            index.blockmax = tuple(load_array(root, name, mmap) for name in BLOCKMAX)
            index.check_blockmax(root)
        return index

    def check_blockmax(self, where: str | Path = "index") -> None:
        """Cheap checks of the block-max lists (O(vocabulary)); the kernel checks the rest."""
        for ptr, ids, top, first in (self.blockmax,):
            if ptr.shape != self.offsets.shape or ptr.dtype.kind not in "iu" or int(ptr[0]) != 0 \
                    or int(ptr[-1]) != len(ids) or len(top) != len(ids) or len(first) != len(ids) \
                    or (len(ptr) > 1 and not (np.diff(ptr) >= 0).all()) or top.dtype != self.impacts.dtype:
                raise IndexFormatError(f"{where}: corrupt block-max lists (bm_*.npy)")

    def check(self, where: str | Path = "index") -> None:
        """Cheap structural checks (O(vocabulary)): shapes, dtypes, offsets from 0, non-decreasing,
        ending at the number of postings (packed: term pointers and every term's header). Raises
        IndexFormatError naming ``where``."""
        def bad(msg: str) -> IndexFormatError:
            return IndexFormatError(f"{where}: corrupt postings: {msg}")

        if self.packed is not None:
            if not isinstance(self.num_docs, int) or self.num_docs < 0:
                raise bad(f"document count {self.num_docs!r}")
            self.packed.check(where, len(self.terms))
            if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
                raise bad(f"impact scale {self.scale!r} must be a positive finite number")
            return
        off, docs, imp = self.offsets, self.docs, self.impacts
        if not isinstance(self.num_docs, int) or self.num_docs < 0:
            raise bad(f"document count {self.num_docs!r}")
        if off.ndim != 1 or off.dtype.kind not in "iu" or len(off) != len(self.terms) + 1:
            raise bad(f"{OFFSETS} must be {len(self.terms) + 1} integers (terms + 1), "
                      f"got shape {off.shape} {off.dtype}")
        if docs.ndim != 1 or docs.dtype != np.int32:
            raise bad(f"{POSTINGS_DOCS} must be int32 of one dimension, got shape {docs.shape} {docs.dtype}")
        if imp.ndim != 1 or imp.dtype not in (np.float32, np.uint8, np.uint16):
            raise bad(f"{POSTINGS_IMPACTS} must be float32, uint8 or uint16 of one dimension, "
                      f"got shape {imp.shape} {imp.dtype}")
        if len(imp) != len(docs):
            raise bad(f"{len(docs)} doc ids but {len(imp)} impacts")
        if int(off[0]) != 0 or int(off[-1]) != len(docs):
            raise bad(f"offsets run from {int(off[0])} to {int(off[-1])}, expected 0 to {len(docs)}")
        if len(off) > 1 and not (np.diff(off) >= 0).all():
            raise bad("offsets decrease")
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise bad(f"impact scale {self.scale!r} must be a positive finite number")

    def verify(self, where: str | Path = "index", step: int = 1 << 24) -> None:
        """Full scan (O(postings)): every doc id in [0, num_docs) and strictly ascending within
        its term, every impact finite and non-negative (packed: also every chunk header, offset
        and code, and the block-max lists against the postings). Raises IndexFormatError."""
        if self.packed is not None:
            self.packed.verify(where)
            return
        self.check(where)
        starts = np.zeros(len(self.docs), dtype=bool)
        starts[self.offsets[:-1][np.diff(self.offsets) > 0]] = True  # first posting of each term
        for p0 in range(0, len(self.docs), step):
            p1 = min(len(self.docs), p0 + step)
            d = np.asarray(self.docs[p0:p1])
            if len(d) and (d.min() < 0 or d.max() >= self.num_docs):
                raise IndexFormatError(f"{where}: corrupt postings: doc ids outside [0, {self.num_docs}) "
                                       f"among postings {p0}..{p1 - 1}")
            prev = np.asarray(self.docs[p0 - 1:p1 - 1]) if p0 else np.concatenate([[-1], d[:-1]])
            if not ((d > prev) | starts[p0:p1]).all():
                raise IndexFormatError(f"{where}: corrupt postings: doc ids not ascending within a "
                                       f"term among postings {p0}..{p1 - 1}")
            v = np.asarray(self.impacts[p0:p1])
            if v.dtype.kind == "f" and not (np.isfinite(v) & (v >= 0)).all():
                raise IndexFormatError(f"{where}: corrupt postings: impacts negative or not finite "
                                       f"among postings {p0}..{p1 - 1}")

    @property
    def num_postings(self) -> int:
        return self.packed.num_postings if self.packed is not None else int(self._offsets[-1])

    def encode(self, query: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and float32 weights of the query terms this index knows.

        The one rule for query weights: every weight must be a number finite in float32 (else
        ValueError, whether or not the index knows its term); weights <= 0 are ignored (a term
        cannot lower a score), as are unknown terms.
        """
        w = _finite_float32(list(query.values()))
        ids = np.fromiter((self.term_ids.get(t, -1) for t in query), dtype=np.int32, count=len(query))
        keep = (ids >= 0) & (w > 0)
        return ids[keep], w[keep]

    def _checked(self, terms, weights) -> tuple[np.ndarray, np.ndarray]:
        """(term ids, weights) validated: ids in range, weights finite; weights <= 0 dropped."""
        terms = np.asarray(terms)
        w = _finite_float32(weights)
        if terms.ndim != 1 or w.ndim != 1 or len(terms) != len(w):
            raise ValueError(f"term ids and weights must be two 1-D arrays of one length, "
                             f"got shapes {terms.shape} and {w.shape}")
        if len(terms) and (terms.dtype.kind not in "iu" or terms.min() < 0 or terms.max() >= len(self.terms)):
            raise ValueError(f"query term ids must be integers in [0, {len(self.terms)})")
        keep = w > 0
        return terms[keep].astype(np.int32), w[keep]

    def _scratch(self, k: int, terms: int = 0):
        """Per-thread scratch buffers (grown for ``k`` and for queries of ``terms`` terms)."""
        local = self._local
        if getattr(local, "acc", None) is None:
            n_blocks = (self.num_docs >> self.shift) + 1
            width = 1 << self.shift
            local.acc = np.zeros(self.num_docs, dtype=np.float32)
            local.seen = np.zeros(self.num_docs, dtype=np.uint8)
            local.touched = np.empty(self.num_docs, dtype=np.int32)
            local.ub = np.zeros(n_blocks, dtype=np.float32)
            local.ub_seen = np.zeros(n_blocks, dtype=np.uint8)
            local.ub_mask = np.zeros(n_blocks, dtype=np.uint64)
            local.cand = np.empty(n_blocks, dtype=np.int64)
            local.order = np.empty(n_blocks, dtype=np.uint64)
            local.loc_acc = np.zeros(width, dtype=np.float32)
            local.loc_seen = np.zeros(width, dtype=np.uint8)
            local.loc_list = np.empty(width, dtype=np.int32)
        if getattr(local, "heap", None) is None or len(local.heap) < k:
            local.heap = np.empty(max(k, 16), dtype=np.uint64)
        n_super = ((self.num_docs >> self.shift) >> self.superblock_shift) + 1
        if getattr(local, "sub", None) is None or len(local.sub) != n_super:
            local.sub = np.zeros(n_super, dtype=np.float32)
            local.sub_seen = np.zeros(n_super, dtype=np.uint8)
            local.sub_cand = np.empty(n_super, dtype=np.int64)
        if self.packed is not None and getattr(local, "arena_docs", None) is None:
            size = min(ARENA, self.num_postings)
            local.arena_docs = np.zeros(size, dtype=np.int32)
            local.arena_vals = np.zeros(size, dtype=np.float32)
            local.arena_blocks = np.zeros(size, dtype=np.int64)
        if getattr(local, "qstate", None) is None or len(local.qstate) < terms:
            rows = max(terms, 16)
            local.qstate = np.zeros((rows, NST), dtype=np.int64)
            local.cache_docs = np.zeros((rows, CHUNK), dtype=np.int32)
            local.cache_vals = np.zeros((rows, CHUNK), dtype=np.float32)
        return local

    def _pool(self, threads: int):
        """The index's pool of ``threads`` search threads, kept between batches: each thread
        keeps its scratch (an accumulator per document, block bounds, decoding arena), which a
        fresh thread would allocate again for every batch."""
        from concurrent.futures import ThreadPoolExecutor

        with self._pool_lock:
            pool = self._pools.get(threads)
            if pool is None:
                pool = self._pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="search")
            return pool

    def _learn(self, scored: np.ndarray, k: int) -> None:
        """Update the blocks a pruned search scores per hit (an average over batches) from the
        blocks each query scored, or was known to need when it was read exhaustively: the kernel
        then sends a query to the exhaustive kernel before its bounds pass when ``per hit * k``
        blocks would cost more than its postings (results are exact either way; only the time
        depends on it)."""
        # (plain Python: numpy's calls cost more than this on the one query a call searches often carry)
        need = [x for x in (s if s >= 0 else -1 - s for s in scored.tolist()) if x > 0]
        if need:
            seen = float(statistics.median(need)) / k
            self.blocks_per_hit = min(max(0.75 * self.blocks_per_hit + 0.25 * seen, 0.5), 1e6)

    def top_k(self, query: dict[str, float], k: int, strategy: str = "pruned",
              approx: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids and scores of the k best matching documents.

        Order is score descending, then the tie order (:meth:`set_tie_order`: the external doc
        id ascending in a loaded index, the internal id by default). Documents that match no
        query term are never returned, so fewer than k may come back.
        """
        return self.search_many([self.encode(query)], k, strategy, approx, checked=True)[0]

    def top_k_ids(self, terms: np.ndarray, weights: np.ndarray, k: int, strategy: str = "pruned",
                  approx: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """``top_k`` for a query given as term ids and weights (same weight rule as ``encode``)."""
        return self.search_many([(terms, weights)], k, strategy, approx)[0]

    def search_many(self, queries: list, k: int, strategy: str = "pruned", approx: float = 1.0,
                    threads: int = 1, checked: bool = False, raw: bool = False, heads_depth: int | None = None,
                    candidates: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(internal ids, scores) of the k best documents for each ``(term ids, weights)`` query.

        ``strategy``: ``pruned`` (exact: a query of at most ``maxscore_terms`` terms is read with
        MaxScore term at a time (packed postings), longer ones with block-max bounds; either falls
        back to the exhaustive kernel when it would not pay: ``kernels._search_packed``),
        ``exhaustive``, or ``approx`` (block-max, stopping when ``approx * bound <
        threshold``; ``approx`` in (0, 1]), or ``heads`` (``indexing.heads``: the ``candidates``
        (at least k) documents of best partial score over the ``heads_depth x terms`` head postings
        of largest weight x impact, scored exactly; needs ``INDEX/heads``; knobs not given:
        ``heads.default_knobs``, by the index's size). ``last_route`` tells
        which way each query went. ``threads``: that many threads search
        the batch in parallel (the kernel holds no GIL), taking its queries in contiguous pieces
        (``PIECES_PER_THREAD`` per thread) as they free up; never more than the CPUs this process
        may use (``indexing.cpus``): each search thread keeps scratch the size of the collection.
        ``raw``: scores as the kernel ranks them, not divided by the quantisation scale (two
        scores can differ there and be equal once divided; merging results of several indexes
        by raw score keeps exactly the order one index gives).
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        if strategy == "approx":
            if not (isinstance(approx, (int, float)) and 0 < approx <= 1):
                raise ValueError(f"approx must be in (0, 1], got {approx!r}")
        else:
            approx = 1.0
        if strategy == "heads":
            from indexing import heads as heads_mod

            depth0, candidates0 = heads_mod.default_knobs(self.num_docs)
            heads_depth = depth0 if heads_depth is None else heads_depth
            candidates = candidates0 if candidates is None else candidates
            for name, v in (("heads_depth", heads_depth), ("candidates", candidates)):
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                    raise ValueError(f"{name} must be a positive integer, got {v!r}")
            # clamped to what can matter (every head posting; every document), so any int fits the kernel
            heads_depth, candidates = min(int(heads_depth), 1 << 40), min(int(candidates), max(1, self.num_docs))
        if not checked:
            queries = [self._checked(t, w) for t, w in queries]
        k = min(int(k), self.num_docs)
        n = len(queries)
        if n == 0 or k < 1:
            return [(np.empty(0, np.int32), np.empty(0, np.float32)) for _ in range(n)]
        # (a few microseconds each: plain Python for the small bookkeeping, one query a call is common)
        lengths = [len(t) for t, _ in queries]
        q_ptr = np.array([0, *itertools.accumulate(lengths)], dtype=np.int64)
        q_terms = np.concatenate([t for t, _ in queries]).astype(np.int32) if q_ptr[-1] else np.empty(0, np.int32)
        q_weights = np.concatenate([w for _, w in queries]).astype(np.float32) if q_ptr[-1] else np.empty(0, np.float32)
        mode = 0 if strategy == "exhaustive" else 1
        out_keys = np.zeros((n, k), dtype=np.uint64)
        out_counts = np.zeros(n, dtype=np.int64)
        self.last_blocks_scored = out_scored = np.zeros(n, dtype=np.int64)
        self.last_route = out_route = np.full(n, kernels.ROUTE_BLOCKMAX if mode else kernels.ROUTE_EXHAUSTIVE,
                                              dtype=np.int8)
        longest = max(lengths)
        packed = self.packed
        per_hit = np.float64(self.blocks_per_hit)

        if strategy == "heads":
            h = self.ensure_heads()
            out_route[:] = kernels.ROUTE_HEADS

            need = min(self.num_docs, int(heads_depth) * longest)  # postings a query reads, at most
            slots = 1 << max(10, (2 * need - 1).bit_length())

            def run(lo: int, hi: int) -> None:
                s = self._scratch(k, longest)
                if getattr(s, "hkeys", None) is None or len(s.hkeys) < slots:
                    s.hkeys, s.hvals = np.full(slots, -1, dtype=np.int32), np.zeros(slots, dtype=np.float32)
                if getattr(s, "qpos", None) is None:
                    s.qpos = np.full(len(self.terms), -1, dtype=np.int32)
                    s.qmark = np.zeros(len(self.terms), dtype=np.uint8)
                if getattr(s, "qnext", None) is None or len(s.qnext) < longest:
                    s.qnext, s.qval = np.empty(max(longest, 16), np.int32), np.zeros(max(longest, 16), np.float32)
                    s.qends = np.empty(max(longest, 16), np.int64)
                heads_mod.search(lo, hi, q_ptr, q_terms, q_weights, k, int(heads_depth), max(int(candidates), k),
                                 h.head_ptr, h.head_docs, h.head_vals, h.doc_ptr, h.fwd_terms, h.fwd_vals,
                                 self.tie_rank, s.hkeys, s.hvals, s.touched, s.qmark, s.qpos, s.qnext, s.qval,
                                 out_keys, out_counts, out_scored, s.qends)
        elif packed is not None:
            sb = self.ensure_superblocks() if mode else self._NO_SUPER

            def run(lo: int, hi: int) -> None:
                s = self._scratch(k, longest)
                kernels.search_packed(lo, hi, q_ptr, q_terms, q_weights, k, mode, np.float32(approx),
                                      np.float64(self.block_cost), per_hit, packed.stream, packed.term_ptr, packed.table,
                                      packed.float_bits, packed.norms, packed.norm_table, self.tie_rank, self.shift,
                                      s.acc, s.seen, s.touched, s.ub, s.ub_seen, s.ub_mask, s.cand, s.order,
                                      s.loc_acc, s.loc_seen, s.loc_list, s.heap, s.qstate, s.cache_docs,
                                      s.cache_vals, s.arena_docs, s.arena_vals, s.arena_blocks, self.whole,
                                      int(self.maxscore_terms), np.float64(self.seek_cost), out_keys, out_counts,
                                      out_scored, out_route,
                                      *sb, int(self.superblock_shift), s.sub, s.sub_seen, s.sub_cand)
        else:
            bm = self.ensure_blockmax() if mode else (np.zeros(1, np.int64), np.zeros(0, np.uint32),
                                                      np.zeros(0, self._impacts.dtype), np.zeros(0, np.uint32))

            def run(lo: int, hi: int) -> None:
                s = self._scratch(k)
                kernels.search_queries(lo, hi, q_ptr, q_terms, q_weights, k, mode, np.float32(approx),
                                       np.float64(self.block_cost), per_hit, self._offsets,
                                       self._docs, self._impacts, self.tie_rank, *bm, self.shift, s.acc, s.seen,
                                       s.touched, s.ub, s.ub_seen, s.cand, s.order, s.loc_acc, s.loc_seen,
                                       s.loc_list, s.heap, out_keys, out_counts, out_scored)

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        # each piece's keys decoded by the thread that searched it (at k = 1000 decoding the
        # whole batch afterwards, in one thread, held back the second: docs/BENCHMARKS.md)
        ids = np.empty((n, k), dtype=self.tie_order.dtype)
        scores = np.empty((n, k), dtype=np.float32)
        scale = np.float32(self.scale if self.scale and not raw else 0.0)

        unsorted = k > kernels.SORT_IN_KERNEL and strategy != "heads"

        def piece(lo: int, hi: int) -> None:
            run(lo, hi)
            if unsorted:
                kernels.sort_rows(out_keys, lo, hi)
            kernels.decode_rows(out_keys, out_counts, lo, hi, self.tie_order, scale, ids, scores, unsorted)

        workers = min(threads, n)
        if workers > 1:  # (threads past the CPUs would only add scratch; one query a call asks no syscall)
            workers = min(workers, usable_cpus())
        if workers == 1:
            piece(0, n)
        else:  # pieces of the batch taken by whichever thread is free: query costs vary 10x and more
            pieces = min(n, workers * PIECES_PER_THREAD)
            parts = [n * i // pieces for i in range(pieces + 1)]
            list(self._pool(workers).map(lambda i: piece(parts[i], parts[i + 1]), range(pieces)))
        if mode and strategy != "heads":
            self._learn(out_scored, k)
            if packed is None:
                out_route[out_scored < 0] = kernels.ROUTE_EXHAUSTIVE
        counts = out_counts.tolist()  # (plain Python: numpy's calls cost more on the one query a call often holds)
        corrupt = min(counts) < 0
        if corrupt and strategy == "heads":
            raise IndexFormatError(f"{self.root}/heads: corrupt heads or forward lists (a doc id or term outside "
                                   f"the index); derive them again: `retriever heads {self.root} --overwrite`")
        if corrupt:
            raise IndexFormatError("corrupt postings: a doc id outside the collection or its block, or a "
                                   "chunk header, offset or code out of range (run `retriever info INDEX --verify`)")
        return [(ids[q, :c], scores[q, :c]) for q, c in enumerate(counts)]
