"""The default training recipes on two domains: `retriever train KIND` with no flags but the
required ones, as a user runs it, on SciFact (reported on test) and NFCorpus (official dev).

    python scripts/bench_recipe.py [--kinds dense,splade] [--datasets scifact,nfcorpus]
                                   [--work /tmp/retriever-bench/recipe] [--out docs/bench_recipe.json]
                                   [--threads N]

Per dataset: `retriever index` (BM25), `retriever mine BM25 --depth 100 --skip-top 3`; per kind:
`retriever train KIND --model M` (M: minilm / splade-tiny; every other flag its default, the
recipe in training/recipes.py), `retriever index --kind dense|sparse --model OUT`, and
`retriever eval` of the start model's index and the trained one on the reported split. Records
nDCG@10 (start, trained, gain), the training wall minutes, the steps, the dev carve's best step
and, for SPLADE, mean terms per indexed document (start and trained). Results merge into --out by
(kind, dataset). Training reads the train split only (the model is selected on a carve of it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "beir"
SPLITS = {"scifact": "test", "nfcorpus": "dev"}
MODELS = {"dense": "minilm", "splade": "splade-tiny"}
INDEX_KIND = {"dense": "dense", "splade": "sparse"}


def retriever(*args: str) -> str:
    exe = Path(sys.executable).with_name("retriever")
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"retriever {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def ndcg(index: Path, dataset: Path, split: str) -> float:
    out = Path(f"{index}.{split}.json")
    retriever("eval", "--index", str(index), "--dataset", str(dataset), "--split", split, "--json", str(out))
    return float(json.loads(out.read_text())["metrics"]["ndcg@10"])


def terms_per_doc(index: Path) -> float:
    info = retriever("info", str(index))
    docs = int(re.search(r"^documents\s+(\d+)", info, re.M).group(1))
    postings = int(re.search(r"postings=(\d+)", info).group(1))
    return postings / docs


def index(dataset: Path, out: Path, kind: str, model: str) -> Path:
    if not (out / "manifest.json").is_file():
        retriever("index", str(dataset), str(out), "--kind", INDEX_KIND[kind], "--model", model, "--overwrite")
    return out


def run(kind: str, name: str, work: Path) -> dict:
    dataset, split, model = DATA / name, SPLITS[name], MODELS[kind]
    work.mkdir(parents=True, exist_ok=True)
    bm25, negatives = work / f"{name}-bm25", work / f"{name}-negatives.jsonl"
    if not negatives.is_file():
        retriever("index", str(dataset), str(bm25), "--overwrite")
        retriever("mine", str(bm25), "--dataset", str(dataset), "--out", str(negatives),
                  "--depth", "100", "--skip-top", "3")
    start = index(dataset, work / f"{name}-{kind}-start", kind, model)
    out = work / f"{name}-{kind}-trained"
    if not (out / "training_summary.json").is_file():
        t0 = time.perf_counter()
        retriever("train", kind, "--model", model, "--dataset", str(dataset), "--negatives", str(negatives),
                  "--out", str(out))
        minutes = (time.perf_counter() - t0) / 60
    else:
        minutes = json.loads((out / "training_summary.json").read_text())["train_seconds"] / 60
    trained = index(dataset, work / f"{name}-{kind}-trained-idx", kind, str(out))
    summary = json.loads((out / "training_summary.json").read_text())
    row = {"kind": kind, "dataset": name, "split": split, "model": model,
           "flags": f"retriever train {kind} --model {model} --dataset D --negatives N --out O",
           "config": {k: v for k, v in json.loads((out / "training_config.json").read_text()).items()
                      if k in ("batch_size", "group_size", "max_length", "epochs", "lr", "temperature",
                               "learn_temperature", "lambda_d", "lambda_q", "total_steps")},
           "start_ndcg@10": ndcg(start, dataset, split), "trained_ndcg@10": ndcg(trained, dataset, split),
           "train_minutes": round(minutes, 2), "steps": summary["steps"], "best_dev": summary["best"],
           "temperature": summary.get("temperature")}
    row["gain"] = row["trained_ndcg@10"] - row["start_ndcg@10"]
    if kind == "splade":
        row["start_terms_per_doc"], row["trained_terms_per_doc"] = terms_per_doc(start), terms_per_doc(trained)
        row["terms_ratio"] = row["trained_terms_per_doc"] / row["start_terms_per_doc"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="dense,splade")
    ap.add_argument("--datasets", default="scifact,nfcorpus")
    ap.add_argument("--work", type=Path, default=Path("/tmp/retriever-bench/recipe"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_recipe.json")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads of every command (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    for kind in args.kinds.split(","):
        for name in args.datasets.split(","):
            row = run(kind, name, args.work)
            rows = [r for r in rows if (r["kind"], r["dataset"]) != (kind, name)] + [row]
            args.out.write_text(json.dumps(rows, indent=1) + "\n")
            print(f"{kind:7s} {name:9s} {row['split']:5s} {row['start_ndcg@10']:.4f} -> {row['trained_ndcg@10']:.4f} "
                  f"({row['gain']:+.4f}) {row['train_minutes']:.1f} min"
                  + (f", terms/doc {row['start_terms_per_doc']:.0f} -> {row['trained_terms_per_doc']:.0f}"
                     if kind == "splade" else ""), flush=True)


if __name__ == "__main__":
    main()
