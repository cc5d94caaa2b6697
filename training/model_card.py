"""Model cards: the README.md a trained model directory carries, in the layout the Hugging Face
hub and sentence-transformers render (YAML front matter with ``base_model``, ``datasets``, tags
and a ``model-index`` of results, then Markdown).

Everything in it comes from files the directory already holds, so the card can be written again
at any time: ``training_config.json`` (the resolved flags), ``training_summary.json`` (steps,
time, best dev point), ``train_log.jsonl`` (the dev curve), ``card.json`` (the hardware the run
used, recorded when the trainer first writes the card) and ``eval_results.json`` (test metrics
that ``retriever eval --model-card DIR`` appends).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
from pathlib import Path

from indexing.io import atomic_open, atomic_write_json, atomic_write_text
from eval.report import md_cell, md_code
from indexing.records import read_jsonl

CARD = "README.md"
RESULTS = "eval_results.json"
HARDWARE = "card.json"


def hardware(device: str) -> dict:
    """What a run trained on: device, GPU name, CPU count, platform."""
    info = {"device": device, "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return info


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def add_results(model_dir: str | os.PathLike, dataset: str, split: str, metrics: dict, index: str | None = None) -> None:
    """Record test metrics of the model (one entry per dataset and split; a rerun replaces it)
    and write the card again."""
    root = Path(model_dir)
    if not (root / "training_config.json").is_file():
        raise ValueError(f"{root}: not a model directory written by `retriever train` "
                         "(no training_config.json); --model-card needs one")
    from indexing.manifest import WriterLock

    lock = WriterLock(root / RESULTS, what="model card", wait=True)  # two evals at once: each waits, none lost
    try:
        before = (root / RESULTS).read_bytes() if (root / RESULTS).is_file() else None
        results = [r for r in _read_json(root / RESULTS, []) if (r.get("dataset"), r.get("split")) != (dataset, split)]
        results.append({"dataset": dataset, "split": split, "metrics": {k: float(v) for k, v in metrics.items()},
                        "index": index})
        atomic_write_json(root / RESULTS, results)
        try:
            write_model_card(root)
        except BaseException:  # (a full disk) the results go back to what the card shows
            try:
                if before is None:
                    (root / RESULTS).unlink(missing_ok=True)
                else:
                    with atomic_open(root / RESULTS, "wb") as f:
                        f.write(before)
            except OSError:
                pass  # the card's error is the one to report
            raise
    finally:
        lock.release()


def write_model_card(model_dir: str | os.PathLike, device: str | None = None) -> Path:
    """Render README.md from the directory's files; ``device`` (the trainer's) records the hardware."""
    root = Path(model_dir)
    config = _read_json(root / "training_config.json", {})
    summary = _read_json(root / "training_summary.json", {})
    results = _read_json(root / RESULTS, [])
    hw = _read_json(root / HARDWARE, None)
    if hw is None or device is not None:
        hw = hardware(device or config.get("device", "cpu"))
        atomic_write_json(root / HARDWARE, hw)
    curve = []
    log = root / "train_log.jsonl"
    if log.is_file():
        for _, row in read_jsonl(log):
            if "dev_ndcg@10" in row:
                curve.append((row["step"], row["dev_ndcg@10"], row.get("dev_recall@100")))
    atomic_write_text(root / CARD, render(root.name, config, summary, results, hw, curve))
    return root / CARD


def _yaml_str(value) -> str:
    """A YAML double-quoted scalar (JSON's, but UTF-8: YAML reads a pair of ``\\u`` escapes of an
    astral character back as two lone surrogates), YAML's own line breaks escaped."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _family(config: dict) -> str:
    return (config.get("encoder") or {}).get("kind", "dense")


def _front_matter(name: str, config: dict, results: list[dict]) -> list[str]:
    family = _family(config)
    dataset = Path(str(config.get("dataset", ""))).name
    lines = ["---", "library_name: " + ("sentence-transformers" if family == "dense" else "transformers"),
             f"base_model: {_yaml_str((config.get('encoder') or {}).get('source') or config.get('model', ''))}",
             "tags:", "- retriever", f"- {'dense-retrieval' if family == 'dense' else 'splade'}",
             "- information-retrieval"]
    if family == "dense":
        lines += ["- sentence-transformers"] + (["- matryoshka"] if config.get("matryoshka_dims") else [])
        lines += ["pipeline_tag: sentence-similarity"]
    else:
        lines += ["- sparse-encoder", "pipeline_tag: feature-extraction"]
    if dataset:
        lines += ["datasets:", f"- {_yaml_str(dataset)}"]
    if results:
        lines += ["model-index:", f"- name: {_yaml_str(name)}", "  results:"]
        for r in results:
            lines += ["  - task:", "      type: retrieval",
                      "    dataset:", f"      name: {_yaml_str(Path(r['dataset']).name)}",
                      f"      type: {_yaml_str(r['dataset'])}", f"      split: {_yaml_str(r['split'])}",
                      "    metrics:"]
            for metric, value in r["metrics"].items():
                lines += [f"    - type: {metric.replace('@', '_at_')}", f"      value: {value:.4f}"]
    return lines + ["---"]


_FLAGS = ("model", "dataset", "negatives", "epochs", "max_steps", "batch_size", "group_size", "lr",
          "weight_decay", "warmup_steps", "temperature", "max_length", "query_max_length", "in_batch", "distill",
          "distill_weight", "contrastive_weight", "grad_cache_chunk", "accumulation", "topic_batches",
          "dev_fraction", "dev_split", "dev_docs", "dev_every", "seed")


def _matryoshka_flags(config: dict) -> list[str]:
    dims, weights = config.get("matryoshka_dims"), config.get("matryoshka_weights")
    if not dims:
        return []
    out = ["`--matryoshka " + ",".join(map(str, dims)) + "`"]
    if weights and any(w != 1 for w in weights):
        out.append("`--matryoshka-weights " + ",".join(f"{w:g}" for w in weights) + "`")
    return out


def render(name: str, config: dict, summary: dict, results: list[dict], hw: dict, curve: list) -> str:
    """The card's text (front matter + Markdown)."""
    family = _family(config)
    encoder = config.get("encoder") or {}
    lines = _front_matter(name, config, results) + ["", f"# {md_cell(name)}", ""]
    lines += [f"A {'dense (dual-encoder)' if family == 'dense' else 'SPLADE (learned sparse)'} retrieval model "
              f"fine-tuned with `retriever train {family if family == 'dense' else 'splade'}` from "
              f"{md_code(encoder.get('source') or config.get('model'))}.", ""]
    lines += ["## Data", "",
              f"- dataset: {md_code(config.get('dataset'))}; training queries: {config.get('train_queries')}; "
              f"dev queries: {config.get('dev_queries')} "
              f"({'split ' + str(config['dev_split']) if config.get('dev_split') else 'carved from the training queries, fraction ' + str(config.get('dev_fraction'))})",
              f"- hard negatives: {md_code(config.get('negatives'))} (mined with `retriever mine`); "
              f"teacher scores for distillation: {'yes' if config.get('has_teacher_scores') else 'no'}", ""]
    learned = summary.get("temperature") if config.get("learn_temperature") else None
    if learned:
        start = (f"{learned['start']:.3g} at the start (the starting model's best)" if learned.get("start") is not None
                 else "start not recorded (a resumed run)")
        temperature = f"temperature learned: {start}, {learned['end']:.3g} at the end"
    else:
        temperature = f"temperature {config.get('temperature')}"
    loss = [f"contrastive ({temperature}, "
            f"{'in-batch and hard negatives' if config.get('in_batch', True) else 'own hard negatives only'})"]
    if config.get("distill", "none") != "none":
        loss.append(f"{config['distill']} distillation (weight {config.get('distill_weight')}"
                    f"{', teacher margins rescaled to the student' if config.get('distill_rescale') else ''})")
    dims = config.get("matryoshka_dims")
    if dims:
        weights = config.get("matryoshka_weights") or [1.0] * len(dims)
        loss.append("Matryoshka: these losses computed on the first " + ", ".join(map(str, dims))
                    + " dimensions (re-normalised when the model normalises) and summed, weights "
                    + ", ".join(f"{w:g}" for w in weights))
    extra = config.get("extra") or {}
    if family != "dense":
        loss.append(f"FLOPS regularisation: lambda_d {extra.get('lambda_d')}, lambda_q {extra.get('lambda_q')} "
                    f"({extra.get('query_regularizer')}), warm-up {extra.get('flops_warmup')} steps"
                    + (", IDF-aware" if extra.get("idf_flops") else "")
                    + ("; inference-free queries" if extra.get("inference_free") else ""))
    lines += ["## Training", "", "- losses: " + "; ".join(loss),
              "- flags: " + ", ".join([md_code(f"--{k.replace('_', '-')} {config[k]}") for k in _FLAGS
                                       if k in config and config[k] not in (None, False)] + _matryoshka_flags(config)),
              f"- steps: {summary.get('steps', config.get('total_steps'))} (global batch {config.get('global_batch')}, "
              f"{config.get('world_size', 1)} process(es))"]
    if summary.get("train_seconds") is not None:
        lines.append(f"- training time: {summary['train_seconds'] / 60:.1f} min")
    lines.append("- hardware: " + ", ".join(f"{k} {v}" for k, v in hw.items()))
    best = summary.get("best")
    if best:
        lines.append(f"- model kept: the best dev nDCG@10, {best[0]:.4f} at step {best[1]}")
    lines.append("")
    if curve:
        lines += ["## Dev curve", "", "| step | dev nDCG@10 | dev Recall@100 |", "|--:|--:|--:|"]
        lines += [f"| {s} | {n:.4f} | {'-' if r is None else f'{r:.4f}'} |" for s, n, r in curve]
        lines += ["", "Dev numbers rank a pool (dev positives, their mined negatives and random documents), "
                  "not the whole corpus: they are for model selection, higher than full-corpus ones.", ""]
    if results:
        names = list(dict.fromkeys(m for r in results for m in r["metrics"]))
        lines += ["## Evaluation", "", "| dataset | split | " + " | ".join(names) + " |",
                  "|---|---|" + "--:|" * len(names)]
        for r in results:
            lines.append(f"| {md_cell(r['dataset'])} | {md_cell(r['split'])} | "
                         + " | ".join(f"{r['metrics'][m]:.4f}" if m in r["metrics"] else "-" for m in names) + " |")
        lines += ["", "Recorded by `retriever eval --model-card DIR` over the whole corpus.", ""]
    kind = "dense --faiss Flat" if family == "dense" else "sparse"
    lines += ["## Use", "", "```bash", f"retriever index CORPUS INDEX --kind {kind} --model {shlex.quote(name)}",
              "retriever search INDEX \"a query\"", "```", ""]
    if dims:
        lines += [f"Trained for vectors of {', '.join(map(str, dims))} dimensions: `--dim D` keeps the first D "
                  "(e.g. `--dim " + str(dims[-1]) + "`), a smaller index at some cost in quality.", ""]
    return "\n".join(lines)
