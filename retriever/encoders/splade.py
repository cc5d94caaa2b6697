"""SPLADE-style sparse encoding with any Hugging Face masked-LM model.

A text's weight for vocabulary term ``v`` is ``max_t log(1 + relu(logit[t, v]))`` over its
tokens ``t`` (attention mask respected). Computing it the plain way materialises a
(batch, length, vocab) tensor and runs three element-wise passes over it. Here the model runs
up to the input of its vocabulary projection (caught by a pre-hook, so any MLM architecture
works), the projection is done one text at a time over its real tokens only, the max is taken
right away, and ``log1p(relu(.))`` — monotone, so it commutes with the max — is applied to the
(batch, vocab) result. Texts are sorted by length so batches carry little padding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np

from retriever.encoders.device import resolve_device
from retriever.encoders.models import fingerprint, length_sorted_batches, load_pretrained, resolve_model

log = logging.getLogger("retriever")
SparseVector = tuple[np.ndarray, np.ndarray]  # (token ids int32, weights float32), ids ascending


class _Captured(Exception):
    """Raised by the pre-hook to stop the forward pass before the vocabulary projection."""


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


class SpladeEncoder:
    def __init__(self, model: str, *, settings: SpladeSettings | None = None, batch_size: int = 32,
                 device: str = "auto") -> None:
        import torch
        from transformers import AutoModelForMaskedLM

        self.model_name = model
        self.path = resolve_model(model)
        self.settings = settings or SpladeSettings()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.tokenizer, self.model = load_pretrained(model, AutoModelForMaskedLM, self.path)
        self.model.eval().to(self.device)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        for name in ("doc_max_length", "query_max_length"):
            if positions and getattr(self.settings, name) > positions:
                log.warning("%s %d exceeds the %d positions of model %s; using %d", name,
                            getattr(self.settings, name), positions, model, positions)
                self.settings = replace(self.settings, **{name: positions})
        self._projection = self.model.get_output_embeddings()
        self.vocab_size = self._projection.weight.shape[0]
        names = self.tokenizer.convert_ids_to_tokens(list(range(min(len(self.tokenizer), self.vocab_size))))
        self.vocab = names + [f"[id{i}]" for i in range(len(names), self.vocab_size)]
        self._torch = torch

    def config(self) -> dict:
        """Everything that determines the vectors, for the index manifest."""
        return {"model": self.path, "fingerprint": fingerprint(self.path), "pooling": "max",
                "activation": "log1p_relu", **self.settings.__dict__}

    # -- the reference computation -------------------------------------------------------
    def encode_plain(self, texts: Sequence[str], max_length: int):
        """Full logits, log1p(relu), mask, max over tokens: the textbook formula (dense output)."""
        torch = self._torch
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**batch).logits
            weights = torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)
            return weights.amax(dim=1).float().cpu()

    # -- the fast path -------------------------------------------------------------------
    def _max_logits(self, batch):
        torch = self._torch
        captured = {}

        def hook(module, inputs):
            captured["hidden"] = inputs[0]
            raise _Captured

        handle = self._projection.register_forward_pre_hook(hook)
        try:
            self.model(**batch)
        except _Captured:
            pass
        finally:
            handle.remove()
        hidden = captured["hidden"]
        weight, bias = self._projection.weight, self._projection.bias
        mask = batch["attention_mask"].bool()
        out = torch.empty(mask.shape[0], self.vocab_size, dtype=torch.float32, device=hidden.device)
        for row in range(mask.shape[0]):
            h = hidden[row, mask[row]]  # the real tokens, wherever the padding side puts them
            logits = h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())
            out[row] = logits.amax(dim=0)
        return out.clamp_(min=0).log1p_()

    def _encode(self, texts: Sequence[str], max_length: int, top_k: int,
                progress: bool = False) -> list[SparseVector]:
        torch = self._torch
        if not texts:
            return []
        result: list[SparseVector] = [None] * len(texts)  # type: ignore[list-item]
        batches = length_sorted_batches(self.tokenizer, texts, max_length, self.batch_size, self.device,
                                        "encode splade" if progress else None)
        with torch.inference_mode():
            for rows, batch in batches:
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
                    weights = self._max_logits(batch)
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
        s = self.settings
        return self._encode(texts, s.doc_max_length, s.doc_top_k, progress)

    def encode_queries(self, texts: Sequence[str]) -> list[SparseVector]:
        s = self.settings
        return self._encode(texts, s.query_max_length, s.query_top_k)


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
