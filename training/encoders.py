"""Trainable encoders: what the shared trainer needs from a dense or a SPLADE model.

An encoder is an ``nn.Module`` with
- ``tokenize(texts, kind)`` -> dict of CPU tensors (``kind`` is "query" or "doc"),
- ``encode(batch, kind)`` -> one representation row per text,
- ``score(q, d)`` -> the (queries x passages) score matrix,
- ``regularizer(q, d, step)`` -> (loss, {name: value}) added to the ranking loss,
- ``stats(q, d)`` -> {name: value} for the log,
- ``save(out_dir)`` -> a directory the index command loads with ``--model OUT``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from retriever.encoders.dense import DenseSettings, pool, resolve_settings
from retriever.encoders.models import load_pretrained, quiet_loading, resolve_model


class EncoderBase(nn.Module):
    query_max_length: int
    doc_max_length: int

    def tokenize(self, texts: list[str], kind: str) -> dict:
        prefix, max_length = self._prefix(kind), self._max_length(kind)
        return dict(self.tokenizer([prefix + t for t in texts], padding=True, truncation=True,
                                   max_length=max_length, return_tensors="pt"))

    def _prefix(self, kind: str) -> str:
        return ""

    def _max_length(self, kind: str) -> int:
        return self.query_max_length if kind == "query" else self.doc_max_length

    def score(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return q @ d.t()

    def regularizer(self, q: torch.Tensor, d: torch.Tensor, step: int):
        return q.new_zeros(()), {}

    def stats(self, q: torch.Tensor, d: torch.Tensor) -> dict:
        return {}


class DenseTrainEncoder(EncoderBase):
    """A Hugging Face encoder with the pooling / normalisation / prefixes of ``retriever.encoders.dense``.

    Training lengths (``max_length`` for passages, ``query_max_length``) may be shorter than the
    inference lengths the saved model declares; those stay the source model's unless overridden.
    """

    def __init__(self, model: str, *, max_length: int = 256, query_max_length: int = 64,
                 settings: DenseSettings | None = None, **overrides) -> None:
        super().__init__()
        from transformers import AutoModel

        self.source = model
        path = resolve_model(model)
        self.settings = settings or resolve_settings(path, **overrides)
        self.tokenizer, self.model = load_pretrained(model, AutoModel, path)
        self.doc_max_length = min(max_length, self.settings.doc_max_length)
        self.query_max_length = min(query_max_length, self.settings.query_max_length)

    def _prefix(self, kind: str) -> str:
        return self.settings.query_prefix if kind == "query" else self.settings.doc_prefix

    def encode(self, batch: dict, kind: str) -> torch.Tensor:
        hidden = self.model(**batch).last_hidden_state
        return pool(hidden, batch["attention_mask"], self.settings.pooling, self.settings.normalize)

    def config(self) -> dict:
        return {"kind": "dense", "source": self.source, **asdict(self.settings)}

    def save(self, out: str | Path) -> None:
        """Hugging Face weights + tokenizer + a sentence-transformers layout declaring pooling,
        normalisation, max length and prefixes (read back by ``retriever.encoders.dense``, and by
        sentence-transformers itself)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with quiet_loading():
            self.model.save_pretrained(out)
            self.tokenizer.save_pretrained(out)
        s = self.settings
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if s.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (out / "2_Normalize").mkdir(exist_ok=True)
        _write_json(out / "modules.json", modules)
        (out / "1_Pooling").mkdir(exist_ok=True)
        _write_json(out / "1_Pooling" / "config.json", {
            "word_embedding_dimension": int(self.model.config.hidden_size),
            "pooling_mode_cls_token": s.pooling == "cls", "pooling_mode_mean_tokens": s.pooling == "mean",
            "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_lasttoken": s.pooling == "last"})
        _write_json(out / "sentence_bert_config.json", {"max_seq_length": s.doc_max_length, "do_lower_case": False})
        prompts = {k: v for k, v in (("query", s.query_prefix), ("document", s.doc_prefix)) if v}
        _write_json(out / "config_sentence_transformers.json", {"prompts": prompts, "default_prompt_name": None})


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")



class SpladeTrainEncoder(EncoderBase):
    """SPLADE: ``max_t log(1 + relu(logit[t, v]))`` over a masked LM's vocabulary logits.

    A plain encoder without an MLM head gets one: the transform starts as the identity and the
    decoder is tied to the input embeddings, so the first logits are token-embedding similarities.
    ``inference_free``: queries skip the model; a query's weight for each of its distinct tokens
    is ``relu(w[token])``, ``w`` initialised from IDF and learned (``query_weighting="learned"``)
    or kept fixed (``"idf"``). Sparsity: FLOPS on documents (IDF-aware with ``idf_flops``) and
    FLOPS or L1 on queries, with weights ``lambda_d`` / ``lambda_q`` reached by a quadratic
    warm-up over ``flops_warmup`` steps.
    """

    def __init__(self, model: str, *, max_length: int = 256, query_max_length: int = 64,
                 lambda_q: float = 0.0, lambda_d: float = 0.0, flops_warmup: int = 0,
                 query_regularizer: str = "flops", idf_flops: bool = False, inference_free: bool = False,
                 query_weighting: str = "learned", idf: torch.Tensor | None = None) -> None:
        super().__init__()
        from transformers import AutoModelForMaskedLM

        from training.losses import FLOPSLoss, L1Loss, idf_penalty_weights

        if query_regularizer not in ("flops", "l1"):
            raise ValueError(f"query regulariser must be flops or l1, not {query_regularizer!r}")
        if query_weighting not in ("learned", "idf"):
            raise ValueError(f"query weighting must be learned or idf, not {query_weighting!r}")
        if (idf_flops or inference_free) and idf is None:
            raise ValueError("IDF-aware FLOPS and inference-free queries need the corpus IDF")
        self.source = model
        self.tokenizer, (self.model, info) = load_pretrained(model, AutoModelForMaskedLM,
                                                             output_loading_info=True)
        self.built_head = build_missing_mlm_head(self.model, info.get("missing_keys", []))
        positions = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.doc_max_length = min(max_length, positions)
        self.query_max_length = min(query_max_length, positions)
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.lambda_q, self.lambda_d, self.flops_warmup = lambda_q, lambda_d, flops_warmup
        self.query_regularizer, self.idf_flops = query_regularizer, idf_flops
        self.inference_free, self.query_weighting = inference_free, query_weighting
        self.doc_flops = FLOPSLoss(idf_penalty_weights(idf) if idf_flops else None)
        self.query_reg = FLOPSLoss() if query_regularizer == "flops" else L1Loss()
        if inference_free:
            w = idf.float().clone()
            self.query_weights = nn.Parameter(w, requires_grad=query_weighting == "learned")
            special = torch.zeros(self.vocab_size, dtype=torch.bool)
            special[[i for i in self.tokenizer.all_special_ids if i < self.vocab_size]] = True
            self.register_buffer("special", special, persistent=False)

    def encode(self, batch: dict, kind: str) -> torch.Tensor:
        if kind == "query" and self.inference_free:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            present = torch.zeros(ids.shape[0], self.vocab_size, device=ids.device)
            present.scatter_(1, ids, mask.to(present.dtype))  # 1 for each distinct real token
            present = present * (~self.special).to(present.dtype)
            return present * torch.relu(self.query_weights)
        hidden = _projection_input(self.model, batch)
        proj = self.model.get_output_embeddings()
        # max first: log1p(relu(.)) is monotone, so this equals the max of the activated logits
        top = MaxProjection.apply(hidden, batch["attention_mask"].bool(), proj.weight, proj.bias)
        return torch.log1p(torch.relu(top.float()))

    def regularizer(self, q: torch.Tensor, d: torch.Tensor, step: int):
        from training.losses import quadratic_warmup

        factor = quadratic_warmup(step, self.flops_warmup)
        parts = {}
        total = q.new_zeros(())
        if self.lambda_d:
            parts["flops_d"] = self.doc_flops(d)
            total = total + self.lambda_d * factor * parts["flops_d"]
        if self.lambda_q and not self.inference_free:
            parts[f"{self.query_regularizer}_q"] = self.query_reg(q)
            total = total + self.lambda_q * factor * parts[f"{self.query_regularizer}_q"]
        if parts:
            parts["reg_factor"] = factor
        return total, parts

    def stats(self, q: torch.Tensor, d: torch.Tensor) -> dict:
        return {"nnz_q": float((q > 0).sum(dim=1).float().mean()), "nnz_d": float((d > 0).sum(dim=1).float().mean())}

    def config(self) -> dict:
        return {"kind": "splade", "source": self.source, "built_mlm_head": self.built_head,
                "lambda_q": self.lambda_q, "lambda_d": self.lambda_d, "flops_warmup": self.flops_warmup,
                "query_regularizer": self.query_regularizer, "idf_flops": self.idf_flops,
                "inference_free": self.inference_free, "query_weighting": self.query_weighting}

    def save(self, out: str | Path) -> None:
        """The masked LM and tokenizer; an inference-free model also writes its query weights
        (``query_weights.npy``) and ``retriever_sparse.json`` naming them, which
        ``retriever index --kind sparse --model OUT`` reads."""
        import numpy as np

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with quiet_loading():
            self.model.save_pretrained(out)
            self.tokenizer.save_pretrained(out)
        if self.inference_free:
            np.save(out / "query_weights.npy", torch.relu(self.query_weights.detach()).cpu().numpy().astype(np.float32))
            _write_json(out / "retriever_sparse.json", {"query_mode": "learned", "query_weights": "query_weights.npy"})


class _Captured(Exception):
    pass


def _projection_input(model, batch: dict) -> torch.Tensor:
    """The hidden states entering the vocabulary projection (the forward stops there)."""
    captured = {}

    def hook(module, inputs):
        captured["hidden"] = inputs[0]
        raise _Captured

    handle = model.get_output_embeddings().register_forward_pre_hook(hook)
    try:
        model(**batch)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured["hidden"]


class MaxProjection(torch.autograd.Function):
    """``max over real tokens t of (hidden[t] @ weight.T + bias)`` per text, with a sparse backward.

    The forward projects one text at a time (a (tokens x vocab) block, never (batch x tokens x
    vocab)) and keeps only the argmax token of each vocabulary entry. SPLADE's log1p(relu(.))
    passes gradient only where the max is positive — a few hundred of ~30k entries per text — so
    the backward touches those entries alone: index_add over (text, entry) pairs instead of two
    (batch x tokens x vocab) matmuls. Same values and gradients as the autograd of the plain
    formula (up to ties in the max, which autograd splits and this gives to the first token).
    """

    @staticmethod
    def forward(ctx, hidden, mask, weight, bias):
        b, _, _ = hidden.shape
        v = weight.shape[0]
        out = hidden.new_empty(b, v)
        arg = torch.empty(b, v, dtype=torch.long, device=hidden.device)
        for row in range(b):
            positions = mask[row].nonzero().flatten()
            h = hidden[row, positions]
            logits = h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())
            vals, idx = logits.max(dim=0)
            out[row] = vals
            arg[row] = positions[idx]
        ctx.save_for_backward(hidden, weight, arg)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, arg = ctx.saved_tensors
        rows, cols = grad_out.nonzero(as_tuple=True)
        g = grad_out[rows, cols].unsqueeze(1).to(hidden.dtype)
        tokens = arg[rows, cols]
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            b, length, d = hidden.shape
            grad_hidden = torch.zeros(b * length, d, dtype=hidden.dtype, device=hidden.device)
            grad_hidden.index_add_(0, rows * length + tokens, g * weight[cols].to(hidden.dtype))
            grad_hidden = grad_hidden.view(b, length, d)
        if ctx.needs_input_grad[2]:
            grad_weight = torch.zeros_like(weight)
            grad_weight.index_add_(0, cols, (g * hidden[rows, tokens]).to(weight.dtype))
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
            grad_bias.index_add_(0, cols, g.squeeze(1).to(weight.dtype))
        return grad_hidden, None, grad_weight, grad_bias


def build_missing_mlm_head(model, missing_keys: list[str]) -> bool:
    """If the checkpoint had no MLM head, make the new one start sensibly: decoder tied to the
    input embeddings, square transform layers = identity, biases 0. Returns whether one was built."""
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    modules = dict(model.named_modules())
    head = {k.rsplit(".", 1)[0] for k in missing_keys if not k.startswith(model.base_model_prefix + ".")}
    if not head:
        return False
    model.config.tie_word_embeddings = True
    out_emb.weight = in_emb.weight
    with torch.no_grad():
        for name in head:
            module = modules.get(name)
            if isinstance(module, nn.Linear) and module is not out_emb and module.in_features == module.out_features:
                module.weight.copy_(torch.eye(module.in_features))
            if module is not None and getattr(module, "bias", None) is not None and module is not out_emb \
                    and not isinstance(module, nn.LayerNorm):
                module.bias.zero_()
        if getattr(out_emb, "bias", None) is not None:
            out_emb.bias.zero_()
    return True


def corpus_idf(model: str, dataset, max_length: int = 256) -> torch.Tensor:
    """IDF of each vocabulary token over a BEIR corpus, tokenised as documents are."""
    from transformers import AutoConfig, AutoTokenizer

    from eval.beir import BeirDataset

    from indexing.corpus import doc_text
    from retriever.encoders.splade import idf_weights, token_document_frequencies

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab_size = int(AutoConfig.from_pretrained(path).vocab_size)
    df, n = token_document_frequencies(tokenizer, (doc_text(d) for d in BeirDataset(dataset).iter_corpus()),
                                       vocab_size, max_length)
    return torch.from_numpy(idf_weights(df, n))
