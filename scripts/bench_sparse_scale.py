"""Sparse search at scale (issue 14): exact block-max pruning against the exhaustive kernel, the
approximate mode's curve, threads, latency percentiles, size and build cost per million.

    python scripts/bench_sparse_scale.py [--sizes 1000000] [--bm25-docs 1000000]
        [--queries 200] [--check 20] [--reorder bp] [--sections splade,bm25[,bm25-topical]]
        [--out docs/bench_sparse_scale.json] [--plot docs/sparse_approx_curve.png]

Corpora:
  splade  SPLADE-like synthetic vectors (scripts/synthetic_splade.py: topic mixtures, documents
          i.i.d. so corpus order carries no topic, 120-250 terms/doc, 20-40 terms/query,
          log-normal weights), quantised like the sparse kind's default (uint16, x100), built
          from a stream, then (``--reorder bp``) renumbered by recursive graph bisection.
  bm25    BM25 flat on the Zipf pseudo-word corpus of scripts/synthetic.py (~60 tokens/doc),
          built by the bm25 kind (with ``reorder``), queried twice: ``text_queries`` (2-6 words
          uniform over ranks 100-20,000: mostly rare terms, ~4,000 postings a query) and
          ``weighted_text_queries`` (2-6 words drawn with the corpus's own frequencies from rank
          100 on, as query logs follow their collection: most queries hold a long list), and the
          same from rank 1 (``weighted-all``: the top ranks play stop words a query keeps), and
          queries shaped like real ones (``scifact-profile``, ``nfcorpus-profile``: each copies a
          train query of that BEIR collection, its terms' document shares put on the pseudo-words
          of nearest share: scripts/query_profile.py, synthetic.profiled_text_queries; the
          datasets under $RETRIEVER_BEIR, default ../shared/data/beir). Every pruned BM25 query
          goes to MaxScore term at a time (``kernels._maxscore_taat``).
  bm25-topical  the same pseudo-words, documents mixing two of 1,000 topics into the Zipf
          background (``write_text_corpus(topics=...)``), queried with ``topical`` queries
          (2-6 words, 3 in 4 from one topic): words co-occur, as in text.

For each index, in a fresh process (peak memory is that process's VmHWM):
  - per-query latency (mean, p50, p99) and q/s, single thread, at k = 10 and k = 1000, for the
    exhaustive kernel and exact pruning, timed query by query, alternating in blocks of 10; pruned results
    must equal exhaustive ones bit for bit (ids, scores, order) for every query;
  - q/s at k = 10 as streams (``streams``, in a process of its own: each strategy back to back
    over queries never searched before, exhaustive / pruned / pruned / exhaustive);
  - (bm25) the share of postings MaxScore could leave unread knowing the final k-th score
    (``maxscore_cut_limit_k10``, ``bm25_cut``): a limit on what pruning can gain on each set;
  - (splade) the exhaustive top-1000 of ``--check`` queries against a scipy brute force over the
    generator's own vectors (float64 dot products of the same integer impacts);
  - batches with threads = 1 and 2 (pruned, k = 10; exhaustive, k = 1000), alternating over
    rounds (``batch_threads``: the median ratio and its range);
  - the approximate mode at k = 10: speed and agreement with the exact top-10 per factor (curve
    in ``--plot``);
  - (splade) the ``heads`` strategy (derived into INDEX/heads when missing, timed): agreement,
    latency and speed-up over the exhaustive kernel per (depth, candidates), each point on queries
    of its own after a warm-up stream (``heads_report``), returned scores checked exact; nDCG@10 on SciFact for the same factors is in scripts/bench_sparse.py's
    SPLADE-tiny section when run with ``--approx``.
Work files go to $RETRIEVER_BENCH_WORK (default /tmp/retriever-bench); indexes already built
there are reused (their build record is kept next to them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_sparse import load, peak_rss_mb  # noqa: E402

QUANTIZE, SCALE = "uint16", 100.0
TOPICS = 1000  # the topical BM25 corpus (section bm25-topical)
APPROX = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


def in_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def dir_bytes(path: Path, skip: tuple[str, ...] = ("docs.jsonl", "docs_offsets.npy", "bench_order.npy"),
              skip_dirs: tuple[str, ...] = ("heads",)) -> int:
    """Bytes of an index directory's files, without the stored text, the bench's own order and
    (reported apart) the heads of the ``heads`` strategy."""
    root = Path(path)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name not in skip
               and not any(part in skip_dirs for part in p.relative_to(root).parts[:-1]))


# -- building ---------------------------------------------------------------------------------

def build_splade(out: Path, n: int, reorder: str, bp_max_postings: int | None = None) -> dict:
    from indexing.impacts import build_impact_index
    from indexing.inverted import BP_MAX_POSTINGS
    from indexing.manifest import IndexWriter
    from scripts.synthetic_splade import VOCAB, SpladeLike

    row: dict = {}
    t = time.perf_counter()
    with IndexWriter(out, overwrite=True) as w:
        index, stats = build_impact_index(SpladeLike(0).documents(n), w, [f"t{i}" for i in range(VOCAB)],
                                          QUANTIZE, SCALE)
        row["build_s"] = round(time.perf_counter() - t, 1)
        order = np.arange(n, dtype=np.int64)
        if reorder == "bp":
            t = time.perf_counter()
            order = index.bp_order() if bp_max_postings is None else index.bp_order(bp_max_postings)
            row["bp_s"] = round(time.perf_counter() - t, 1)
            row["bp_max_postings"] = bp_max_postings or BP_MAX_POSTINGS
            t = time.perf_counter()
            index = index.renumbered(order, w.tmp)
            row["renumber_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        index.save(w)
        row["save_s"] = round(time.perf_counter() - t, 1)
        w.save_array("bench_order.npy", np.asarray(order, dtype=np.int64))
        w.finish({"kind": "bench-splade", "backend": "native", "doc_count": n, "stats": stats})
    row.update(postings=stats["postings"], peak_rss_mb=round(peak_rss_mb()))
    return row


def build_bm25(out: Path, corpus: Path, reorder: str) -> dict:
    from retriever import Retriever

    t = time.perf_counter()
    Retriever.build(corpus, out, kind="bm25", overwrite=True, store_docs=False, reorder=reorder)
    return {"build_s": round(time.perf_counter() - t, 1), "peak_rss_mb": round(peak_rss_mb())}


def built(out: Path, make) -> dict:
    record = out.with_name(out.name + ".build.json")
    if (out / "manifest.json").is_file() and record.is_file():
        return json.loads(record.read_text())
    row = make()
    row["load"] = load()
    record.write_text(json.dumps(row))
    return row


# -- searching ----------------------------------------------------------------------------------

def _same(a, b) -> bool:
    return len(a[0]) == len(b[0]) and bool((a[0] == b[0]).all()) and bool((a[1] == b[1]).all())


def timed_each(index, queries, k, strategy, approx=1.0):
    """Results and per-query seconds, one query per call (single thread)."""
    index.search_many(queries[:3], k, strategy, approx, checked=True)  # compiled, scratch allocated
    out, secs = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(index.search_many([q], k, strategy, approx, checked=True)[0])
        secs.append(time.perf_counter() - t)
    return out, np.array(secs)


PAIR_BLOCK = 10  # queries timed back to back per strategy before switching


def timed_pair(index, queries, k, block: int = PAIR_BLOCK):
    """``timed_each`` of the exhaustive and the pruned strategy, alternating in blocks of
    ``block`` queries (the order of the two alternating too), so that drift in the machine's
    speed falls on both alike. Blocks, not single queries: an exhaustive query sweeps the caches
    (its accumulator alone is 40 MB at 10M documents), and a pruned query timed right after one
    pays for that (10M SPLADE-like: 15.4 ms a query interleaved one by one, 10.8 back to back),
    which a stream of pruned queries does not."""
    for strategy in ("exhaustive", "pruned"):
        index.search_many(queries[:3], k, strategy, checked=True)
    out = {"exhaustive": ([None] * len(queries), [0.0] * len(queries)),
           "pruned": ([None] * len(queries), [0.0] * len(queries))}
    for b, lo in enumerate(range(0, len(queries), block)):
        for strategy in (("exhaustive", "pruned") if b % 2 == 0 else ("pruned", "exhaustive")):
            for i in range(lo, min(lo + block, len(queries))):
                t = time.perf_counter()
                hits = index.search_many([queries[i]], k, strategy, checked=True)[0]
                out[strategy][1][i] = time.perf_counter() - t
                out[strategy][0][i] = hits
    return [(hits, np.array(secs)) for hits, secs in (out["exhaustive"], out["pruned"])]


def streams(index, queries, k: int) -> dict:
    """Queries/s of each strategy as a stream of queries (a server's steady state), on four
    quarters of ``queries`` none of which the process has searched: exhaustive over the first,
    pruned over the second and third, exhaustive over the fourth (ABBA: drift falls on both
    alike). Against ``timed_pair``: no query is timed right after the other kernel swept the
    caches, and none is a repeat (the 480 MB L3 makes a repeated query 2-3x faster)."""
    q = len(queries) // 4
    secs: dict = {"exhaustive": [], "pruned": []}
    for strategy, part in zip(("exhaustive", "pruned", "pruned", "exhaustive"),
                              (queries[i * q:(i + 1) * q] for i in range(4))):
        for query in part:
            t = time.perf_counter()
            index.search_many([query], k, strategy, checked=True)
            secs[strategy].append(time.perf_counter() - t)
    ex, pr = np.array(secs["exhaustive"]), np.array(secs["pruned"])
    return {"k": k, "queries_each": len(ex), "exhaustive": latency(ex), "pruned": latency(pr),
            "speedup_pruned": round(float(ex.mean() / pr.mean()), 2)}


def search_streams(path: Path, n_queries: int, kind: str) -> dict:
    """``streams`` at k = 10 on a built index, in a process of its own (``--child search-streams
    PATH N splade|SET``, SET a set of ``bm25_queries``): SPLADE-like queries from far past those the other
    sections search, BM25 query sets of other seeds."""
    index, queries = index_queries(path, kind, 4 * n_queries + 3, fresh=True)
    page_in(path)
    for strategy in ("exhaustive", "pruned"):  # compiled, scratch allocated (three queries not timed after)
        index.search_many(queries[-3:], 10, strategy, checked=True)
    return {"index": str(path), "queries": kind, **streams(index, queries[:-3], 10)}


def index_queries(path: Path, kind: str, n: int, fresh: bool = False):
    """The index at ``path`` and ``n`` checked queries of ``kind`` (``splade``, or a BM25 set of
    ``bm25_queries``); ``fresh``: none the search section searches (SPLADE-like queries from
    ``STREAM_OFFSET`` on, BM25 sets of other seeds)."""
    if kind != "splade":
        return bm25_queries(path, kind, n, seed=(11 if kind == "mid" else 12) if fresh else None)
    from scripts.synthetic_splade import SpladeLike

    index = load_splade(path)
    start = STREAM_OFFSET if fresh else 0
    return index, [index._checked(t, w) for t, w in SpladeLike(0).queries(start + n)[start:]]


def search_threads(path: Path, n_queries: int, kind: str) -> dict:
    """``batch_threads`` alone on a built index (``--child threads PATH N splade|SET``, SET a set
    of ``bm25_queries``), the queries the search section uses."""
    index, queries = index_queries(path, kind, n_queries)
    page_in(path)
    return {"index": str(path), "queries": kind, "pruned_k10": batch_threads(index, queries, 10, "pruned"),
            "exhaustive_k1000": batch_threads(index, queries, 1000, "exhaustive")}


def page_in(path: Path) -> None:
    """Read the index's files once, so that no timed query waits on the disk: a step before
    (the 10M heads derivation, 14 GB) can push the 5 GB of postings out of the page cache, and
    then the first queries of a stream fault them back in (10M: pruned 15.1 ms, p99 49.8, against
    ~10 ms with the postings cached)."""
    for f in sorted(Path(path).glob("*.npy")):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


STREAM_OFFSET = 20_000  # SPLADE-like queries before this one are searched by the other sections


def latency(secs: np.ndarray) -> dict:
    return {"qps": round(len(secs) / secs.sum(), 1), "mean_ms": round(1000 * secs.mean(), 3),
            "p50_ms": round(1000 * float(np.percentile(secs, 50)), 3),
            "p99_ms": round(1000 * float(np.percentile(secs, 99)), 3)}


def batch_threads(index, queries, k, strategy, rounds: int = 9, min_seconds: float = 0.25) -> dict:
    """Queries/s of one batch searched with threads = 1 and with threads = 2, alternating over
    ``rounds`` rounds (which goes first alternating too), so that drift in the machine's speed
    falls on both alike. The batch is ``queries`` repeated until one thread needs about
    ``min_seconds``: on a shared 2-core machine a 20 ms batch of short BM25 queries read anything
    from 1.08x to 1.90x, and one thread's time on the same work varied 2x from minute to minute.
    ``ratio_2_vs_1``: the median of the rounds' ratios (their range beside it); the q/s are
    medians."""
    for threads in (1, 2):
        index.search_many(queries[:4], k, strategy, threads=threads, checked=True)
    once = _time(lambda: index.search_many(queries, k, strategy, checked=True))
    batch = queries * max(1, round(min_seconds / max(once, 1e-6)))
    secs: dict = {1: [], 2: []}
    for r in range(rounds):
        for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
            secs[threads].append(_time(lambda: index.search_many(batch, k, strategy, threads=threads, checked=True)))
    one, two = np.array(secs[1]), np.array(secs[2])
    ratios = one / two
    return {"batch": len(batch), "rounds": rounds,
            "qps_threads_1": round(len(batch) / float(np.median(one)), 1),
            "qps_threads_2": round(len(batch) / float(np.median(two)), 1),
            "ratio_2_vs_1": round(float(np.median(ratios)), 2),
            "ratio_range": [round(float(ratios.min()), 2), round(float(ratios.max()), 2)]}


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def search_report(index, queries: list) -> dict:
    report: dict = {"docs": index.num_docs, "postings": index.num_postings, "queries": len(queries),
                    "mean_query_terms": round(float(np.mean([len(t) for t, _ in queries])), 1)}
    exact = {}
    for k in (10, 1000):
        (ex, ex_secs), (pr, pr_secs) = timed_pair(index, queries, k)
        blocks, routes = [], []
        for q in queries:  # blocks scored (< 0: not read by blocks) and the route taken
            index.search_many([q], k, "pruned", checked=True)
            blocks.append(int(index.last_blocks_scored[0]))
            routes.append(int(index.last_route[0]))
        blocks = np.array(blocks)
        routes = np.bincount(routes, minlength=3)
        same = sum(_same(a, b) for a, b in zip(ex, pr))
        report[f"k{k}"] = {"exhaustive": latency(ex_secs), "pruned": latency(pr_secs),
                           "speedup_pruned": round(ex_secs.sum() / pr_secs.sum(), 2),
                           "pruned_equals_exhaustive": f"{same}/{len(queries)}",
                           "routes": {"block_max": int(routes[1]), "maxscore": int(routes[2]),
                                      "exhaustive": int(routes[0])},
                           "mean_blocks_scored": round(float(blocks[blocks >= 0].mean()), 1) if (blocks >= 0).any() else None,
                           "blocks": (index.num_docs >> index.shift) + 1}
        exact[k] = ex
        print(f"  k={k}: exhaustive {report[f'k{k}']['exhaustive']}, pruned {report[f'k{k}']['pruned']}, "
              f"same {same}/{len(queries)}", file=sys.stderr, flush=True)
    report["threads"] = {"pruned_k10": batch_threads(index, queries, 10, "pruned"),
                         "exhaustive_k1000": batch_threads(index, queries, 1000, "exhaustive")}
    curve = []
    ex_time = report["k10"]["exhaustive"]["mean_ms"]
    for a in APPROX:
        out, secs = timed_each(index, queries, 10, "approx" if a < 1 else "pruned", a)
        agree = np.mean([len(set(x[0].tolist()) & set(y[0].tolist())) / max(1, len(y[0]))
                         for x, y in zip(out, exact[10])])
        curve.append({"approx": a, "top10_agreement": round(float(agree), 4), "mean_ms": round(1000 * secs.mean(), 3),
                      "speedup_vs_exhaustive": round(ex_time / (1000 * secs.mean()), 1)})
    report["approx_k10"] = curve
    return report, exact


HEADS_GRID = ((256, 64), (512, 128), (1024, 256), (2048, 512), (2048, 768), (2048, 1024), (3072, 1024), (4096, 1024))
# (postings read per query term on average, documents scored)


def heads_report(index, path: Path, n_queries: int) -> dict:
    """The ``heads`` strategy (indexing.heads): derived if the index has none yet (timed), opened
    (copied into memory, timed), then for each (depth, candidates) of ``HEADS_GRID`` at k = 10, on
    queries of its own (``n_queries`` never searched before in this process, after the queries of
    the sections above): the exhaustive kernel over them (timed, back to back: the exact top-10),
    then a stream of as many other new queries through ``heads`` (untimed: the steady state of a
    server, whose caches hold the heads' page tables; right after the exhaustive kernel has swept
    them, a query costs several times more), then the measured queries through ``heads``, each
    seen for the first time. Reported: agreement with the exact top-10, latency, speed-up over the
    exhaustive kernel on the same queries, and that every returned score is the document's exact
    score (checked against the exhaustive top-1000 on the first 20)."""
    from indexing import heads
    from scripts.synthetic_splade import SpladeLike

    row: dict = {}
    if not (path / heads.HEADS_DIR / "manifest.json").is_file():
        row["derive"] = heads.derive(index, path / heads.HEADS_DIR, heads.CAP, heads.parent_checksum(path))
        row["derive"]["peak_rss_mb"] = round(peak_rss_mb())
    row["bytes_per_doc"] = round(dir_bytes(path / heads.HEADS_DIR) / index.num_docs, 1)
    t = time.perf_counter()
    index.verify_heads = False  # (open_s: the copy into memory; the index's files were not hashed either)
    index.ensure_heads()
    row["open_s"] = round(time.perf_counter() - t, 1)
    per = 2 * n_queries
    fresh = [index._checked(t, w) for t, w in SpladeLike(0).queries(per * (len(HEADS_GRID) + 2))][per:]
    curve = []
    for g, (depth, cand) in enumerate(HEADS_GRID):
        kw = {"heads_depth": depth, "candidates": cand}
        measured, stream = fresh[per * g: per * g + n_queries], fresh[per * g + n_queries: per * (g + 1)]
        exact, ex_secs = [], []
        for q in measured:
            t = time.perf_counter()
            exact.append(index.search_many([q], 10, "exhaustive", checked=True)[0])
            ex_secs.append(time.perf_counter() - t)
        index.search_many(stream, 10, "heads", checked=True, **kw)
        out, secs = [], []
        for q in measured:
            t = time.perf_counter()
            out.append(index.search_many([q], 10, "heads", checked=True, **kw)[0])
            secs.append(time.perf_counter() - t)
        secs, ex_secs = np.array(secs), np.array(ex_secs)
        agree = np.mean([len(set(x[0].tolist()) & set(y[0].tolist())) / max(1, len(y[0]))
                         for x, y in zip(out, exact)])
        checked = wrong = 0
        for q, (ids, scores) in zip(measured[:20], out[:20]):
            fid, fsc = index.search_many([q], 1000, "exhaustive", checked=True)[0]
            known = dict(zip(fid.tolist(), fsc.tolist()))
            for i, sc in zip(ids.tolist(), scores.tolist()):
                if i in known:
                    checked += 1
                    wrong += known[i] != sc
        curve.append({"depth": depth, "candidates": cand, "top10_agreement": round(float(agree), 4),
                      **latency(secs), "exhaustive_mean_ms": round(1000 * ex_secs.mean(), 2),
                      "speedup_vs_exhaustive": round(ex_secs.mean() / secs.mean(), 1),
                      "scores_exact": f"{checked - wrong}/{checked}"})
        print(f"  heads {depth}/{cand}: {curve[-1]}", file=sys.stderr, flush=True)
    row["k10"] = curve
    row["threads_default_knobs"] = batch_threads(index, fresh[-per:], 10, "heads")
    row["peak_rss_mb"] = round(peak_rss_mb())
    return row


def brute_force_check(index, queries, exact_1000, order, n_check: int) -> dict:
    """Exhaustive top-1000 against float64 dot products over the generator's vectors."""
    import scipy.sparse as sp

    from indexing.impacts import quantize_weights
    from scripts.synthetic_splade import VOCAB, SpladeLike

    sample = queries[:n_check]
    qmat = np.zeros((VOCAB, len(sample)))
    for j, (t, w) in enumerate(sample):
        qmat[t, j] = w.astype(np.float64)
    scores = np.zeros((index.num_docs, len(sample)))
    for blk in SpladeLike(0).blocks(0, index.num_docs):
        imp = quantize_weights(blk.weights, QUANTIZE, SCALE).astype(np.float64)
        m = sp.csr_matrix((imp, blk.ids, blk.indptr), shape=(len(blk.topic), VOCAB))
        scores[blk.start:blk.start + len(blk.topic)] = m @ qmat
    scores /= SCALE
    rank = np.empty(len(order), dtype=np.int64)
    rank[np.asarray(order)] = np.arange(len(order))  # generator doc -> internal id
    ok, worst = 0, 0.0
    for j in range(len(sample)):
        ids, got = exact_1000[j]
        orig = np.asarray(order)[ids]  # internal -> generator doc
        s = scores[:, j]
        kth = s[orig[-1]]
        must = np.flatnonzero(s > kth * (1 + 1e-6))  # every document clearly above the k-th
        diff = float(np.abs(s[orig] - got.astype(np.float64)).max() / max(s[orig].max(), 1e-12))
        worst = max(worst, diff)
        ok += set(must.tolist()) <= set(orig.tolist()) and diff < 1e-5 and len(ids) == min(1000, int((s > 0).sum()))
    return {"queries": len(sample), "top1000_match_brute_force": f"{ok}/{len(sample)}",
            "max_relative_score_error": worst}


def search_splade(path: Path, n_queries: int, n_check: int, heads: bool = True, heads_queries: int = 500) -> dict:
    from indexing.manifest import load_array
    from scripts.synthetic_splade import SpladeLike

    t = time.perf_counter()
    index = load_splade(path)
    if index.packed is None:  # (packed postings carry their block maxima; asking would decode them all)
        index.ensure_blockmax()
    load_s = time.perf_counter() - t
    queries = [index._checked(t, w) for t, w in SpladeLike(0).queries(n_queries)]
    report, exact = search_report(index, queries)
    report["load_s"] = round(load_s, 2)
    report["bytes_per_doc"] = round(dir_bytes(path) / index.num_docs, 1)
    order = load_array(path, "bench_order.npy")
    if n_check > 0:
        report["brute_force"] = brute_force_check(index, queries, exact[1000], order, n_check)
    report["peak_rss_mb"] = round(peak_rss_mb())
    if heads:
        report["heads"] = heads_report(index, path, max(heads_queries, n_queries))
    return report


def load_splade(path: Path):
    from indexing.inverted import InvertedIndex

    return InvertedIndex.load(path, num_docs=json.loads((path / "manifest.json").read_text())["doc_count"],
                              scale=SCALE)


BM25_SETS = {"mid": "search", "weighted": "search_weighted_queries", "weighted-all": "search_weighted_queries_all_ranks",
             "scifact-profile": "search_scifact_profile", "nfcorpus-profile": "search_nfcorpus_profile"}
# the query sets of the bm25 section and their report keys (``bm25_texts``)


def bm25_queries(path: Path, query_set: str, n: int, seed: int | None = None):
    """The BM25 index at ``path`` and ``n`` queries of ``query_set`` (``mid``, ``weighted``: from
    rank 100, stop words dropped; ``weighted-all``: every rank, stop words kept;
    ``scifact-profile``, ``nfcorpus-profile``: shaped like those collections' train queries;
    ``topical``: about one topic each, for the topical corpus), encoded and
    checked (those without a known term dropped); ``seed``: the generator's (default its own)."""
    from retriever import Retriever

    r = Retriever.load(path, verify=False)
    queries = encoded(r, list(bm25_texts(query_set, n, seed).values()))
    return r.searcher.index, [q for q in queries if len(q[0])]


def bm25_texts(query_set: str, n: int, seed: int | None = None) -> dict[str, str]:
    """``n`` query texts of ``query_set`` (``bm25_queries``); ``seed``: the generator's."""
    from scripts.synthetic import text_queries, topical_text_queries, weighted_text_queries

    kw = {} if seed is None else {"seed": seed}
    if query_set.endswith("-profile"):
        from scripts.query_profile import BEIR, query_profile
        from scripts.synthetic import profiled_text_queries

        return profiled_text_queries(n, query_profile(BEIR / query_set[: -len("-profile")]), **kw)
    if query_set == "mid":
        return text_queries(n, **kw)
    if query_set == "topical":
        return topical_text_queries(n, TOPICS, **kw)
    return weighted_text_queries(n, first_rank=1 if query_set == "weighted-all" else 100, **kw)


def encoded(r, texts: list[str]) -> list:
    """``texts`` as the checked (term ids, weights) its index searches (the searcher's own rule)."""
    return [r.searcher._ids(q) for q in r.searcher.encode_queries(texts)]


def bm25_corpus(work: Path, n: int, topics: int = 0) -> Path:
    """The synthetic BM25 corpus of ``n`` documents in ``work`` (written when missing; ``topics``:
    the topical one)."""
    from scripts.synthetic import write_text_corpus

    corpus = work / (f"synth-topical-{n}.jsonl" if topics else f"synth-{n}.jsonl")
    if not corpus.exists():
        write_text_corpus(corpus, n, topics=topics)
    return corpus


def bm25_cut(path: Path, n_queries: int, query_set: str) -> dict:
    """How much of a query's postings MaxScore could leave unread at k = 10 even if it knew the
    final k-th score from the start (``--child bm25-cut PATH N SET``, a set of ``bm25_queries``): the
    terms sorted by bound (``w x`` largest impact, ``kernels._term_bound``), the longest tail
    whose bounds sum below the exhaustive k-th score. An upper limit on its speed-up over the
    exhaustive kernel: postings / (postings - that tail's), before any seek is paid."""
    from indexing import kernels as K

    index, queries = bm25_queries(path, query_set, n_queries)
    p = index.packed
    st = np.zeros(K.NST, dtype=np.int64)
    nmax = np.float32(p.norm_table.max())
    total = skippable = 0
    for (terms, weights), (_, scores) in zip(queries, index.search_many(queries, 10, "exhaustive", checked=True)):
        bounds, dfs = [], []
        for t, w in zip(terms.tolist(), weights.tolist()):
            if K._open_term(p.stream, p.term_ptr, t, index.num_docs, p.table.shape[0], p.norms.shape[0],
                            p.norm_table.shape[0], st) < 0:
                raise RuntimeError(f"{path}: corrupt term {t}")
            bounds.append(w * float(K._term_bound(p.stream, st, p.table, p.float_bits, nmax)))
            dfs.append(int(st[K.ST_DF]))
        order = np.argsort(bounds)  # smallest bound first: the tail MaxScore leaves unread
        theta = float(scores[-1]) if len(scores) == 10 else 0.0
        rest = tail = 0
        for i in order:
            if rest + bounds[i] >= theta:
                break
            rest += bounds[i]
            tail += dfs[i]
        total += sum(dfs)
        skippable += tail
    return {"queries": query_set, "n": len(queries), "postings_per_query": round(total / len(queries), 1),
            "skippable_share": round(skippable / total, 4),
            "speedup_limit": round(total / max(total - skippable, 1), 2)}


def search_bm25(path: Path, n_queries: int, query_set: str = "mid") -> dict:
    index, queries = bm25_queries(path, query_set, n_queries)
    report, _ = search_report(index, queries)
    report["bytes_per_doc"] = round(dir_bytes(path) / index.num_docs, 1)
    report["peak_rss_mb"] = round(peak_rss_mb())
    return report


# -- driver ---------------------------------------------------------------------------------------

def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    for name, section in report.items():
        search = section.get("search", {})
        for curve, label, style in ((search.get("approx_k10"), lambda c: f"{c['approx']:g}", "o-"),
                                    (search.get("heads", {}).get("k10"),
                                     lambda c: f"{c['depth']}/{c['candidates']}", "s--")):
            if not curve:
                continue
            kind = "block-max approx" if style == "o-" else "heads"
            ax.plot([c["speedup_vs_exhaustive"] for c in curve], [c["top10_agreement"] for c in curve], style,
                    label=f"{name}: {kind}")
            for c in curve:
                ax.annotate(label(c), (c["speedup_vs_exhaustive"], c["top10_agreement"]),
                            fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over the exhaustive kernel (k = 10, 1 thread)")
    ax.set_ylabel("agreement with the exact top-10")
    ax.axhline(0.97, color="grey", lw=0.8, ls="--")
    ax.axvline(50, color="grey", lw=0.8, ls=":")
    ax.set_title("approximate search (labels: approx factor; heads: depth/candidates)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        step, args = sys.argv[2], sys.argv[3:]
        if step == "build-splade":
            row = build_splade(Path(args[0]), int(args[1]), args[2], int(args[3]) or None)
        elif step == "search-streams":
            row = search_streams(Path(args[0]), int(args[1]), args[2])
        elif step == "threads":
            row = search_threads(Path(args[0]), int(args[1]), args[2])
        elif step == "bm25-cut":
            row = bm25_cut(Path(args[0]), int(args[1]), args[2])
        elif step == "build-bm25":
            row = build_bm25(Path(args[0]), Path(args[1]), args[2])
        elif step == "search-splade":
            row = search_splade(Path(args[0]), int(args[1]), int(args[2]), len(args) < 4 or args[3] == "heads",
                                *(int(x) for x in args[4:5]))
        else:
            row = search_bm25(Path(args[0]), int(args[1]), args[2])
        print(json.dumps(row))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000", help="SPLADE-like corpus sizes")
    ap.add_argument("--bp-max-postings", type=int, default=0, help="BP's forward index budget (postings; "
                    "default: indexing.inverted.BP_MAX_POSTINGS, 3.2 GB)")
    ap.add_argument("--bm25-docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--check", type=int, default=20, help="queries checked against the scipy brute force")
    ap.add_argument("--reorder", choices=["none", "bp"], default="bp")
    ap.add_argument("--sections", default="splade,bm25")
    ap.add_argument("--no-heads", dest="heads", action="store_false",
                    help="skip the heads strategy (it derives INDEX/heads when missing: ~4 bytes a posting)")
    ap.add_argument("--heads-queries", type=int, default=500,
                    help="fresh queries per point of the heads curve (agreement over 100 moves by +-0.015)")
    ap.add_argument("--work", default=os.environ.get("RETRIEVER_BENCH_WORK", "/tmp/retriever-bench"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench_sparse_scale.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "sparse_approx_curve.png"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    sections = args.sections.split(",")
    if "splade" in sections:
        for n in (int(x) for x in args.sizes.split(",")):
            tag = args.reorder + (f", bp budget {args.bp_max_postings:,}" if args.bp_max_postings else "")
            name = f"splade-like {n:,} ({tag})"
            path = work / (f"splade-like-{n}-{args.reorder}" + (f"-{args.bp_max_postings}" if args.bp_max_postings else ""))
            print(name, file=sys.stderr, flush=True)
            row = {"build": built(path, lambda: in_child("build-splade", str(path), str(n), args.reorder,
                                                                   str(args.bp_max_postings)))}
            row["build"]["s_per_million"] = round(sum(row["build"].get(k, 0) for k in
                                                      ("build_s", "bp_s", "renumber_s", "save_s")) / (n / 1e6), 1)
            row["load_before"] = load()
            row["search"] = in_child("search-splade", str(path), str(args.queries), str(args.check),
                                     "heads" if args.heads else "no-heads", str(args.heads_queries))
            row["streams_k10"] = in_child("search-streams", str(path), str(args.queries), "splade")
            row["load_after"] = load()
            report[name] = row
            out.write_text(json.dumps(report, indent=1) + "\n")
    if "bm25" in sections:
        n = args.bm25_docs
        corpus = bm25_corpus(work, n)
        name = f"bm25 {n:,} ({args.reorder})"
        path = work / f"synth-{n}-bm25-{args.reorder}"
        print(name, file=sys.stderr, flush=True)
        row = {"build": built(path, lambda: in_child("build-bm25", str(path), str(corpus), args.reorder))}
        row["load_before"] = load()
        for kind, key in BM25_SETS.items():
            row[key] = in_child("search-bm25", str(path), str(args.queries), kind)
        row["streams_k10"] = {kind: in_child("search-streams", str(path), str(args.queries), kind)
                              for kind in BM25_SETS}
        row["maxscore_cut_limit_k10"] = {kind: in_child("bm25-cut", str(path), str(args.queries), kind)
                                         for kind in BM25_SETS}
        row["load_after"] = load()
        report[name] = row
        out.write_text(json.dumps(report, indent=1) + "\n")
    if "bm25-topical" in sections:
        n = args.bm25_docs
        corpus = bm25_corpus(work, n, TOPICS)
        name = f"bm25 topical {n:,} ({args.reorder})"
        path = work / f"synth-topical-{n}-bm25-{args.reorder}"
        print(name, file=sys.stderr, flush=True)
        row = {"build": built(path, lambda: in_child("build-bm25", str(path), str(corpus), args.reorder))}
        row["search"] = in_child("search-bm25", str(path), str(args.queries), "topical")
        row["streams_k10"] = in_child("search-streams", str(path), str(args.queries), "topical")
        row["maxscore_cut_limit_k10"] = in_child("bm25-cut", str(path), str(args.queries), "topical")
        report[name] = row
        out.write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot(report, Path(args.plot))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
