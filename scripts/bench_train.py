"""Fine-tuning runs measured end to end (issues 6 and 7).

    python scripts/bench_train.py dense  [--dataset DIR] [--work DIR]
    python scripts/bench_train.py splade [--dataset DIR] [--work DIR] [--lambdas 0,1e-3,1e-2,1e-1]

Both: a BM25 index of the corpus, negatives mined for the train split (depth 200, skip the top 3,
32 per query), `retriever train ...` run as a user runs it (wall time measured around the
command), the dev split carved out of train by the trainer (20%), then SciFact *test* nDCG@10 of
the starting and the trained model through `retriever index` + evaluation. Test queries are
never seen before the final evaluation. Outputs JSON next to a PNG of dev nDCG@10 against steps
(dense) or test nDCG@10 against mean document non-zeros (splade) under docs/.

dense:  all-MiniLM-L6-v2 (`retriever models pull minilm`).
splade: SPLADE-tiny (`retriever models pull splade-tiny`), one run per --lambdas value of
        lambda-d (queries: lambda-q = lambda-d), then the inference-free variant (learned query
        weights from IDF, IDF-aware FLOPS) with its query latency beside the full model's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset
from eval.metrics import evaluate

CLI = [sys.executable, "-m", "retriever.cli"]


def sh(args: list[str]) -> float:
    """Run a retriever command; returns its wall time in seconds."""
    print("+ retriever " + " ".join(args), flush=True)
    start = time.perf_counter()
    subprocess.run(CLI + args, check=True, cwd=ROOT)
    return time.perf_counter() - start


def prepare(ds: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "bm25" / "manifest.json").is_file():
        sh(["index", str(ds), str(work / "bm25"), "--quiet", "--overwrite"])
    negatives = work / "negatives.jsonl"
    if not negatives.is_file():
        sh(["mine", str(work / "bm25"), "--dataset", str(ds), "--split", "train", "--out", str(negatives),
            "--depth", "200", "--skip-top", "3", "--max-negatives", "32"])
    return negatives


def test_eval(ds: Path, index_dir: Path, index_args: list[str]) -> dict:
    """Build the index (reused if there) and evaluate the test split: metrics, ms/query, doc nnz."""
    from retriever.api import Retriever

    if not (index_dir / "manifest.json").is_file():
        sh(["index", str(ds), str(index_dir), "--quiet", "--overwrite", *index_args])
    data = BeirDataset(ds)
    queries = data.split_queries("test")
    r = Retriever.load(index_dir)
    r.search_batch(dict(list(queries.items())[:10]), k=100)  # warm-up
    start = time.perf_counter()
    run = r.search_batch(queries, k=1000)
    ms = 1000 * (time.perf_counter() - start) / len(queries)
    result = evaluate(data.qrels("test"), run, ["ndcg@10", "recall@100", "mrr@10"])
    out = {**result.metrics, "ms_per_query": ms}
    manifest = json.loads((index_dir / "manifest.json").read_text())
    impacts = manifest.get("impacts")
    if impacts:
        out["doc_nnz"] = impacts["mean_doc_terms"]  # non-zero (quantised > 0) terms per document
    return out


def train(ds: Path, negatives: Path, out: Path, kind: str, flags: list[str]) -> dict:
    if not (out / "training_summary.json").is_file():
        wall = sh(["train", kind, "--dataset", str(ds), "--negatives", str(negatives), "--out", str(out), *flags])
        (out / "bench_wall_seconds.txt").write_text(f"{wall:.1f}\n")
    summary = json.loads((out / "training_summary.json").read_text())
    config = json.loads((out / "training_config.json").read_text())
    wall = float((out / "bench_wall_seconds.txt").read_text()) if (out / "bench_wall_seconds.txt").is_file() else None
    return {"wall_seconds": wall, "train_seconds": summary["train_seconds"], "steps": summary["steps"],
            "best": summary["best"], "history": summary["history"], "config": config}


DENSE_FLAGS = ["--model", "minilm", "--batch-size", "16", "--group-size", "4", "--max-length", "128",
               "--epochs", "5", "--lr", "3e-5", "--dev-every", "41", "--dev-docs", "1500", "--log-every", "5"]


def dense(args) -> dict:
    ds, work = Path(args.dataset), Path(args.work)
    negatives = prepare(ds, work)
    report: dict = {"command": "python scripts/bench_train.py dense", "flags": DENSE_FLAGS}
    report["start"] = test_eval(ds, work / "idx-start", ["--kind", "dense", "--model", "minilm"])
    print("start model test:", report["start"], flush=True)
    run = train(ds, negatives, work / "model", "dense", DENSE_FLAGS)
    report["train"] = {k: v for k, v in run.items() if k != "config"}
    report["trained"] = test_eval(ds, work / "idx-trained", ["--kind", "dense", "--model", str(work / "model")])
    report["gain_ndcg@10"] = report["trained"]["ndcg@10"] - report["start"]["ndcg@10"]
    cfg = run["config"]
    if not any(h["step"] == 0 for h in run["history"]):  # a run from before the trainer scored step 0
        run["history"].insert(0, {"step": 0, **{f"dev_{k}": v for k, v in start_dev(cfg).items()}})
    report["train"]["history"] = run["history"]
    examples = cfg["total_steps"] * cfg["global_batch"] * cfg["accumulation"]
    report["examples_per_s"] = examples / run["train_seconds"]
    print(json.dumps({k: report[k] for k in ("start", "trained", "gain_ndcg@10", "examples_per_s")}, indent=1))
    plot_curve(run["history"], ROOT / "docs" / "train_dense_curve.png",
               f"all-MiniLM-L6-v2 on SciFact train: test nDCG@10 {report['start']['ndcg@10']:.4f} -> "
               f"{report['trained']['ndcg@10']:.4f}")
    return report


def start_dev(cfg: dict) -> dict:
    """Dev metrics of the starting model on the pool the run used (same carve, same seed)."""
    from training.data import TrainingData
    from training.dev_eval import dev_metrics
    from training.encoders import DenseTrainEncoder

    data = TrainingData.load(cfg["dataset"], cfg["negatives"], dev_fraction=cfg["dev_fraction"],
                             dev_split=cfg["dev_split"], dev_docs=cfg["dev_docs"], seed=cfg["seed"])
    model = DenseTrainEncoder(cfg["model"], max_length=cfg["max_length"], query_max_length=cfg["query_max_length"])
    return dev_metrics(model, data, batch_size=cfg["eval_batch_size"], device="cpu")


def plot_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["dev_ndcg@10"] for h in history], marker="o", label="dev nDCG@10 (dev pool)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("nDCG@10")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SPLADE_FLAGS = ["--model", "splade-tiny", "--batch-size", "16", "--group-size", "4", "--max-length", "128",
                "--epochs", "4", "--lr", "1e-4", "--dev-docs", "1500", "--log-every", "10", "--flops-warmup", "40"]


def splade(args) -> dict:
    ds, work = Path(args.dataset), Path(args.work)
    negatives = prepare(ds, work)
    report: dict = {"command": "python scripts/bench_train.py splade", "flags": SPLADE_FLAGS, "runs": {}}
    report["start"] = test_eval(ds, work / "idx-start", ["--kind", "sparse", "--model", "splade-tiny"])
    print("start model test:", report["start"], flush=True)
    lambdas = [float(x) for x in args.lambdas.split(",")]
    for lam in lambdas:
        name = f"lambda-{lam:g}"
        run = train(ds, negatives, work / name, "splade",
                    SPLADE_FLAGS + ["--lambda-d", str(lam), "--lambda-q", str(lam)])
        test = test_eval(ds, work / f"idx-{name}", ["--kind", "sparse", "--model", str(work / name)])
        report["runs"][name] = {"lambda": lam, "train": {k: v for k, v in run.items() if k != "config"}, "test": test}
        print(name, test, flush=True)
    for lam in [float(x) for x in args.inference_free_lambdas.split(",") if x]:
        name = f"inference-free-{lam:g}"
        run = train(ds, negatives, work / name, "splade",
                    SPLADE_FLAGS + ["--lambda-d", str(lam), "--inference-free", "--idf-flops"])
        test = test_eval(ds, work / f"idx-{name}", ["--kind", "sparse", "--model", str(work / name)])
        report["runs"][name] = {"lambda": lam, "inference_free": True,
                                "train": {k: v for k, v in run.items() if k != "config"}, "test": test}
        print(name, test, flush=True)
    plot_tradeoff(report, ROOT / "docs" / "train_splade_tradeoff.png")
    return report


def plot_tradeoff(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    start = report["start"]
    ax.scatter([start["doc_nnz"]], [start["ndcg@10"]], marker="s", color="black", label="SPLADE-tiny (start)")
    full = [(r["test"]["doc_nnz"], r["test"]["ndcg@10"], r["lambda"]) for r in report["runs"].values()
            if not r.get("inference_free")]
    free = [(r["test"]["doc_nnz"], r["test"]["ndcg@10"], r["lambda"]) for r in report["runs"].values()
            if r.get("inference_free")]
    if full:
        full.sort()
        ax.plot([f[0] for f in full], [f[1] for f in full], marker="o", label="fine-tuned (lambda_q = lambda_d)")
        for x, y, lam in full:
            ax.annotate(f"{lam:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if free:
        ax.scatter([f[0] for f in free], [f[1] for f in free], marker="^", color="tab:red",
                   label="inference-free, IDF-aware FLOPS (lambda_d)")
        for x, y, lam in free:
            ax.annotate(f"{lam:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8, color="tab:red")
    ax.axvline(1.2 * start["doc_nnz"], color="grey", ls=":", label="1.2x start non-zeros")
    ax.set_xlabel("mean non-zero terms per document")
    ax.set_ylabel("SciFact test nDCG@10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["dense", "splade"])
    p.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    p.add_argument("--work", default=None, help="Working directory (indexes, negatives, models; reused).")
    p.add_argument("--lambdas", default="0,1e-3,1e-2,1e-1", help="splade: lambda-d values, one run each.")
    p.add_argument("--inference-free-lambdas", default="1e-3,1e-2",
                   help="splade: lambda-d values of inference-free runs (IDF-aware FLOPS).")
    args = p.parse_args()
    args.work = args.work or f"/tmp/bench-train-{args.kind}"
    report = dense(args) if args.kind == "dense" else splade(args)
    out = ROOT / "docs" / f"bench_train_{args.kind}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
