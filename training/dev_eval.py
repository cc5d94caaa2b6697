"""Dev evaluation during training: rank the dev pool for the dev queries, nDCG@10 and R@100."""

from __future__ import annotations

import numpy as np
import torch

from eval.metrics import evaluate
from training.data import TrainingData


def embed(model, texts: list[str], kind: str, batch_size: int, device: str) -> torch.Tensor:
    """Representations of ``texts`` in input order (eval mode, no gradient, longest first)."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    rows = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = {k: v.to(device) for k, v in model.tokenize([texts[i] for i in idx], kind).items()}
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                    rows.append(model.encode(batch, kind).float())
    finally:
        model.train(was_training)
    out = torch.cat(rows)
    inverse = torch.empty(len(order), dtype=torch.long, device=out.device)
    inverse[torch.as_tensor(order, device=out.device)] = torch.arange(len(order), device=out.device)
    return out[inverse]


def dev_metrics(model, data: TrainingData, *, batch_size: int, device: str, depth: int = 100) -> dict:
    """nDCG@10 and Recall@100 of the model over the dev pool, plus pool statistics."""
    pool = data.dev_pool
    d = embed(model, [data.docs[i] for i in pool], "doc", batch_size, device)
    q = embed(model, [data.queries[e.qid] for e in data.dev], "query", batch_size, device)
    run = {}
    k = min(depth, len(pool))
    for start in range(0, len(data.dev), 256):
        s = model.score(q[start:start + 256], d)
        top = s.topk(k, dim=1)
        for e, vals, idx in zip(data.dev[start:start + 256], top.values.tolist(), top.indices.tolist()):
            run[e.qid] = {pool[i]: v for i, v in zip(idx, vals)}
    qrels = {e.qid: {p: 1 for p in e.pos} for e in data.dev}
    result = evaluate(qrels, run, ["ndcg@10", "recall@100"])
    out = dict(result.metrics)
    out.update(model.stats(q, d))
    return out
