"""SPLADE-style sparse encoding with any Hugging Face masked-LM model.

``SpladeModel`` is the one SPLADE model: training fine-tunes it (``training.encoders``) and
``SpladeEncoder`` wraps it for indexing and search. A text's weight for vocabulary term ``v`` is
``max_t log(1 + relu(logit[t, v]))`` over its tokens ``t`` (attention mask respected). Computing
it the plain way materialises a (batch, length, vocab) tensor and runs three element-wise passes
over it. Here the model runs up to the input of its vocabulary projection (caught by a pre-hook,
so any MLM architecture works), ``max_projection`` projects one text at a time over its real
tokens only and takes the max right away, and ``log1p(relu(.))`` — monotone, so it commutes with
the max — is applied to the (batch, vocab) result. With gradients, ``MaxProjection`` keeps the
argmax token of each entry so the backward touches only the entries that pass the relu.
Inference-free models weight query tokens by a learned (or IDF) table instead of running the
model on queries. At inference texts are sorted by length so batches carry little padding.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from indexing.io import save_npy
from retriever.encoders.base import EncoderModel, bf16_autocast, check_batch_size, inference_batches
from retriever.encoders.device import resolve_device
from retriever.encoders.model_dir import reading
from retriever.encoders.models import fingerprint, load_pretrained, quiet_loading, resolve_model, within_positions

log = logging.getLogger("retriever")
SparseVector = tuple[np.ndarray, np.ndarray]  # (token ids int32, weights float32), ids ascending
QUERY_WEIGHTINGS = ("learned", "idf")


@dataclass(frozen=True)
class SpladeSettings:
    doc_max_length: int = 256
    query_max_length: int = 64
    doc_top_k: int = 0  # keep only the k largest weights per document (0: keep all)
    query_top_k: int = 0

    def __post_init__(self) -> None:
        for name in ("doc_max_length", "query_max_length"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2")
        for name in ("doc_top_k", "query_top_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 keeps every term)")


# -- the forward: hidden states entering the projection, then the max over tokens ---------------
class _Captured(Exception):
    """Raised by the pre-hook to stop the forward pass before the vocabulary projection."""


def projection_input(model: nn.Module, batch: dict) -> torch.Tensor:
    """The hidden states entering ``model``'s vocabulary projection (the forward stops there)."""
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


def _max_over_tokens(hidden, mask, weight, bias, with_argmax: bool):
    """Per text: ``max over real tokens t of (hidden[t] @ weight.T + bias)``, one (tokens x vocab)
    block at a time; with ``with_argmax`` also the token position of each maximum (first on ties).
    Returns (maxima in ``hidden``'s dtype (batch x vocab), positions or None)."""
    b, v = hidden.shape[0], weight.shape[0]
    out = hidden.new_empty(b, v)
    arg = torch.empty(b, v, dtype=torch.long, device=hidden.device) if with_argmax else None
    for row in range(b):
        positions = mask[row].nonzero().flatten()  # the real tokens, wherever the padding side puts them
        h = hidden[row, positions]
        logits = h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())
        if arg is None:
            out[row] = logits.amax(dim=0)
        else:
            vals, idx = logits.max(dim=0)
            out[row] = vals
            arg[row] = positions[idx]
    return out, arg


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
        out, arg = _max_over_tokens(hidden, mask, weight, bias, with_argmax=True)
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


def max_projection(hidden: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """(batch x vocab) maxima over the real tokens (``mask``, bool) of the projected ``hidden``.

    Through ``MaxProjection`` when a gradient is wanted; otherwise the same per-text loop without
    recording argmax tokens (equal values, less work at inference).
    """
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias)):
        return MaxProjection.apply(hidden, mask, weight, bias)
    return _max_over_tokens(hidden, mask, weight, bias, with_argmax=False)[0]


# -- the model --------------------------------------------------------------------------------
class SpladeModel(EncoderModel):
    """A masked LM read as SPLADE: ``max_t log(1 + relu(logit[t, v]))`` over its vocabulary.

    ``settings``: max lengths (clamped to the model's positions, with a warning) and top-k
    pruning (applied by ``SpladeEncoder``, not here). ``inference_free``: queries skip the model;
    a query's weight for each of its distinct non-special tokens is ``relu(w[token])``, ``w``
    initialised from ``idf`` and learned (``query_weighting="learned"``) or kept fixed
    (``"idf"``). ``missing_keys``: weights the checkpoint lacked (a plain encoder has no MLM head).
    """

    def __init__(self, model: str, *, settings: SpladeSettings | None = None, inference_free: bool = False,
                 query_weighting: str = "learned", idf: torch.Tensor | None = None) -> None:
        super().__init__()
        from transformers import AutoModelForMaskedLM

        if query_weighting not in QUERY_WEIGHTINGS:
            raise ValueError(f"query weighting must be learned or idf, not {query_weighting!r}")
        if inference_free and idf is None:
            raise ValueError("inference-free queries need the corpus IDF")
        self.model_name = model
        self.path = resolve_model(model)
        with reading(self.path):  # a training run may be replacing the files
            self.tokenizer, (self.model, info) = load_pretrained(model, AutoModelForMaskedLM, self.path,
                                                                 output_loading_info=True)
        self.missing_keys = list(info.get("missing_keys", []))
        self.settings = settings or SpladeSettings()
        self.settings = within_positions(self.settings, self.model, model)
        self.doc_max_length = self.settings.doc_max_length
        self.query_max_length = self.settings.query_max_length
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.inference_free, self.query_weighting = inference_free, query_weighting
        if inference_free:
            w = idf.float().clone()
            self.query_weights = nn.Parameter(w, requires_grad=query_weighting == "learned")
            special = torch.zeros(self.vocab_size, dtype=torch.bool)
            special[[i for i in self.tokenizer.all_special_ids if i < self.vocab_size]] = True
            self.register_buffer("special", special, persistent=False)

    def encode(self, batch: dict, kind: str) -> torch.Tensor:
        if kind == "query" and self.inference_free:
            return self._token_weights(batch)
        hidden = projection_input(self.model, batch)
        proj = self.model.get_output_embeddings()
        # max first: log1p(relu(.)) is monotone, so this equals the max of the activated logits
        top = max_projection(hidden, batch["attention_mask"].bool(), proj.weight, proj.bias)
        return torch.log1p(torch.relu(top.float()))

    def _token_weights(self, batch: dict) -> torch.Tensor:
        """Inference-free queries: ``relu(w[token])`` for each distinct real non-special token."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        present = torch.zeros(ids.shape[0], self.vocab_size, device=ids.device)
        present.scatter_(1, ids, mask.to(present.dtype))  # 1 for each distinct real token
        present = present * (~self.special).to(present.dtype)
        return present * torch.relu(self.query_weights)

    def config(self) -> dict:
        return {"kind": "splade", "source": self.model_name, "inference_free": self.inference_free,
                "query_weighting": self.query_weighting}

    def save(self, out: str | Path) -> None:
        """The masked LM and tokenizer; an inference-free model also writes its query weights
        (``query_weights.npy``) and ``retriever_sparse.json`` naming them, which
        ``retriever index --kind sparse --model OUT`` reads."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with quiet_loading():
            self.model.save_pretrained(out)
            self.tokenizer.save_pretrained(out)
        if self.inference_free:
            save_npy(out / "query_weights.npy", torch.relu(self.query_weights.detach()).cpu().numpy().astype(np.float32))
            (out / "retriever_sparse.json").write_text(json.dumps(
                {"query_mode": "learned", "query_weights": "query_weights.npy"}, indent=2) + "\n", encoding="utf-8")


# -- inference --------------------------------------------------------------------------------
class SpladeEncoder:
    """Indexing and search with a ``SpladeModel``: one ``SparseVector`` per text.

    Batches are length-sorted and run under ``torch.inference_mode`` (bf16 autocast on CUDA);
    ``settings.doc_top_k`` / ``query_top_k`` keep the k largest weights. Queries run the model
    (inference-free query encoding is ``TokenWeightQueryEncoder``). ``config()`` is what an index
    manifest records.
    """

    def __init__(self, model: str, *, settings: SpladeSettings | None = None, batch_size: int = 32,
                 device: str = "auto") -> None:
        self.batch_size = check_batch_size(batch_size)
        self.device = resolve_device(device)
        self.model = SpladeModel(model, settings=settings)
        self.model.eval().to(self.device)
        self.model_name, self.path, self.settings = model, self.model.path, self.model.settings
        self.tokenizer, self.vocab_size = self.model.tokenizer, self.model.vocab_size
        names = self.tokenizer.convert_ids_to_tokens(list(range(min(len(self.tokenizer), self.vocab_size))))
        self.vocab = names + [f"[id{i}]" for i in range(len(names), self.vocab_size)]

    def config(self) -> dict:
        """Everything that determines the vectors, for the index manifest."""
        return {"model": self.path, "fingerprint": fingerprint(self.path), "pooling": "max",
                "activation": "log1p_relu", **self.settings.__dict__}

    def encode_plain(self, texts: Sequence[str], max_length: int) -> torch.Tensor:
        """The reference: full logits, log1p(relu), mask, max over tokens (dense CPU output)."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model.model(**batch).logits
            weights = torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)
            return weights.amax(dim=1).float().cpu()

    def _encode(self, texts: Sequence[str], kind: str, top_k: int, progress: bool = False) -> list[SparseVector]:
        if not texts:
            return []
        result: list[SparseVector] = [None] * len(texts)  # type: ignore[list-item]
        batches = inference_batches(self.model, texts, kind, self.batch_size, self.device,
                                    "encode splade" if progress else None)
        with torch.inference_mode():
            for rows, batch in batches:
                with bf16_autocast(self.device):
                    weights = self.model.encode(batch, kind)
                if top_k:
                    kth = weights.topk(min(top_k, weights.shape[1]), dim=1).values[:, -1:]
                    weights = torch.where(weights >= kth, weights, torch.zeros_like(weights))
                nz = weights.nonzero().cpu().numpy()
                vals = weights[nz[:, 0], nz[:, 1]].float().cpu().numpy()
                bounds = np.searchsorted(nz[:, 0], np.arange(len(rows) + 1))
                for r, i in enumerate(rows):
                    a, b = bounds[r], bounds[r + 1]
                    result[i] = (nz[a:b, 1].astype(np.int32), vals[a:b].astype(np.float32))
        return result

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> list[SparseVector]:
        return self._encode(texts, "doc", self.settings.doc_top_k, progress)

    def encode_queries(self, texts: Sequence[str]) -> list[SparseVector]:
        return self._encode(texts, "query", self.settings.query_top_k)


class TokenWeightQueryEncoder:
    """Inference-free queries: tokenise, then weight each distinct token by a fixed table.

    The table is IDF computed over the indexed documents, or learned per-token weights.
    Special tokens ([CLS], [SEP], ...) get no weight.
    """

    def __init__(self, tokenizer, weights: np.ndarray, max_length: int = 64) -> None:
        self.tokenizer = tokenizer
        self.weights = np.asarray(weights, dtype=np.float32)
        self.max_length = max_length
        self._special = set(tokenizer.all_special_ids)

    def encode_queries(self, texts: Iterable[str]) -> list[SparseVector]:
        texts = list(texts)
        if not texts:
            return []
        out = []
        for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]:
            uniq = np.array(sorted({i for i in ids if i not in self._special and i < len(self.weights)}),
                            dtype=np.int32)
            w = self.weights[uniq] if len(uniq) else np.empty(0, np.float32)
            keep = w > 0
            out.append((uniq[keep], w[keep]))
        return out


def idf_weights(df: np.ndarray, num_docs: int) -> np.ndarray:
    """BM25-style IDF per token from document frequencies: ln(1 + (N - df + 0.5) / (df + 0.5))."""
    df = df.astype(np.float64)
    idf = np.log(1.0 + (num_docs - df + 0.5) / (df + 0.5))
    return np.where(df > 0, idf, 0.0).astype(np.float32)


def token_document_frequencies(tokenizer, texts: Iterable[str], vocab_size: int, max_length: int = 512,
                               batch_size: int = 1000) -> tuple[np.ndarray, int]:
    """(df per token id, number of texts): in how many texts each token occurs (special tokens 0)."""
    df = np.zeros(vocab_size, dtype=np.int64)
    special = [i for i in tokenizer.all_special_ids if i < vocab_size]
    n = 0
    batch: list[str] = []

    def flush():
        for ids in tokenizer(batch, truncation=True, max_length=max_length)["input_ids"]:
            uniq = np.unique(np.asarray(ids, dtype=np.int64))
            df[uniq[uniq < vocab_size]] += 1

    for text in texts:
        batch.append(text)
        n += 1
        if len(batch) == batch_size:
            flush()
            batch = []
    if batch:
        flush()
    df[special] = 0
    return df, n
