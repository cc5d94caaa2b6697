"""What BP reordering (``--reorder bp``) gives and costs, per index, in one run (issue 14: "make
it the default if it pays at scale").

    python scripts/bench_reorder_indexes.py [--dataset ../shared/data/beir/scifact] [--sections
        scifact-bm25,scifact-splade,synth-bm25] [--docs 1000000] [--work DIR] [--rounds 5]
        [--out docs/bench_reorder_indexes.json]

For each section the same corpus is built twice through ``Retriever.build`` (``reorder="none"``
and ``"bp"``; build seconds, peak memory of the build's process, bytes per document of the index
less its stored text), then both are searched with the same encoded queries, one thread, one
query per call: exact pruned and exhaustive at k = 10 and k = 1000, the two indexes alternating
over ``--rounds`` rounds (best round kept); every result (external ids, scores) must be equal
between them, and for the SciFact sections nDCG@10 on the test split is printed for both.
Sections: ``scifact-bm25`` (BM25 flat), ``scifact-splade`` (SPLADE-tiny, ``retriever models
pull splade-tiny``), ``synth-bm25`` (the 1M Zipf pseudo-word corpus of scripts/synthetic.py,
``text_queries``), ``topical-bm25`` (its topical variant, ``topical_text_queries``; not in the
default sections). Each build runs in a child process of its own (its peak RSS is the build's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_sparse import peak_rss_mb  # noqa: E402
from scripts.bench_sparse_scale import TOPICS, bm25_corpus, bm25_texts, dir_bytes, encoded  # noqa: E402

SYNTHETIC = {"synth-bm25": "mid", "topical-bm25": "topical"}  # section -> its query set (bm25_texts)


def build(section: str, corpus: Path, out: Path, reorder: str) -> dict:
    from retriever import Retriever

    options = {"kind": "sparse", "model": "splade-tiny"} if section == "scifact-splade" else {"kind": "bm25"}
    start = time.perf_counter()
    Retriever.build(corpus, out, overwrite=True, reorder=reorder, store_docs=section.startswith("scifact"), **options)
    return {"build_s": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak_rss_mb())}


def queries_of(section: str, dataset: Path, n: int) -> dict[str, str]:
    if section in SYNTHETIC:
        return bm25_texts(SYNTHETIC[section], n)
    from eval.beir import BeirDataset

    return BeirDataset(dataset).split_queries("test")


def search(paths: dict[str, Path], texts: dict[str, str], rounds: int) -> dict:
    """Per-query µs of each index (best of ``rounds`` alternating rounds) and whether their
    results are equal, per (strategy, k)."""
    from retriever import Retriever

    opened = {name: Retriever.load(p) for name, p in paths.items()}
    queries_of_index = {name: encoded(r, list(texts.values())) for name, r in opened.items()}
    out = {}
    for k in (10, 1000):
        for strategy in ("pruned", "exhaustive"):
            best = {name: float("inf") for name in opened}
            hits = {}
            for r_ in range(rounds):
                for name in (list(opened) if r_ % 2 == 0 else list(opened)[::-1]):
                    r, queries = opened[name], queries_of_index[name]
                    index = r.searcher.index
                    index.search_many(queries[:5], k, strategy, checked=True)
                    found, start = [], time.perf_counter()
                    for q in queries:
                        found.append(index.search_many([q], k, strategy, checked=True)[0])
                    best[name] = min(best[name], time.perf_counter() - start)
                    docids = r.searcher._docids
                    hits[name] = [(docids[ids].tolist(), scores.tolist()) for ids, scores in found]
            a, b = (hits[name] for name in opened)
            us = {name: round(best[name] / len(texts) * 1e6, 1) for name in opened}
            out[f"{strategy}@{k}"] = {**{f"{name}_us": v for name, v in us.items()},
                                      "none_over_bp": round(us["none"] / us["bp"], 2), "identical": a == b}
    return out


def ndcg(path: Path, dataset: Path) -> float:
    from eval.beir import BeirDataset
    from eval.metrics import evaluate
    from retriever import Retriever

    data = BeirDataset(dataset)
    run = Retriever.load(path).search_batch(data.split_queries("test"), k=100)
    return round(float(evaluate(data.qrels("test"), run, ["ndcg@10"]).metrics["ndcg@10"]), 4)


def measure(section: str, args) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if section in SYNTHETIC:
        corpus = bm25_corpus(work, args.docs, TOPICS if section == "topical-bm25" else 0)
    else:
        corpus = Path(args.dataset)
    row: dict = {}
    paths = {}
    for reorder in ("none", "bp"):
        out = work / f"reorder-{section}-{reorder}"
        built = json.loads(subprocess.run([sys.executable, __file__, "--child", section, str(corpus), str(out), reorder],
                                          check=True, stdout=subprocess.PIPE, text=True).stdout)
        docs = json.loads((out / "manifest.json").read_text())["doc_count"]
        row[reorder] = {**built, "bytes_per_doc": round(dir_bytes(out) / docs, 1), "docs": docs}
        paths[reorder] = out
        print(f"{section} {reorder}: {row[reorder]}", file=sys.stderr, flush=True)
    texts = queries_of(section, Path(args.dataset), args.queries)
    row["queries"] = len(texts)
    row["search"] = search(paths, texts, args.rounds)
    if section.startswith("scifact"):
        row["ndcg@10"] = {name: ndcg(p, Path(args.dataset)) for name, p in paths.items()}
    return row


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        section, corpus, out, reorder = sys.argv[2:6]
        print(json.dumps(build(section, Path(corpus), Path(out), reorder)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--sections", default="scifact-bm25,scifact-splade,synth-bm25")
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300, help="synth-bm25 queries (SciFact: its test split)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", default="/tmp/retriever-bench")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench_reorder_indexes.json"))
    args = ap.parse_args()
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    for section in args.sections.split(","):
        report[section] = measure(section, args)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps({section: report[section]}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
