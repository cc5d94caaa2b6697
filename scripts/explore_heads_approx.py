"""Exploration (issue 14, not merged): approximate top-k from per-term heads plus exact block scoring.

    python scripts/explore_heads_approx.py INDEX QUERIES CAP DEPTHS BLOCKS [SCORERS]
    python scripts/explore_heads_approx.py /tmp/retriever-bench/splade-like-1000000-bp 100 4096 128,256,1024 32,128,512

INDEX: a SPLADE-like index of scripts/bench_sparse_scale.py. Each term's ``CAP`` highest-impact
postings (its head) are derived from the packed postings; a query accumulates the first ``depth`` of
each of its terms' heads into partial scores, ranks blocks by their best partial score and scores the
top ``blocks`` blocks exactly, through the postings (``kernels._score_block_packed``), from a
forward index per block built here, or from that forward index through a per-block directory of
its distinct terms; or (``docs``) the ``blocks x 64`` documents with the best partial scores are
scored one by one from a forward list per document. Every returned score is exact; only recall is
approximate. SCORERS (optional 6th argument): comma-separated of postings, forward, fwd+dir, docs, and
docs-q6 / docs-q10 / docs-q16 (candidates from the heads of the query's 6 / 10 / 16 heaviest terms). Prints agreement with the exact top-10 and the speed-up over the exhaustive kernel,
beside exact pruning's, in the same process.

Measured on 1M SPLADE-like documents (docs/BENCHMARKS.md, "tried and not merged"): at 0.98
agreement 10.5x with the forward index, 7.5x through the postings, against exact pruning's 8.2x;
scoring 256 documents one by one: 0.996 agreement at 13.4x (pruned 7.4x in that run).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from indexing import kernels as K  # noqa: E402
from indexing.inverted import InvertedIndex  # noqa: E402
from scripts.synthetic_splade import SpladeLike  # noqa: E402


@njit(nogil=True, cache=False)
def derive_heads(buf, term_ptr, num_docs, table, float_bits, norms, norm_table, shift, cap, st, arena_docs,
                 arena_vals, arena_blocks, ptr, out_docs, out_vals, fill):
    total = 0
    used = np.zeros(2, dtype=np.int64)
    for t in range(term_ptr.shape[0] - 1):
        if fill and ptr[t + 1] == ptr[t]:
            continue
        if K._open_term(buf, term_ptr, t, num_docs, table.shape[0], norms.shape[0], norm_table.shape[0], st) < 0:
            continue
        df = st[K.ST_DF]
        if df == 0:
            continue
        h = min(df, cap)
        if not fill:
            ptr[t + 1] = h
            total += h
            continue
        used[0] = 0
        used[1] = 0
        if K._decode_whole(buf, st, num_docs, shift, table, float_bits, norms, norm_table, arena_docs, arena_vals,
                           arena_blocks, used) < 0:
            continue
        mode = st[K.ST_MODE]
        idf = np.float32(table[st[K.ST_BASE]]) if mode == K.MODE_BM25 else np.float32(0.0)
        vals = np.empty(df, dtype=np.float32)
        for i in range(df):
            vals[i] = K._impact(mode, idf, arena_vals[i])
        order = np.argsort(-vals, kind="mergesort")[:h]
        e = ptr[t]
        for i in range(h):
            out_docs[e + i] = arena_docs[order[i]]
            out_vals[e + i] = vals[order[i]]
        total += h
    return total


@njit(nogil=True, cache=False)
def accumulate_heads(use, q_terms, q_weights, depth, head_ptr, head_docs, head_vals, acc, seen, touched):
    """Partial scores over the first ``depth`` of the heads of query terms ``use`` (positions in the
    query) into ``acc``; the documents touched listed in ``touched`` (their count returned)."""
    nt = 0
    for j in use:
        t = q_terms[j]
        w = q_weights[j]
        lo = head_ptr[t]
        for i in range(lo, min(head_ptr[t + 1], lo + depth)):
            d = head_docs[i]
            if seen[d] == 0:
                seen[d] = 1
                touched[nt] = d
                nt += 1
            acc[d] += w * head_vals[i]
    return nt


@njit(nogil=True, cache=False, inline="always")
def push_doc(d, score, tie_rank, k, heap, size):
    """Document ``d`` with ``score`` into the top-k heap (the kernels' key: score bits, then tie order)."""
    if score > 0.0:
        key = (np.uint64(np.float32(score).view(np.uint32)) << np.uint64(32)) | (K._LOW - np.uint64(tie_rank[d]))
        if size < k or key > heap[0]:
            size = K._heap_push(heap, size, k, key)
    return size


@njit(nogil=True, cache=False)
def push_block(base, n_loc, loc_acc, loc_seen, loc_list, tie_rank, k, heap, size):
    """A scored block's documents (``loc_list`` offsets from ``base``) into the heap; its scratch cleared."""
    for m in range(n_loc):
        off = loc_list[m]
        size = push_doc(base + off, loc_acc[off], tie_rank, k, heap, size)
        loc_acc[off] = 0.0
        loc_seen[off] = 0
    return size


@njit(nogil=True, cache=False)
def candidate_blocks(q_terms, q_weights, depth, shift, head_ptr, head_docs, head_vals, acc, seen, touched, ub,
                     ub_seen, cand):
    """Blocks by the best partial score of their documents over the first ``depth`` of each
    query term's head: block keys (bound bits << 32 | block), ascending; ``ub``/``ub_seen`` of the
    ``cand`` blocks are left for the caller to clear."""
    nt = accumulate_heads(np.arange(q_terms.shape[0]), q_terms, q_weights, depth, head_ptr, head_docs, head_vals,
                          acc, seen, touched)
    n_cand = 0
    for i in range(nt):
        d = touched[i]
        b = d >> shift
        if ub_seen[b] == 0:
            ub_seen[b] = 1
            cand[n_cand] = b
            n_cand += 1
        if acc[d] > ub[b]:
            ub[b] = acc[d]
        acc[d] = 0.0
        seen[d] = 0
    ub_bits = ub.view(np.uint32)
    keys = np.empty(n_cand, dtype=np.uint64)
    for i in range(n_cand):
        b = cand[i]
        keys[i] = (np.uint64(ub_bits[b]) << np.uint64(32)) | np.uint64(b)
        ub[b] = 0.0
        ub_seen[b] = 0
    return np.sort(keys)


@njit(nogil=True, cache=False)
def heads_search(buf, term_ptr, table, float_bits, norms, norm_table, shift, q_terms, q_weights, tie_rank, k,
                 depth, n_blocks, head_ptr, head_docs, head_vals, acc, seen, touched, ub, ub_seen, ub_mask, cand,
                 heap, loc_acc, loc_seen, loc_list, qstate, cache_docs, cache_vals, arena_docs, arena_vals,
                 arena_blocks, whole):
    """The candidate blocks scored through the postings (``kernels._score_block_packed``)."""
    num_docs = tie_rank.shape[0]
    for j in range(q_terms.shape[0]):
        if K._open_term(buf, term_ptr, q_terms[j], num_docs, table.shape[0], norms.shape[0], norm_table.shape[0],
                        qstate[j]) < 0:
            return -1, 0
    keys = candidate_blocks(q_terms, q_weights, depth, shift, head_ptr, head_docs, head_vals, acc, seen, touched,
                            ub, ub_seen, cand)
    size = 0
    used = np.zeros(2, dtype=np.int64)
    scored = 0
    for i in range(keys.shape[0] - 1, max(keys.shape[0] - 1 - n_blocks, -1), -1):
        b = np.int64(keys[i] & np.uint64(0xFFFFFFFF))
        ub_mask[b] = np.uint64(0xFFFFFFFFFFFFFFFF)
        size = K._score_block_packed(b, buf, table, float_bits, norms, norm_table, shift, q_weights, tie_rank, k,
                                     heap, size, ub_mask, loc_acc, loc_seen, loc_list, qstate, cache_docs, cache_vals,
                                     arena_docs, arena_vals, arena_blocks, used, whole)
        ub_mask[b] = 0
        scored += 1
        if size < 0:
            break
    return size, scored


@njit(nogil=True, cache=False)
def build_forward(buf, term_ptr, num_docs, table, float_bits, norms, norm_table, shift, st, arena_docs, arena_vals,
                  arena_blocks, fptr, fterm, foff, fval, fill):
    """A forward index per block: for each block its (term, document offset, impact) entries,
    by term (terms are visited in order). Count pass (``fill`` False) into ``fptr[b + 1]``."""
    used = np.zeros(2, dtype=np.int64)
    cursor = fptr[:-1].copy()
    for t in range(term_ptr.shape[0] - 1):
        if K._open_term(buf, term_ptr, t, num_docs, table.shape[0], norms.shape[0], norm_table.shape[0], st) < 0:
            continue
        df = st[K.ST_DF]
        if df == 0:
            continue
        used[0] = 0
        used[1] = 0
        if K._decode_whole(buf, st, num_docs, shift, table, float_bits, norms, norm_table, arena_docs, arena_vals,
                           arena_blocks, used) < 0:
            continue
        mode = st[K.ST_MODE]
        idf = np.float32(table[st[K.ST_BASE]]) if mode == K.MODE_BM25 else np.float32(0.0)
        for i in range(df):
            d = arena_docs[i]
            b = d >> shift
            if fill:
                e = cursor[b]
                fterm[e] = t
                foff[e] = d - (b << shift)
                fval[e] = K._impact(mode, idf, arena_vals[i])
                cursor[b] = e + 1
            else:
                fptr[b + 1] += 1


@njit(nogil=True, cache=False)
def heads_search_forward(shift, q_terms, q_weights, tie_rank, k, depth, n_blocks, head_ptr, head_docs, head_vals,
                         fptr, fterm, foff, fval, acc, seen, touched, ub, ub_seen, cand, heap, loc_acc, loc_seen,
                         loc_list):
    """The candidate blocks scored from the forward index: per block, each query term (ascending)
    found by binary search in the block's term column."""
    order = np.argsort(q_terms)
    qt = q_terms[order]
    qw = q_weights[order]
    keys = candidate_blocks(q_terms, q_weights, depth, shift, head_ptr, head_docs, head_vals, acc, seen, touched,
                            ub, ub_seen, cand)
    size = 0
    scored = 0
    for i in range(keys.shape[0] - 1, max(keys.shape[0] - 1 - n_blocks, -1), -1):
        b = np.int64(keys[i] & np.uint64(0xFFFFFFFF))
        base = b << shift
        lo = fptr[b]
        end = fptr[b + 1]
        n_loc = 0
        for j in range(qt.shape[0]):
            t = qt[j]
            hi = end
            while lo < hi:
                mid = (lo + hi) >> 1
                if fterm[mid] < t:
                    lo = mid + 1
                else:
                    hi = mid
            while lo < end and fterm[lo] == t:
                off = foff[lo]
                if loc_seen[off] == 0:
                    loc_seen[off] = 1
                    loc_list[n_loc] = off
                    n_loc += 1
                loc_acc[off] += qw[j] * fval[lo]
                lo += 1
        size = push_block(base, n_loc, loc_acc, loc_seen, loc_list, tie_rank, k, heap, size)
        scored += 1
    return size, scored


@njit(nogil=True, cache=False)
def build_directory(fptr, fterm, dptr, dterm, dstart, fill):
    """Per block, its distinct terms (uint16, ascending) and where each one's entries start in the
    block (``dstart``, relative): the part of a block a query's binary searches touch, ~1/3 of its
    entries in 2 bytes each. Count pass (``fill`` False) into ``dptr[b + 1]``."""
    for b in range(fptr.shape[0] - 1):
        e = dptr[b] if fill else 0
        prev = -1
        for i in range(fptr[b], fptr[b + 1]):
            t = fterm[i]
            if t != prev:
                if fill:
                    dterm[e] = t
                    dstart[e] = i - fptr[b]
                e += 1
                prev = t
        if not fill:
            dptr[b + 1] = e


@njit(nogil=True, cache=False)
def heads_search_directory(shift, q_terms, q_weights, tie_rank, k, depth, n_blocks, head_ptr, head_docs, head_vals,
                           fptr, foff, fval, dptr, dterm, dstart, acc, seen, touched, ub, ub_seen, cand, heap, loc_acc,
                           loc_seen, loc_list):
    """``heads_search_forward`` with each block's term directory searched instead of its entries."""
    order = np.argsort(q_terms)
    qt = q_terms[order]
    qw = q_weights[order]
    keys = candidate_blocks(q_terms, q_weights, depth, shift, head_ptr, head_docs, head_vals, acc, seen, touched,
                            ub, ub_seen, cand)
    size = 0
    scored = 0
    for i in range(keys.shape[0] - 1, max(keys.shape[0] - 1 - n_blocks, -1), -1):
        b = np.int64(keys[i] & np.uint64(0xFFFFFFFF))
        base = b << shift
        e0 = fptr[b]
        n_e = fptr[b + 1] - e0
        lo = dptr[b]
        end = dptr[b + 1]
        n_loc = 0
        for j in range(qt.shape[0]):
            t = qt[j]
            hi = end
            while lo < hi:
                mid = (lo + hi) >> 1
                if dterm[mid] < t:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == end:
                break
            if dterm[lo] != t:
                continue
            a = e0 + dstart[lo]
            z = e0 + (dstart[lo + 1] if lo + 1 < end else n_e)
            for x in range(a, z):
                off = foff[x]
                if loc_seen[off] == 0:
                    loc_seen[off] = 1
                    loc_list[n_loc] = off
                    n_loc += 1
                loc_acc[off] += qw[j] * fval[x]
        size = push_block(base, n_loc, loc_acc, loc_seen, loc_list, tie_rank, k, heap, size)
        scored += 1
    return size, scored


@njit(nogil=True, cache=False)
def build_doc_forward(fptr, fterm, foff, fval, shift, num_docs, dp, dterm, dval, fill):
    """A forward index per document (its terms ascending, impacts), from the per-block one (whose
    entries are by term within a block). Count pass (``fill`` False) into ``dp[d + 1]``."""
    cursor = dp[:-1].copy()
    for b in range(fptr.shape[0] - 1):
        for i in range(fptr[b], fptr[b + 1]):
            d = (b << shift) + foff[i]
            if fill:
                e = cursor[d]
                dterm[e] = fterm[i]
                dval[e] = fval[i]
                cursor[d] = e + 1
            else:
                dp[d + 1] += 1


@njit(nogil=True, cache=False)
def heads_search_docs(q_terms, q_weights, tie_rank, k, depth, n_docs, head_ptr, head_docs, head_vals, dp, dterm, dval,
                      acc, seen, touched, heap, q_cut):
    """Seismic-like: the ``n_docs`` documents with the best partial scores over the heads of the
    query's ``q_cut`` terms of largest weight x head maximum (all when 0), each scored exactly from
    its own forward list (merged with all the query's terms, ascending)."""
    order = np.argsort(q_terms)
    qt = q_terms[order]
    qw = q_weights[order]
    mass = np.empty(q_terms.shape[0], dtype=np.float32)
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        mass[j] = q_weights[j] * head_vals[head_ptr[t]] if head_ptr[t + 1] > head_ptr[t] else 0.0
    by_mass = np.argsort(-mass)
    n_use = q_terms.shape[0] if q_cut <= 0 else min(q_cut, q_terms.shape[0])
    nt = accumulate_heads(by_mass[:n_use], q_terms, q_weights, depth, head_ptr, head_docs, head_vals, acc, seen,
                          touched)
    vals = np.empty(nt, dtype=np.float32)
    for i in range(nt):
        vals[i] = acc[touched[i]]
    cut = np.float32(-1.0)
    if nt > n_docs:
        cut = np.partition(vals, nt - n_docs)[nt - n_docs]
    size = 0
    scored = 0
    for i in range(nt):
        d = touched[i]
        partial = acc[d]
        acc[d] = 0.0
        seen[d] = 0
        if partial < cut:
            continue
        score = np.float32(0.0)
        a = dp[d]
        z = dp[d + 1]
        j = 0
        while a < z and j < qt.shape[0]:
            if dterm[a] < qt[j]:
                a += 1
            elif dterm[a] > qt[j]:
                j += 1
            else:
                score += qw[j] * dval[a]
                a += 1
                j += 1
        scored += 1
        size = push_doc(d, score, tie_rank, k, heap, size)
    return size, scored


def main():
    path = Path(sys.argv[1])
    nq = int(sys.argv[2])
    n = json.loads((path / "manifest.json").read_text())["doc_count"]
    index = InvertedIndex.load(path, num_docs=n, scale=100.0)
    p = index.packed
    queries = [index._checked(t, w) for t, w in SpladeLike(0).queries(nq)]
    t0 = time.perf_counter()
    st = np.zeros(K.NST, dtype=np.int64)
    maxdf = int(index.doc_freqs().max())
    ad, av, ab = np.zeros(maxdf + 1, np.int32), np.zeros(maxdf + 1, np.float32), np.zeros(maxdf + 1, np.int64)
    cap = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    ptr = np.zeros(len(p.term_ptr), dtype=np.int64)
    args = (p.stream, p.term_ptr, n, p.table, p.float_bits, p.norms, p.norm_table, index.shift, cap, st, ad, av, ab,
            ptr)
    total = derive_heads(*args, np.zeros(0, np.int32), np.zeros(0, np.float32), False)
    np.cumsum(ptr, out=ptr)
    hd, hv = np.empty(total, np.int32), np.empty(total, np.float32)
    derive_heads(*args, hd, hv, True)
    print(f"heads: {total:,} entries ({total / n:.1f}/doc), {time.perf_counter() - t0:.1f} s", flush=True)
    k = 10
    exact, ex_secs = [], []
    index.search_many(queries[:3], k, "exhaustive", checked=True)
    for q in queries:
        t = time.perf_counter()
        exact.append(index.search_many([q], k, "exhaustive", checked=True)[0])
        ex_secs.append(time.perf_counter() - t)
    ex = np.mean(ex_secs)
    pr_secs = []
    index.search_many(queries[:3], k, "pruned", checked=True)
    for q in queries:
        t = time.perf_counter()
        index.search_many([q], k, "pruned", checked=True)
        pr_secs.append(time.perf_counter() - t)
    print(f"exhaustive {1000 * ex:.2f} ms, pruned {1000 * np.mean(pr_secs):.2f} ms ({ex / np.mean(pr_secs):.1f}x)")
    s = index._scratch(k, 64)
    t0 = time.perf_counter()
    n_blocks_all = (n >> index.shift) + 1
    fptr = np.zeros(n_blocks_all + 1, dtype=np.int64)
    fargs = (p.stream, p.term_ptr, n, p.table, p.float_bits, p.norms, p.norm_table, index.shift, st, ad, av, ab, fptr)
    build_forward(*fargs, np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.float32), False)
    np.cumsum(fptr, out=fptr)
    fterm, foff, fval = np.empty(fptr[-1], np.int32), np.empty(fptr[-1], np.uint8), np.empty(fptr[-1], np.float32)
    build_forward(*fargs, fterm, foff, fval, True)
    print(f"forward index: {fptr[-1]:,} entries, {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    dptr = np.zeros(len(fptr), dtype=np.int64)
    build_directory(fptr, fterm, dptr, np.zeros(0, np.uint16), np.zeros(0, np.int32), False)
    np.cumsum(dptr, out=dptr)
    dterm, dstart = np.empty(dptr[-1], np.uint16), np.empty(dptr[-1], np.int32)
    build_directory(fptr, fterm, dptr, dterm, dstart, True)
    print(f"block term directories: {dptr[-1]:,} entries ({dptr[-1] / (len(dptr) - 1):.0f} terms a block), "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    def packed(terms, weights, depth, nb):
        return heads_search(p.stream, p.term_ptr, p.table, p.float_bits, p.norms, p.norm_table, index.shift, terms,
                            weights, index.tie_rank, k, depth, nb, ptr, hd, hv, s.acc, s.seen, s.touched, s.ub,
                            s.ub_seen, s.ub_mask, s.cand, s.heap, s.loc_acc, s.loc_seen, s.loc_list, s.qstate,
                            s.cache_docs, s.cache_vals, s.arena_docs, s.arena_vals, s.arena_blocks, index.whole)

    def forward(terms, weights, depth, nb):
        return heads_search_forward(index.shift, terms, weights, index.tie_rank, k, depth, nb, ptr, hd, hv, fptr,
                                    fterm, foff, fval, s.acc, s.seen, s.touched, s.ub, s.ub_seen, s.cand, s.heap,
                                    s.loc_acc, s.loc_seen, s.loc_list)

    def directory(terms, weights, depth, nb):
        return heads_search_directory(index.shift, terms, weights, index.tie_rank, k, depth, nb, ptr, hd, hv, fptr,
                                      foff, fval, dptr, dterm, dstart, s.acc, s.seen, s.touched, s.ub, s.ub_seen,
                                      s.cand, s.heap, s.loc_acc, s.loc_seen, s.loc_list)

    t0 = time.perf_counter()
    dp = np.zeros(n + 1, dtype=np.int64)
    build_doc_forward(fptr, fterm, foff, fval, index.shift, n, dp, np.zeros(0, np.int32), np.zeros(0, np.float32),
                      False)
    np.cumsum(dp, out=dp)
    doc_terms, doc_vals = np.empty(dp[-1], np.int32), np.empty(dp[-1], np.float32)
    build_doc_forward(fptr, fterm, foff, fval, index.shift, n, dp, doc_terms, doc_vals, True)
    print(f"document forward lists: {time.perf_counter() - t0:.1f} s", flush=True)

    def docs_cut(q_cut):
        def docs(terms, weights, depth, nb):  # nb x 64 documents: as many as nb blocks hold
            return heads_search_docs(terms, weights, index.tie_rank, k, depth, nb << index.shift, ptr, hd, hv, dp,
                                     doc_terms, doc_vals, s.acc, s.seen, s.touched, s.heap, q_cut)
        return docs

    scorers = {"postings": packed, "forward": forward, "fwd+dir": directory, "docs": docs_cut(0),
               **{f"docs-q{c}": docs_cut(c) for c in (6, 10, 16)}}
    chosen = sys.argv[6].split(",") if len(sys.argv) > 6 else list(scorers)
    for depth in [int(x) for x in sys.argv[4].split(",")]:
        for nb in [int(x) for x in sys.argv[5].split(",")]:
            for name, scorer in ((c, scorers[c]) for c in chosen):
                agree, secs, sc = [], [], []
                for qi, (terms, weights) in enumerate(queries):
                    t = time.perf_counter()
                    size, scored = scorer(terms, weights, depth, nb)
                    ranks, _ = K.decode_keys(np.sort(s.heap[:size])[::-1])
                    ids = index.tie_order[ranks]
                    secs.append(time.perf_counter() - t)
                    sc.append(scored)
                    agree.append(len(set(ids.tolist()) & set(exact[qi][0].tolist())) / max(1, len(exact[qi][0])))
                m = np.mean(secs[2:])
                print(f"depth {depth:5d} blocks {nb:4d} {name:8s}: agreement {np.mean(agree):.3f}, "
                      f"{1000 * m:.3f} ms, {ex / m:.1f}x, scored {np.mean(sc):.0f}", flush=True)

if __name__ == "__main__":
    main()
