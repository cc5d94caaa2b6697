"""Small file helpers with one home: atomic writes (temp file in the same directory, fsync,
rename), ``.npy`` loading that threads can share, and the size of a directory."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import numpy as np

# numpy parses a .npy header with ast.literal_eval, and CPython 3.11 can fail two concurrent
# parses with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905):
# every header is read under this lock (searching threads load indexes while others are built)
NPY_HEADER_LOCK = threading.Lock()


def load_npy(path: str | os.PathLike, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` of a plain array (no pickles), safe to call from several threads at once."""
    with NPY_HEADER_LOCK:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", mode_bits: int | None = None) -> Iterator[IO]:
    """Write ``path`` through a temporary sibling that replaces it only when the block ends
    without an error: readers see the old file or the new one, never a part."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, (0o666 if mode_bits is None else mode_bits) & ~mask)  # mkstemp makes it 0600
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """JSON (UTF-8, a final newline) written atomically; objects JSON cannot hold become str."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def dir_size(path: str | os.PathLike) -> int:
    """Bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())
