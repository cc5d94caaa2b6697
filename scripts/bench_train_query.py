"""Index-aware query training measured end to end (issue 17: ADORE / JPQ).

    python scripts/bench_train_query.py [--dataset DIR] [--work DIR] [--model minilm] [--steps 200]
                                        [--out docs/bench_train_query.json]

Indexes of the corpus by the model (`retriever index`, reused when there): Flat, and IVF64,PQ48
(48 bytes/vector, no refine); a BM25 index and negatives mined from it for the train split
(depth 200, skip the top 3, 32 per query: the static negatives of scripts/bench_train.py). Then
`retriever train query` as a user runs it, every run with the same steps and flags:

- flat-live:     Flat index, negatives retrieved from it live each step (ADORE);
- flat-static:   Flat index, the static BM25 negatives (same steps): what live negatives must beat;
- flat-refresh:  Flat index, live negatives refreshed for all training queries every 20 steps;
- pq-jpq:        IVF-PQ, query encoder and centroids trained against the fixed codes (JPQ);
- pq-query-only: IVF-PQ, the query encoder alone (centroids frozen).

Model selection uses the dev carve of train (20%, by the trainer); test nDCG@10 / Recall@100 of
every index (the starting ones and the trained ones) is measured once at the end, with wall
time of each training command beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_train import prepare, sh, test_eval  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "beir" / "scifact"
FLAGS = ["--batch-size", "32", "--group-size", "8", "--lr", "2e-5", "--dev-every", "20", "--log-every", "20",
         "--device", "cpu"]
RUNS = {
    "flat-live": ("flat", []),
    "flat-static": ("flat", ["--negatives", "{negatives}"]),
    "flat-refresh": ("flat", ["--refresh", "20"]),
    "pq-jpq": ("pq", []),
    "pq-query-only": ("pq", ["--no-train-centroids"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET))
    ap.add_argument("--work", default="/tmp/retriever-bench/train-query")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of: " + ", ".join(RUNS))
    ap.add_argument("--extra", default="", help="more `train query` flags for every run (space-separated)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench_train_query.json"))
    args = ap.parse_args()
    ds, work = Path(args.dataset), Path(args.work)
    negatives = prepare(ds, work)
    indexes = {"flat": (work / "flat", ["--faiss", "Flat"]), "pq": (work / "pq48", ["--faiss", "IVF64,PQ48"])}
    report = {"command": "python " + " ".join(sys.argv), "dataset": str(ds), "model": args.model,
              "steps": args.steps, "flags": FLAGS + args.extra.split(), "start": {}, "runs": {}}
    for name, (where, spec) in indexes.items():
        report["start"][name] = test_eval(ds, where, ["--kind", "dense", "--model", args.model, *spec])
        report["start"][name]["bytes_per_vector"] = json.loads((where / "manifest.json").read_text())["faiss"]["bytes_per_vector"]
        print(name, "start:", report["start"][name], flush=True)
    for name in args.runs.split(","):
        base, extra = RUNS[name]
        out = work / f"q-{name}"
        flags = [f.format(negatives=negatives) for f in extra]
        start = time.perf_counter()
        sh(["train", "query", "--index", str(indexes[base][0]), "--dataset", str(ds), "--out", str(out),
            "--overwrite", "--max-steps", str(args.steps), *FLAGS, *args.extra.split(), *flags])
        wall = time.perf_counter() - start
        summary = json.loads((out.with_name(out.name + ".train") / "training_summary.json").read_text())
        result = test_eval(ds, out, [])
        row = {"index": base, "flags": flags, "wall_seconds": round(wall, 1),
               "train_seconds": round(summary["train_seconds"], 1), "best_dev": summary["best"],
               "dev_curve": [(h["step"], round(h["dev_ndcg@10"], 4)) for h in summary["history"]],
               "test": result, "gain_vs_start_flat": result["ndcg@10"] - report["start"]["flat"]["ndcg@10"],
               "bytes_per_vector": json.loads((out / "manifest.json").read_text())["faiss"]["bytes_per_vector"]}
        report["runs"][name] = row
        print(name, json.dumps({k: row[k] for k in ("wall_seconds", "best_dev", "test", "gain_vs_start_flat")}),
              flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
