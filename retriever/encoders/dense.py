"""Dense (bi-encoder) embeddings with any Hugging Face encoder model.

``DenseModel`` is the one dense model: training fine-tunes it (``training.encoders``) and
``DenseEncoder`` wraps it for indexing and search. Settings that change the vectors — pooling
(cls | mean | last), L2 normalisation, query and document prefixes, max lengths — come from
explicit arguments, else from a sentence-transformers directory (``modules.json``,
``1_Pooling/config.json``, a Dense module, a Normalize module, ``sentence_bert_config.json``,
prompts), else defaults; ``DenseModel.save`` writes them back in that layout. A Dense module (a
linear map after pooling, identity or tanh activation; ``projection``) is applied before
normalisation; any other module type is refused by name rather than skipped. At inference texts are sorted by
length so batches carry little padding; on a GPU the transformer runs under bf16 autocast and
pooling in float32.

Matryoshka truncation: ``DenseEncoder(dim=D)`` keeps the first ``D`` components of every vector
(``truncate``), re-normalised when the model normalises; a model trained with Matryoshka losses
(``retriever train dense --matryoshka``) keeps its quality in those prefixes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from retriever.encoders.base import EncoderModel, bf16_autocast, check_batch_size, check_kind, inference_batches
from retriever.encoders.device import resolve_device
from retriever.encoders.model_dir import reading
from retriever.encoders.models import (fingerprint, load_pretrained, quiet_loading, resolve_model, st_modules,
                                       within_positions)

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
        for name in ("query_prefix", "doc_prefix"):  # (read back from manifests and model directories)
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize must be true or false, got {self.normalize!r}")
        for name in ("doc_max_length", "query_max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an integer of at least 2, got {value!r}")


def sentence_transformers_settings(path: str) -> dict:
    """Settings a sentence-transformers directory declares (empty for a plain HF model)."""
    root = Path(path)
    modules = st_modules(root)
    if not modules:
        return {}
    out: dict = {"normalize": False}
    for m in modules:
        kind = m["kind"]
        if kind not in ST_MODULES:
            raise ValueError(f"{root / 'modules.json'}: module {m.get('type')!r} is not supported (supported: "
                             f"{', '.join(ST_MODULES)})")
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


ST_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
ACTIVATIONS = {"torch.nn.modules.linear.Identity": None, "torch.nn.modules.activation.Tanh": "tanh"}


class Projection(torch.nn.Module):
    """A sentence-transformers Dense module: ``activation(x @ W.T + b)`` on pooled vectors, with
    identity or tanh activation; saved as ``2_Dense/config.json`` + ``model.safetensors``
    (``linear.weight``, ``linear.bias``), the layout sentence-transformers reads."""

    def __init__(self, linear: torch.nn.Linear, activation: str | None = None) -> None:
        super().__init__()
        self.linear, self.activation = linear, activation

    @property
    def out_features(self) -> int:
        return int(self.linear.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x.to(self.linear.weight.dtype))
        return torch.tanh(y) if self.activation == "tanh" else y

    @classmethod
    def load(cls, root: Path) -> "Projection":
        cfg_file = root / "config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        activation = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
        if activation not in ACTIVATIONS:
            raise ValueError(f"{cfg_file}: activation {activation!r} is not supported (identity or tanh)")
        try:
            n_in, n_out, bias = int(cfg["in_features"]), int(cfg["out_features"]), bool(cfg.get("bias", True))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{cfg_file}: in_features and out_features must be integers") from None
        if (root / "model.safetensors").is_file():
            weights = root / "model.safetensors"
        elif (root / "pytorch_model.bin").is_file():
            weights = root / "pytorch_model.bin"
        else:
            raise ValueError(f"{root}: a Dense module without weights (model.safetensors)")
        try:
            from safetensors.torch import load_file

            state = load_file(str(weights)) if weights.suffix == ".safetensors" else \
                torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:  # (a truncated file: SafetensorError, RuntimeError, EOFError, ...)
            raise ValueError(f"{weights}: not readable weights ({type(e).__name__}: "
                             f"{(str(e).strip().splitlines() or [''])[0]}); the model is incomplete") from None
        linear = torch.nn.Linear(n_in, n_out, bias=bias)
        try:
            linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
        except RuntimeError as e:
            raise ValueError(f"{root}: weights do not match {cfg_file} ({str(e).splitlines()[0]})") from None
        return cls(linear, ACTIVATIONS[activation])

    def save(self, root: Path) -> None:
        from safetensors.torch import save_file

        root.mkdir(parents=True, exist_ok=True)
        name = next(k for k, v in ACTIVATIONS.items() if v == self.activation)
        _write_json(root / "config.json", {"in_features": int(self.linear.in_features),
                                           "out_features": self.out_features,
                                           "bias": self.linear.bias is not None, "activation_function": name})
        save_file({f"linear.{k}": v.detach().contiguous().cpu() for k, v in self.linear.state_dict().items()},
                  str(root / "model.safetensors"))


def load_projection(path: str) -> Projection | None:
    """The Dense module a sentence-transformers directory declares (None when it has none)."""
    root = Path(path)
    dense = [m for m in st_modules(root) if m["kind"] == "Dense"]
    if len(dense) > 1:
        raise ValueError(f"{root / 'modules.json'}: more than one Dense module is not supported")
    return Projection.load(root / dense[0]["path"]) if dense else None


def resolve_settings(path: str, **overrides) -> DenseSettings:
    """Explicit settings win over the model directory's, which win over the defaults."""
    found = sentence_transformers_settings(path)
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(DenseSettings(), **{**found, **given})


def pool(hidden, mask, pooling: str, normalize: bool):
    """One vector per text from token states: cls | mean over real tokens | last real token
    (either padding side), as float32, optionally L2-normalised."""
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


def truncate(vectors: torch.Tensor, dim: int, normalize: bool) -> torch.Tensor:
    """The first ``dim`` components of each row (a Matryoshka prefix), L2-normalised again when
    the model's vectors are normalised. ``dim`` equal to the width returns ``vectors`` itself."""
    if dim == vectors.shape[-1]:
        return vectors
    out = vectors[..., :dim]
    return torch.nn.functional.normalize(out, p=2, dim=-1) if normalize else out


def check_dim(dim, model_dim: int) -> int:
    """``dim`` as a vector size for a model of ``model_dim`` dimensions (1 <= dim <= model_dim)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= model_dim:
        raise ValueError(f"dim must be an integer between 1 and the model's dimension {model_dim}, got {dim!r}")
    return dim


class DenseModel(EncoderModel):
    """A Hugging Face encoder with the pooling, normalisation and prefixes of ``DenseSettings``.

    ``model``: a directory, a pulled pack or a hub id. ``settings``: explicit settings, else the
    model directory's with ``overrides`` (pooling=..., normalize=..., None ignored) on top.
    ``tokenize`` cuts at ``doc_max_length`` / ``query_max_length``, the settings' lengths unless
    lowered (training does); ``save`` writes the settings, not those limits.
    """

    def __init__(self, model: str, *, settings: DenseSettings | None = None, **overrides) -> None:
        super().__init__()
        from transformers import AutoModel

        self.model_name = model
        self.path = resolve_model(model)
        with reading(self.path):  # a training run may be replacing the files
            self.settings = settings or resolve_settings(self.path, **overrides)
            self.tokenizer, self.model = load_pretrained(model, AutoModel, self.path)
            self.projection = load_projection(self.path)
        usable = within_positions(self.settings, self.model, model)  # (the settings, as saved, stay)
        self.doc_max_length = usable.doc_max_length
        self.query_max_length = usable.query_max_length

    @property
    def dim(self) -> int:
        return self.projection.out_features if self.projection is not None else int(self.model.config.hidden_size)

    def prefix(self, kind: str) -> str:
        return self.settings.query_prefix if check_kind(kind) == "query" else self.settings.doc_prefix

    def hidden_states(self, batch: dict) -> torch.Tensor:
        """The transformer's last token states, (texts x tokens x dim)."""
        return self.model(**batch).last_hidden_state

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One float32 vector per text from its token states (see ``pool``), through the
        projection when the model has one, then normalised when the settings say so."""
        if self.projection is None:
            return pool(hidden, mask, self.settings.pooling, self.settings.normalize)
        out = self.projection(pool(hidden, mask, self.settings.pooling, False)).float()
        return torch.nn.functional.normalize(out, p=2, dim=-1) if self.settings.normalize else out

    def encode(self, batch: dict, kind: str) -> torch.Tensor:
        return self.pool(self.hidden_states(batch), batch["attention_mask"])

    def config(self) -> dict:
        return {"kind": "dense", "source": self.model_name, **asdict(self.settings)}

    def save(self, out: str | Path) -> None:
        """Hugging Face weights + tokenizer + a sentence-transformers layout declaring pooling,
        normalisation, max length and prefixes (read back by ``resolve_settings``, and by
        sentence-transformers itself)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with quiet_loading():
            self.model.save_pretrained(out)
            self.tokenizer.save_pretrained(out)
        s = self.settings
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if self.projection is not None:
            modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
            self.projection.save(out / "2_Dense")
        if s.normalize:
            i = len(modules)
            modules.append({"idx": i, "name": str(i), "path": f"{i}_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (out / f"{i}_Normalize").mkdir(exist_ok=True)
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


class DenseEncoder:
    """Indexing and search with a ``DenseModel``: float32 numpy vectors, one row per text.

    Batches are length-sorted and run under ``torch.inference_mode``; on CUDA the transformer
    runs under bf16 autocast. ``quantize_int8``: dynamic int8 quantisation of the linear layers
    (CPU only). ``dim``: keep the first ``dim`` components of each vector (``truncate``; default
    all). ``config()`` is what an index manifest records (model path and fingerprint, dim, int8,
    settings; ``model_dim``, the model's own size, only when vectors are truncated).
    """

    def __init__(self, model: str, *, settings: DenseSettings | None = None, batch_size: int = 32,
                 device: str = "auto", quantize_int8: bool = False, dim: int | None = None) -> None:
        self.batch_size = check_batch_size(batch_size)
        self.device = resolve_device(device)
        if quantize_int8 and self.device != "cpu":
            raise ValueError("int8 dynamic quantisation is a CPU path; use device='cpu'")
        self.model = DenseModel(model, settings=settings)
        self.model.eval().to(self.device)
        self.model_name, self.path, self.settings = model, self.model.path, self.model.settings
        self.tokenizer = self.model.tokenizer
        self.quantize_int8 = quantize_int8
        if quantize_int8:
            # per-channel weight scales: per-tensor int8 cost all-MiniLM-L6-v2 0.0096 nDCG@10 on
            # SciFact, per-channel 0.0042 (scripts/bench_dense.py)
            from torch.ao.quantization import per_channel_dynamic_qconfig

            self.model.model = torch.ao.quantization.quantize_dynamic(
                self.model.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        self.model_dim = self.model.dim
        self.dim = self.model_dim if dim is None else check_dim(dim, self.model_dim)

    @property
    def truncated(self) -> bool:
        return self.dim < self.model_dim

    def config(self) -> dict:
        out = {"model": self.path, "fingerprint": fingerprint(self.path), "dim": self.dim,
               "int8": self.quantize_int8, **asdict(self.settings)}
        if self.truncated:  # absent otherwise, so untruncated manifests and cache keys stay as they were
            out["model_dim"] = self.model_dim
        return out

    def _encode(self, texts: Sequence[str], kind: str, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        batches = inference_batches(self.model, texts, kind, self.batch_size, self.device,
                                    "encode dense" if progress else None)
        with torch.inference_mode():
            for rows, batch in batches:
                with bf16_autocast(self.device):
                    hidden = self.model.hidden_states(batch)
                vectors = self.model.pool(hidden, batch["attention_mask"])
                if self.truncated:
                    vectors = truncate(vectors, self.dim, self.settings.normalize)
                out[rows] = vectors.cpu().numpy()
        return out

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self._encode(texts, "doc", progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "query")
