"""The default training recipes on two datasets, as a user runs them (issue 17).

    python scripts/bench_recipe.py [--kinds dense,splade] [--datasets scifact:test,nfcorpus:dev]
                                   [--minutes 30] [--work /tmp/bench-recipe]

For each dataset: a BM25 index, negatives mined from it for the train split as the README says
(`retriever mine BM25 --depth 100 --skip-top 3`, other flags default); for each kind, the starting
model indexed and evaluated on the reported split, then `retriever train KIND --model M --max-minutes
N` with every other flag at its default (the same command on every dataset: no per-dataset
tuning; the trainer carves its dev set out of train and keeps the best dev step), the trained model
indexed and evaluated on the same split. SciFact reports test; NFCorpus its dev split (its test is
withheld here), which training never sees (dev is carved from train). Writes
docs/bench_recipe.json and prints the table docs/BENCHMARKS.md holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_train import sh  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "beir"
MODELS = {"dense": "minilm", "splade": "splade-tiny"}
INDEX_KIND = {"dense": "dense", "splade": "sparse"}


def evaluate(ds: Path, index_dir: Path, split: str, index_args: list[str]) -> dict:
    """Index (reused if there) and evaluate ``split``: metrics, ms/query, document non-zeros."""
    from eval.beir import BeirDataset
    from eval.metrics import evaluate as score
    from retriever.api import Retriever

    if not (index_dir / "manifest.json").is_file():
        sh(["index", str(ds), str(index_dir), "--quiet", "--overwrite", *index_args])
    data = BeirDataset(ds)
    queries = data.split_queries(split)
    r = Retriever.load(index_dir)
    start = time.perf_counter()
    run = r.search_batch(queries, k=1000)
    ms = 1000 * (time.perf_counter() - start) / len(queries)
    out = {**score(data.qrels(split), run, ["ndcg@10", "recall@100", "mrr@10"]).metrics, "ms_per_query": ms}
    impacts = json.loads((index_dir / "manifest.json").read_text()).get("impacts")
    if impacts:
        out["doc_nnz"] = impacts["mean_doc_terms"]
    return out


def negatives(ds: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "bm25" / "manifest.json").is_file():
        sh(["index", str(ds), str(work / "bm25"), "--quiet", "--overwrite"])
    out = work / "negatives.jsonl"
    if not out.is_file():
        sh(["mine", str(work / "bm25"), "--dataset", str(ds), "--out", str(out), "--depth", "100", "--skip-top", "3"])
    return out


def run(ds: Path, split: str, kind: str, minutes: float, work: Path) -> dict:
    neg = negatives(ds, work)
    model = MODELS[kind]
    start = evaluate(ds, work / f"{kind}-start", split, ["--kind", INDEX_KIND[kind], "--model", model])
    out = work / f"{kind}-model"
    flags = ["--model", model, "--max-minutes", f"{minutes:g}"]
    if not (out / "training_summary.json").is_file():
        wall = sh(["train", kind, "--dataset", str(ds), "--negatives", str(neg), "--out", str(out), *flags])
        (out / "bench_wall_seconds.txt").write_text(f"{wall:.1f}\n")
    summary = json.loads((out / "training_summary.json").read_text())
    trained = evaluate(ds, work / f"{kind}-trained", split, ["--kind", INDEX_KIND[kind], "--model", str(out)])
    return {"dataset": ds.name, "split": split, "kind": kind, "model": model,
            "command": f"retriever train {kind} --dataset D --negatives N --out O " + " ".join(flags),
            "start": start, "trained": trained, "gain_ndcg@10": trained["ndcg@10"] - start["ndcg@10"],
            "wall_minutes": float((out / "bench_wall_seconds.txt").read_text()) / 60,
            "steps": summary["steps"], "planned_steps": summary.get("planned_steps"), "best": summary["best"],
            "history": summary["history"]}


def table(rows: list[dict]) -> str:
    lines = ["| dataset (split) | model | start nDCG@10 | trained | gain | steps (best) | train min | doc terms |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        nnz = (f"{r['start']['doc_nnz']:.0f} -> {r['trained']['doc_nnz']:.0f}" if "doc_nnz" in r["start"] else "")
        lines.append(f"| {r['dataset']} ({r['split']}) | {r['model']} | {r['start']['ndcg@10']:.4f} | "
                     f"{r['trained']['ndcg@10']:.4f} | {r['gain_ndcg@10']:+.4f} | {r['steps']} ({r['best'][1]}) | "
                     f"{r['wall_minutes']:.1f} | {nnz} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", default="dense,splade")
    p.add_argument("--datasets", default="scifact:test,nfcorpus:dev", help="NAME:SPLIT under ../shared/data/beir")
    p.add_argument("--minutes", type=float, default=30.0, help="--max-minutes of every training run.")
    p.add_argument("--work", default="/tmp/bench-recipe")
    p.add_argument("--out", default=str(ROOT / "docs" / "bench_recipe.json"))
    args = p.parse_args()
    out = Path(args.out)
    rows = json.loads(out.read_text())["runs"] if out.is_file() else []
    for spec in args.datasets.split(","):
        name, split = spec.split(":")
        for kind in args.kinds.split(","):
            row = run(DATA / name, split, kind, args.minutes, Path(args.work) / name)
            rows = [r for r in rows if (r["dataset"], r["kind"]) != (name, kind)] + [row]
            out.write_text(json.dumps({"command": "python scripts/bench_recipe.py", "minutes": args.minutes,
                                       "runs": rows}, indent=1) + "\n")
            print(table([row]), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
