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

from retriever.dense import DenseSettings, resolve_settings
from retriever.models import load_error, quiet_loading, resolve_model


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
    """A Hugging Face encoder with the pooling / normalisation / prefixes of ``retriever.dense``.

    Training lengths (``max_length`` for passages, ``query_max_length``) may be shorter than the
    inference lengths the saved model declares; those stay the source model's unless overridden.
    """

    def __init__(self, model: str, *, max_length: int = 256, query_max_length: int = 64,
                 settings: DenseSettings | None = None, **overrides) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.source = model
        path = resolve_model(model)
        self.settings = settings or resolve_settings(path, **overrides)
        try:
            with quiet_loading():
                self.tokenizer = AutoTokenizer.from_pretrained(path)
                self.model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise load_error(model, e) from None
        self.doc_max_length = min(max_length, self.settings.doc_max_length)
        self.query_max_length = min(query_max_length, self.settings.query_max_length)

    def _prefix(self, kind: str) -> str:
        return self.settings.query_prefix if kind == "query" else self.settings.doc_prefix

    def encode(self, batch: dict, kind: str) -> torch.Tensor:
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"]
        pooling = self.settings.pooling
        if pooling == "cls":
            out = hidden[:, 0]
        elif pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            out = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        else:
            positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
            out = hidden[torch.arange(hidden.shape[0], device=hidden.device), (positions * mask).argmax(dim=1)]
        out = out.float()
        return nn.functional.normalize(out, dim=-1) if self.settings.normalize else out

    def config(self) -> dict:
        return {"kind": "dense", "source": self.source, **asdict(self.settings)}

    def save(self, out: str | Path) -> None:
        """Hugging Face weights + tokenizer + a sentence-transformers layout declaring pooling,
        normalisation, max length and prefixes (read back by ``retriever.dense``, and by
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

