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


def save_npy(path: str | os.PathLike, array) -> None:
    """``np.save`` (no pickles), then the file's size checked: on a full filesystem np.save can
    write a short file without raising (4,096 of 4,128 bytes, measured on tmpfs), which an index's
    manifest would then have checksummed as it was."""
    array = np.ascontiguousarray(array)
    np.save(path, array, allow_pickle=False)
    path = os.fspath(path) if os.fspath(path).endswith(".npy") else os.fspath(path) + ".npy"
    with open(path, "rb") as f, NPY_HEADER_LOCK:
        fmt = np.lib.format
        try:
            read_header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
            read_header(f)
            expected = f.tell() + array.nbytes
        except ValueError:  # the header itself cut short
            expected = None
    written = os.path.getsize(path)
    if written != expected:
        raise OSError(errno.ENOSPC, f"could not be written ({written:,} of "
                      f"{'more' if expected is None else f'{expected:,}'} bytes; disk full?)", path)


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
    except BaseException as e:
        failure = named_write_failure(e, out)
        Path(tmp).unlink(missing_ok=True)
        if failure is None:
            raise
        raise failure from e
    finally:
        os.close(held)


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_write_failure(e: BaseException) -> bool:
    """An OSError that only a write raises: a full disk or quota, a file past its size limit, or
    numpy's short write ("N requested and M written", no errno)."""
    if not isinstance(e, OSError):
        return False
    return e.errno in _WRITE_ERRNOS or (e.errno is None and " requested and " in str(e) and str(e).endswith(" written"))


def named_write_failure(e: BaseException, path: str | os.PathLike) -> OSError | None:
    """``write_failure(e, path)`` when ``e`` is a write failure that names no file, else None."""
    return write_failure(e, path) if is_write_failure(e) and e.filename is None else None


def write_failure(e: BaseException, path: str | os.PathLike) -> OSError:
    """``e`` as an OSError naming ``path`` (what was being written) and the space left there
    (measured now: call it before removing what the failed write left)."""
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        left = shutil.disk_usage(where).free
        free = f"; {left:,} bytes were free there{' (disk full?)' if left < 64 << 20 else ''}"
    except OSError:
        free = ""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
    code = getattr(e, "errno", None) or (errno.ENOSPC if is_write_failure(e) else errno.EIO)  # numpy's short write: no errno
    return OSError(code, f"could not be written ({reason}){free}", str(path))


@contextmanager
def saving(path: str | os.PathLike, partial: str | os.PathLike | None = None) -> Iterator[None]:
    """Around a library's write of ``path`` (``torch.save``, safetensors, ``save_pretrained``):
    its failure (torch's RuntimeError, safetensors' SafetensorError, an OSError without a file
    name: what a full disk gives) becomes an OSError naming ``path`` and the space left there;
    ``partial`` (what the write had made so far) is removed first, freeing the space it took."""
    try:
        yield
    except Exception as e:
        named = isinstance(e, OSError) and e.filename is not None
        ours = (isinstance(e, (OSError, RuntimeError)) or type(e).__name__ == "SafetensorError"
                or "(os error " in str(e))  # the tokenizers library's plain Exception: "... (os error 28)"
        failure = write_failure(e, path) if ours and not named else None
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        if failure is None:
            raise
        raise failure from e


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
