"""Index-aware query training measured end to end (issue 17: ADORE / JPQ).

    python scripts/bench_train_query.py [--dataset DIR] [--work DIR] [--model minilm] [--steps 200]
                                        [--runs R1,R2] [--seeds 42,1,2] [--out docs/bench_train_query.json]
    python scripts/bench_train_query.py --runs recipe-live,recipe-static --seeds 42,1,2 \
                                        --out docs/bench_adore.json

Indexes of the corpus by the model (`retriever index`, reused when there): Flat, and IVF64,PQ48
(48 bytes/vector, no refine); a BM25 index and negatives mined from it for the train split
(depth 200, skip the top 3, 32 per query: the static negatives of scripts/bench_train.py). Then
`retriever train query` as a user runs it, every run with the same steps and flags:

- flat-live:     Flat index, negatives retrieved from it live each step (ADORE);
- flat-static:   Flat index, the static BM25 negatives (same steps): what live negatives must beat;
- flat-refresh:  Flat index, live negatives refreshed for all training queries every 20 steps;
- pq-jpq:        IVF-PQ, query encoder and centroids trained against the fixed codes (JPQ);
- pq-query-only: IVF-PQ, the query encoder alone (centroids frozen);
- recipe-live:   Flat index, `train query` with its defaults (the dense recipe of training.recipes:
                 each query's 31 best-ranked non-positives live, no in-batch negatives, 10 epochs);
- recipe-static: the same flags with the static BM25 negatives (31 of the 32 mined per query);
- recipe-jpq:    IVF-PQ, `train query` with its defaults (JPQ under the dense recipe).

The first five share FLAGS (group 8, in-batch, live depth 100, --max-steps); the recipe runs take
the command's defaults (no --steps). With several --seeds every run repeats at each, and the JSON
gives each run's mean over them.

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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_train import prepare, sh, test_eval  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "beir" / "scifact"
FLAGS = ["--batch-size", "32", "--group-size", "8", "--in-batch", "--depth", "100", "--lr", "2e-5",
         "--dev-every", "20", "--log-every", "20", "--device", "cpu"]
RECIPE_FLAGS = ["--log-every", "20", "--device", "cpu"]
RUNS = {  # name: (index, flags of the run, whether the shared FLAGS and --steps apply)
    "flat-live": ("flat", [], True),
    "flat-static": ("flat", ["--negatives", "{negatives}"], True),
    "flat-refresh": ("flat", ["--refresh", "20"], True),
    "pq-jpq": ("pq", [], True),
    "pq-query-only": ("pq", ["--no-train-centroids"], True),
    "recipe-live": ("flat", [], False),
    "recipe-static": ("flat", ["--negatives", "{negatives}"], False),
    "recipe-jpq": ("pq", [], False),
}
DEFAULT_RUNS = "flat-live,flat-static,flat-refresh,pq-jpq,pq-query-only"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET))
    ap.add_argument("--work", default="/tmp/retriever-bench/train-query")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated subset of: " + ", ".join(RUNS))
    ap.add_argument("--seeds", default="42", help="comma-separated: every run repeats at each seed")
    ap.add_argument("--extra", default="", help="more `train query` flags for every run (space-separated)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench_train_query.json"))
    args = ap.parse_args()
    ds, work = Path(args.dataset), Path(args.work)
    negatives = prepare(ds, work)
    indexes = {"flat": (work / "flat", ["--faiss", "Flat"]), "pq": (work / "pq48", ["--faiss", "IVF64,PQ48"])}
    names = args.runs.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    report = {"command": "python " + " ".join(sys.argv), "dataset": str(ds), "model": args.model,
              "steps": args.steps, "flags": FLAGS + args.extra.split(), "recipe_flags": RECIPE_FLAGS,
              "seeds": seeds, "start": {}, "runs": {}}
    for name in dict.fromkeys(["flat"] + [RUNS[n][0] for n in names]):  # flat: every gain's reference
        where, spec = indexes[name]
        report["start"][name] = test_eval(ds, where, ["--kind", "dense", "--model", args.model, *spec])
        report["start"][name]["bytes_per_vector"] = json.loads((where / "manifest.json").read_text())["faiss"]["bytes_per_vector"]
        print(name, "start:", report["start"][name], flush=True)
    for name in names:
        base, extra, shared = RUNS[name]
        flags = [f.format(negatives=negatives) for f in extra]
        common = ["--max-steps", str(args.steps), *FLAGS] if shared else RECIPE_FLAGS
        for seed in seeds:
            key = name if len(seeds) == 1 else f"{name}@{seed}"
            out = work / f"q-{key.replace('@', '-s')}"
            start = time.perf_counter()
            sh(["train", "query", "--index", str(indexes[base][0]), "--dataset", str(ds), "--out", str(out),
                "--overwrite", *common, *args.extra.split(), *flags, "--seed", str(seed)])
            wall = time.perf_counter() - start
            summary = json.loads((out.with_name(out.name + ".train") / "training_summary.json").read_text())
            result = test_eval(ds, out, [])
            row = {"index": base, "flags": flags, "seed": seed, "steps": summary["steps"],
                   "wall_seconds": round(wall, 1), "train_seconds": round(summary["train_seconds"], 1),
                   "best_dev": summary["best"],
                   "dev_curve": [(h["step"], round(h["dev_ndcg@10"], 4)) for h in summary["history"]],
                   "test": result, "gain_vs_start_flat": result["ndcg@10"] - report["start"]["flat"]["ndcg@10"],
                   "bytes_per_vector": json.loads((out / "manifest.json").read_text())["faiss"]["bytes_per_vector"]}
            report["runs"][key] = row
            print(key, json.dumps({k: row[k] for k in ("wall_seconds", "best_dev", "test", "gain_vs_start_flat")}),
                  flush=True)
        if len(seeds) > 1:
            rows = [report["runs"][f"{name}@{seed}"] for seed in seeds]
            report["runs"][name] = {"mean_over_seeds": {
                "best_dev_ndcg@10": float(np.mean([r["best_dev"][0] for r in rows])),
                "test_ndcg@10": float(np.mean([r["test"]["ndcg@10"] for r in rows])),
                "test_recall@100": float(np.mean([r["test"]["recall@100"] for r in rows]))}}
            print(name, "mean over seeds:", report["runs"][name]["mean_over_seeds"], flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
