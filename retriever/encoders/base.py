"""What every model family (dense, SPLADE) offers, and the batching its inference wrapper uses.

A family has one ``nn.Module`` (``EncoderModel``) that both trains and encodes:

- ``tokenize(texts, kind)`` -> dict of padded CPU tensors (``kind``: "query" or "doc"; the
  family's prefix for that kind is prepended, texts are cut at ``max_length(kind)`` tokens),
- ``encode(batch, kind)`` -> one float32 representation row per text, differentiable,
- ``score(q, d)`` -> the (queries x documents) score matrix,
- ``save(out_dir)`` -> a model directory that loads back with the same family,
- ``config()`` -> the model's description (family, source, the settings that change vectors).

The inference wrappers (``DenseEncoder``, ``SpladeEncoder``) add what only inference needs:
length-sorted batches, ``torch.inference_mode``, bf16 autocast on CUDA, numpy output.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from retriever.encoders.models import length_sorted_batches

KINDS = ("query", "doc")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return kind


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


class EncoderModel(nn.Module):
    """Base of the model families: tokenizer + Hugging Face model + the token limits in use.

    Subclasses set ``tokenizer``, ``model``, ``doc_max_length`` and ``query_max_length`` (the
    limits ``tokenize`` applies; a trainer may lower them below the saved inference settings)
    and implement ``encode``, ``config`` and ``save``.
    """

    tokenizer: object
    model: nn.Module
    doc_max_length: int
    query_max_length: int

    def prefix(self, kind: str) -> str:
        """Text put before every input of ``kind`` (none unless the family says so)."""
        check_kind(kind)
        return ""

    def max_length(self, kind: str) -> int:
        """Tokens kept of an input of ``kind`` (special tokens included)."""
        return self.query_max_length if check_kind(kind) == "query" else self.doc_max_length

    def tokenize(self, texts: Sequence[str], kind: str) -> dict:
        """Prefixed, truncated, padded to the longest text: {name: CPU tensor}."""
        prefix = self.prefix(kind)
        return dict(self.tokenizer([prefix + t for t in texts], padding=True, truncation=True,
                                   max_length=self.max_length(kind), return_tensors="pt"))

    def encode(self, batch: dict, kind: str) -> torch.Tensor:
        raise NotImplementedError

    def score(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Dot products: (queries x documents)."""
        return q @ d.t()

    def config(self) -> dict:
        raise NotImplementedError

    def save(self, out) -> None:
        raise NotImplementedError


def inference_batches(model: EncoderModel, texts: Sequence[str], kind: str, batch_size: int, device: str,
                      desc: str | None = None) -> Iterator[tuple[np.ndarray, dict]]:
    """(row indices, padded batch on ``device``), longest texts first, tokenised as ``model``
    tokenises ``kind`` (prefix, max length); rows map each batch back to input order."""
    prefix = model.prefix(kind)
    return length_sorted_batches(model.tokenizer, [prefix + t for t in texts], model.max_length(kind),
                                 batch_size, device, desc)


def bf16_autocast(device: str) -> AbstractContextManager:
    """bf16 autocast on a CUDA device; a no-op elsewhere."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
