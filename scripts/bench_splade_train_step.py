"""SPLADE training step: our sparse-backward max projection against autograd over the full logits.

    python scripts/bench_splade_train_step.py [--docs 64] [--max-length 128] [--repeat 5]

Both compute ``log1p(relu(max_t logits))`` for the same SciFact passages with SPLADE-tiny and
backpropagate the same upstream gradient; reported: seconds per forward+backward (best of
--repeat), the ratio, and the largest gradient
difference on the model's parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexing.corpus import doc_text, iter_corpus
from retriever.encoders.splade import MaxProjection, projection_input
from training.encoders import SpladeTrainEncoder


def plain(enc, batch):
    logits = enc.model(**batch).logits
    logits = logits.masked_fill(~batch["attention_mask"].bool().unsqueeze(-1), float("-inf"))
    return torch.log1p(torch.relu(logits.amax(dim=1)))


def fast(enc, batch):
    hidden = projection_input(enc.model, batch)
    proj = enc.model.get_output_embeddings()
    return torch.log1p(torch.relu(MaxProjection.apply(hidden, batch["attention_mask"].bool(), proj.weight, proj.bias)))


def step(enc, batch, fn, upstream):
    enc.model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out = fn(enc, batch)
    (out * upstream).sum().backward()
    took = time.perf_counter() - start
    return took, out.detach(), {n: p.grad.clone() for n, p in enc.model.named_parameters() if p.grad is not None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    p.add_argument("--model", default="splade-tiny")
    p.add_argument("--docs", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "docs" / "bench_splade_train_step.json"))
    args = p.parse_args()
    texts = [doc_text(d) for _, d in zip(range(args.docs), iter_corpus(Path(args.dataset) / "corpus.jsonl"))]
    enc = SpladeTrainEncoder(args.model, max_length=args.max_length)
    enc.model.eval()  # no dropout: both sides see the same function
    batch = dict(enc.tokenize(texts, "doc"))
    upstream = torch.rand(len(texts), enc.vocab_size, generator=torch.Generator().manual_seed(0))
    times = {"plain": [], "ours": []}
    results = {}
    for _ in range(args.repeat):
        for name, fn in (("plain", plain), ("ours", fast)):
            took, out, grads = step(enc, batch, fn, upstream)
            times[name].append(took)
            results[name] = (out, grads)
    (out_p, g_p), (out_o, g_o) = results["plain"], results["ours"]
    max_out = float((out_p - out_o).abs().max())
    max_grad = max(float((g_p[n] - g_o[n]).abs().max()) for n in g_p)
    scale = max(float(g.abs().max()) for g in g_p.values())
    report = {"docs": len(texts), "max_length": args.max_length, "threads": torch.get_num_threads(),
              "plain_s": min(times["plain"]), "ours_s": min(times["ours"]),
              "speedup": min(times["plain"]) / min(times["ours"]),
              "max_abs_output_diff": max_out, "max_abs_grad_diff": max_grad, "max_abs_grad": scale}
    print(json.dumps(report, indent=1))
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
