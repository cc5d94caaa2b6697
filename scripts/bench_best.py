"""The best system the engine makes from small models (<= 25M parameters each), with its cost.

    python scripts/bench_best.py [--dataset DIR] [--report-split test] [--work DIR] [--steps N]
                                 [--out docs/bench_best.json]

Components, each built with `retriever` commands as a user runs them (reused when present):

- bm25:   `retriever index DATASET` (no parameters);
- splade: SPLADE-tiny (`retriever models pull splade-tiny`, 4.4M parameters), not fine-tuned here;
- dense:  all-MiniLM-L6-v2 (22.7M) indexed as IVF64,PQ48 (48-byte codes, no refine), then
          `retriever train query` with its defaults (JPQ: query encoder and centroids trained
          against the fixed codes with the dense recipe of training.recipes: live negatives from
          the index, 10 epochs; `--steps N` sets `--max-steps N` instead);
- splade-if: SPLADE-tiny documents with inference-free queries: built with the token IDF the
          inference-free trainer starts from (`--query-mode learned --query-weights`, IDF over the
          corpus tokenised at 128 tokens), then `retriever train query` trains the per-token query
          weights against the fixed impacts (`--lr 0.1 --max-steps 400`).

Every choice is made on a dev carve of the train split (20%, seed 0: the carve the trainer uses
for model selection): the fusion (RRF, min-max or z-score over any subset of the components,
weights on a 0.1 grid) with the best dev nDCG@10. The report split (--report-split: SciFact test;
NFCorpus dev, its test being withheld) is searched once, for every component and the chosen
fusion. Cost beside it: training minutes (the trainer's own clock), index bytes per document
(component indexes without their stored texts and query models), and single-query latency (the sum of the
components' mean `search` times over 100 report queries, one thread).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset, carve_dev  # noqa: E402
from eval.fusion import fuse  # noqa: E402
from eval.metrics import evaluate  # noqa: E402
from scripts.bench_train import sh  # noqa: E402
from scripts.bench_train_query import RECIPE_FLAGS  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "beir" / "scifact"
# Pyserini's BEIR regression table (nDCG@10, test), for scale: models of 110M parameters
REFERENCES = {"scifact": {"BGE-base-en-v1.5 (110M)": 0.7408, "SPLADE++ ED (110M)": 0.7036},
              "nfcorpus": {"BGE-base-en-v1.5 (110M), test split": 0.3735}}
STORED_TEXTS = ("docs.jsonl", "docs_offsets.npy")
DEPTH = 100
NAMES = ["bm25", "splade", "dense", "splade-if"]


def index_bytes(index: Path) -> int:
    """Bytes of what grows with the corpus: the index files without the stored texts and without a
    trained query model (`query_model/`, a fixed 90 MB for MiniLM whatever the corpus size)."""
    files = json.loads((index / "manifest.json").read_text())["files"]
    return sum(f["bytes"] for name, f in files.items()
               if name not in STORED_TEXTS and not name.startswith("query_model/"))


def parameters(model_dir: str) -> int:
    from transformers import AutoModel

    from retriever.encoders.models import resolve_model

    return sum(p.numel() for p in AutoModel.from_pretrained(resolve_model(model_dir)).parameters())


def build(ds: Path, work: Path, steps: int) -> dict:
    """The component indexes (built or reused) and what training cost."""
    work.mkdir(parents=True, exist_ok=True)
    idx = {"bm25": work / "bm25", "splade": work / "splade", "pq48": work / "pq48", "dense": work / "dense-jpq",
           "if-start": work / "splade-if-start", "splade-if": work / "splade-if"}
    idf = work / "token_idf.npy"
    if not idf.is_file():
        import numpy as np

        from training.encoders import corpus_idf

        np.save(idf, corpus_idf("splade-tiny", ds, 128).numpy().astype(np.float32))
    specs = {"bm25": [], "splade": ["--kind", "sparse", "--model", "splade-tiny"],
             "pq48": ["--kind", "dense", "--model", "minilm", "--faiss", "IVF64,PQ48"],
             "if-start": ["--kind", "sparse", "--model", "splade-tiny", "--query-mode", "learned",
                          "--query-weights", str(idf)]}
    for name, spec in specs.items():
        if not (idx[name] / "manifest.json").is_file():
            sh(["index", str(ds), str(idx[name]), "--quiet", "--overwrite", *spec])
    trained = {"dense": ("pq48", [*RECIPE_FLAGS, *(["--max-steps", str(steps)] if steps else [])]),
               "splade-if": ("if-start", ["--max-steps", "400", "--lr", "0.1", "--batch-size", "32", "--group-size", "8",
                                          "--dev-every", "40", "--log-every", "40", "--device", "cpu"])}
    minutes = {}
    for name, (source, flags) in trained.items():
        if not (idx[name] / "manifest.json").is_file():
            sh(["train", "query", "--index", str(idx[source]), "--dataset", str(ds), "--out", str(idx[name]),
                "--overwrite", *flags])
        summary = json.loads((idx[name].with_name(idx[name].name + ".train") / "training_summary.json").read_text())
        minutes[name] = summary["train_seconds"] / 60
    return {"indexes": idx, "train_minutes": minutes}


def runs_of(idx: dict, queries: dict[str, str]) -> dict:
    from retriever.api import Retriever

    return {name: Retriever.load(idx[name]).search_batch(queries, k=DEPTH) for name in NAMES}


def latency_ms(index: Path, texts: list[str]) -> float:
    from retriever.api import Retriever

    r = Retriever.load(index)
    for t in texts[:5]:
        r.search(t, k=10)
    start = time.perf_counter()
    for t in texts:
        r.search(t, k=10)
    return 1000 * (time.perf_counter() - start) / len(texts)


def grid(names: list[str]):
    """(components, method, weights) candidates: RRF (k 60) with equal weights, min-max and z-score
    with weights on a 0.1 grid (each > 0, summing to 1)."""
    for size in range(1, len(names) + 1):
        for combo in itertools.combinations(names, size):
            if size == 1:
                yield combo, "rrf", [1.0]
                continue
            yield combo, "rrf", [1.0] * size
            steps = [w for w in itertools.product(range(1, 10), repeat=size) if sum(w) == 10]
            for method in ("minmax", "zscore"):
                for w in steps:
                    yield combo, method, [x / 10 for x in w]


def fused(runs: dict, combo, method, weights) -> dict:
    if len(combo) == 1:
        return runs[combo[0]]
    return fuse([runs[c] for c in combo], method, weights, DEPTH, 60, k=DEPTH)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET))
    ap.add_argument("--report-split", default="test")
    ap.add_argument("--work", default="/tmp/retriever-bench/best")
    ap.add_argument("--steps", type=int, default=0, help="JPQ steps (default: the recipe's 10 epochs)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench_best.json"))
    args = ap.parse_args()
    ds = Path(args.dataset)
    data = BeirDataset(ds)
    built = build(ds, Path(args.work) / ds.name, args.steps)
    idx = built["indexes"]
    queries = data.queries()
    _, dev_qrels = carve_dev(data.qrels("train"), 0.2, seed=0)
    dev_q = {q: queries[q] for q in dev_qrels if q in queries}
    report_qrels = data.qrels(args.report_split)
    report_q = data.split_queries(args.report_split)
    dev_runs, report_runs = runs_of(idx, dev_q), runs_of(idx, report_q)
    names = NAMES
    scored = []
    for combo, method, weights in grid(names):
        dev = evaluate(dev_qrels, fused(dev_runs, combo, method, weights), ["ndcg@10"]).metrics["ndcg@10"]
        scored.append((dev, -len(combo), combo, method, weights))
    scored.sort(key=lambda x: (-x[0], -x[1]))
    best = scored[0]
    texts = list(report_q.values())[:100]
    lat = {n: latency_ms(idx[n], texts) for n in names}
    size = {n: index_bytes(idx[n]) / len(data_ids(idx[n])) for n in names}
    params = {"bm25": 0, "splade": parameters("splade-tiny"), "dense": parameters(str(idx["dense"] / "query_model")),
              "splade-if": parameters("splade-tiny")}
    rows = []

    def row(label, combo, method, weights, dev):
        run = fused(report_runs, combo, method, weights)
        m = evaluate(report_qrels, run, ["ndcg@10", "recall@100"]).metrics
        rows.append({"system": label, "components": list(combo), "method": method, "weights": weights,
                     "train_carve_ndcg@10": round(dev, 4), f"{args.report_split}_ndcg@10": round(m["ndcg@10"], 4),
                     f"{args.report_split}_recall@100": round(m["recall@100"], 4),
                     "max_parameters": max(params[c] for c in combo),
                     "train_minutes": round(sum(built["train_minutes"].get(c, 0.0) for c in combo), 1),
                     "index_bytes_per_doc": round(sum(size[c] for c in combo), 1),
                     "latency_ms": round(sum(lat[c] for c in combo), 2)})

    for n in names:
        dev = next(s[0] for s in scored if s[2] == (n,))
        row(n, (n,), "rrf", [1.0], dev)
    row("best on dev", best[2], best[3], best[4], best[0])
    from retriever.api import Retriever

    starts = {}
    for name in ("pq48", "if-start"):  # what the trained components started from
        run = Retriever.load(idx[name]).search_batch(report_q, k=DEPTH)
        starts[name] = round(evaluate(report_qrels, run, ["ndcg@10"]).metrics["ndcg@10"], 4)
    report = {"starts": starts, "command": "python " + " ".join(sys.argv), "dataset": ds.name,
              "report_split": args.report_split,
              "dev": f"carve of train (20%, seed 0): {len(dev_q)} queries", "steps": args.steps,
              "train_flags": RECIPE_FLAGS, "rows": rows, "references": REFERENCES.get(ds.name, {}),
              "top_dev_settings": [{"dev": round(s[0], 4), "components": s[2], "method": s[3], "weights": s[4]}
                                   for s in scored[:5]]}
    out = Path(args.out)
    merged = json.loads(out.read_text()) if out.is_file() else {}
    merged[ds.name] = report
    out.write_text(json.dumps(merged, indent=1) + "\n")
    split = args.report_split
    print(f"| system | {split} nDCG@10 | train-carve nDCG@10 | params (max) | train min | bytes/doc | ms/query |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        label = r["system"] + ("" if len(r["components"]) == 1 else
                               f" ({'+'.join(r['components'])}, {r['method']} {r['weights']})")
        print(f"| {label} | {r[f'{split}_ndcg@10']:.4f} | {r['train_carve_ndcg@10']:.4f} | {r['max_parameters'] / 1e6:.1f}M | "
              f"{r['train_minutes']} | {r['index_bytes_per_doc']} | {r['latency_ms']} |")
    for name, value in starts.items():
        print(f"| start of a trained component: {name} | {value:.4f} | | | | | |")
    for name, value in report["references"].items():
        print(f"| {name} | {value:.4f} | | | | | |")
    return 0


def data_ids(index: Path) -> list[str]:
    return (index / "docids.txt").read_text(encoding="utf-8").splitlines()


if __name__ == "__main__":
    raise SystemExit(main())
