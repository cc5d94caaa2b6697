"""Small file helpers with one home: atomic writes (temp file in the same directory, fsync,
rename), ``.npy`` loading that threads can share, and the size of a directory."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
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
    _sweep_abandoned(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    held = os.dup(fd)  # the lock lasts until this closes, after the rename
    try:
        try:
            fcntl.flock(held, fcntl.LOCK_EX)  # held while it is written: a sweep leaves it alone
        except OSError:  # a filesystem without locks: its sweeps leave every file alone too
            pass
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
    finally:
        os.close(held)


@contextmanager
def saving(path: str | os.PathLike, partial: str | os.PathLike | None = None) -> Iterator[None]:
    """Around a library's write of ``path`` (``torch.save``, safetensors, ``save_pretrained``):
    its failure (torch's RuntimeError, safetensors' SafetensorError, an OSError without a file
    name: what a full disk gives) becomes an OSError naming ``path`` and the space left there;
    ``partial`` (what the write had made so far) is removed first, freeing the space it took."""
    try:
        yield
    except Exception as e:
        where = Path(path)
        while not where.exists() and where != where.parent:
            where = where.parent
        try:  # measured before the partial write is removed: what the writer met
            left = shutil.disk_usage(where).free
            free = f"; {left:,} bytes were free there{' (disk full?)' if left < 64 << 20 else ''}"
        except OSError:
            free = ""
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, OSError) and e.filename is not None:
            raise
        if not isinstance(e, (OSError, RuntimeError)) and type(e).__name__ != "SafetensorError":
            raise
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
        raise OSError(getattr(e, "errno", None) or errno.EIO, f"could not be written ({reason}){free}",
                      str(path)) from e


ABANDONED_AFTER_S = 60.0


def _sweep_abandoned(out: Path) -> None:
    """Remove the temporary siblings of ``out`` whose writers died (killed mid-write): unlocked
    and untouched for ``ABANDONED_AFTER_S``. A live writer holds its file's lock from the moment
    it exists but for the instant between ``mkstemp`` and ``flock``, which the age covers."""
    try:
        names = [n for n in os.listdir(out.parent) if n.startswith(f".{out.name}.") and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        stale = out.parent / name
        try:
            fd = os.open(stale, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime < ABANDONED_AFTER_S:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            stale.unlink(missing_ok=True)
        except OSError:  # locked: its writer is alive
            continue
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """JSON (UTF-8, a final newline) written atomically; objects JSON cannot hold become str."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def dir_size(path: str | os.PathLike) -> int:
    """Bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())
