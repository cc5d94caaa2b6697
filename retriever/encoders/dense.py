"""Dense (bi-encoder) embeddings with any Hugging Face encoder model.

Settings that change the vectors — pooling (cls | mean | last), L2 normalisation, query and
document prefixes, max lengths — come from explicit arguments, else from a sentence-transformers
directory (``modules.json``, ``1_Pooling/config.json``, a Normalize module,
``sentence_bert_config.json``, prompts), else defaults. Texts are sorted by length so batches
carry little padding; on a GPU the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from retriever.encoders.device import resolve_device
from retriever.encoders.models import fingerprint, length_sorted_batches, load_pretrained, resolve_model

Pooling = Literal["cls", "mean", "last"]
POOLINGS = ("cls", "mean", "last")


@dataclass(frozen=True)
class DenseSettings:
    pooling: Pooling = "mean"
    normalize: bool = False
    query_prefix: str = ""
    doc_prefix: str = ""
    doc_max_length: int = 256
    query_max_length: int = 64

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        if self.doc_max_length < 2 or self.query_max_length < 2:
            raise ValueError("max lengths must be at least 2")


def sentence_transformers_settings(path: str) -> dict:
    """Settings a sentence-transformers directory declares (empty for a plain HF model)."""
    root = Path(path)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    out: dict = {"normalize": False}
    for m in modules:
        kind = m.get("type", "").rsplit(".", 1)[-1]
        if kind == "Pooling":
            cfg = json.loads((root / m["path"] / "config.json").read_text(encoding="utf-8"))
            modes = [name for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
                                            ("pooling_mode_lasttoken", "last")) if cfg.get(key)]
            unsupported = [k for k in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                                       "pooling_mode_weightedmean_tokens") if cfg.get(k)]
            if unsupported or len(modes) != 1:
                raise ValueError(f"{root / m['path'] / 'config.json'}: unsupported pooling "
                                 f"{unsupported or modes}; supported: cls, mean, last")
            out["pooling"] = modes[0]
        elif kind == "Normalize":
            out["normalize"] = True
    st = root / "sentence_bert_config.json"
    if st.is_file():
        max_len = json.loads(st.read_text(encoding="utf-8")).get("max_seq_length")
        if max_len:
            out["doc_max_length"] = int(max_len)
            out["query_max_length"] = int(max_len)
    cfg = root / "config_sentence_transformers.json"
    if cfg.is_file():
        prompts = json.loads(cfg.read_text(encoding="utf-8")).get("prompts") or {}
        if "query" in prompts:
            out["query_prefix"] = prompts["query"]
        for key in ("document", "passage", "corpus"):
            if key in prompts:
                out["doc_prefix"] = prompts[key]
                break
    return out


def resolve_settings(path: str, **overrides) -> DenseSettings:
    """Explicit settings win over the model directory's, which win over the defaults."""
    found = sentence_transformers_settings(path)
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(DenseSettings(), **{**found, **given})


def pool(hidden, mask, pooling: str, normalize: bool):
    """One vector per text from token states: cls | mean over real tokens | last real token
    (either padding side), as float32, optionally L2-normalised. Used by inference and training."""
    import torch

    if pooling == "cls":
        out = hidden[:, 0]
    elif pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        out = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    else:
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = (positions * mask).argmax(dim=1)
        out = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    out = out.float()
    return torch.nn.functional.normalize(out, p=2, dim=-1) if normalize else out


class DenseEncoder:
    def __init__(self, model: str, *, settings: DenseSettings | None = None, batch_size: int = 32,
                 device: str = "auto", quantize_int8: bool = False) -> None:
        import torch
        from transformers import AutoModel

        self.model_name = model
        self.path = resolve_model(model)
        self.settings = settings or resolve_settings(self.path)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.tokenizer, self.model = load_pretrained(model, AutoModel, self.path)
        self.model.eval().to(self.device)
        self.quantize_int8 = quantize_int8
        if quantize_int8:
            if self.device != "cpu":
                raise ValueError("int8 dynamic quantisation is a CPU path; use device='cpu'")
            # per-channel weight scales: per-tensor int8 cost all-MiniLM-L6-v2 0.0096 nDCG@10 on
            # SciFact, per-channel 0.0042 (scripts/bench_dense.py)
            from torch.ao.quantization import per_channel_dynamic_qconfig

            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def config(self) -> dict:
        return {"model": self.path, "fingerprint": fingerprint(self.path), "dim": self.dim,
                "int8": self.quantize_int8, **asdict(self.settings)}

    def _pool(self, hidden, mask):
        return pool(hidden, mask, self.settings.pooling, self.settings.normalize)

    def _encode(self, texts: Sequence[str], max_length: int, prefix: str, progress: bool = False) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        batches = length_sorted_batches(self.tokenizer, [prefix + t for t in texts], max_length,
                                        self.batch_size, self.device, "encode dense" if progress else None)
        with torch.inference_mode():
            for rows, batch in batches:
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                                    enabled=self.device.startswith("cuda")):
                    hidden = self.model(**batch).last_hidden_state
                out[rows] = self._pool(hidden, batch["attention_mask"]).cpu().numpy()
        return out

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        s = self.settings
        return self._encode(texts, s.doc_max_length, s.doc_prefix, progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        s = self.settings
        return self._encode(texts, s.query_max_length, s.query_prefix)
