"""A model directory that a training run replaces in place while others may read it.

A training run's OUT holds its best model's files beside the run's own (logs, checkpoints, the
card), so a new best model cannot be swapped in as one directory. :func:`replace_model` writes it
whole into ``OUT/.model.partial``, commits it by renaming that to ``OUT/.model.ready``, then renames
its files into OUT one by one, all under an exclusive ``flock`` on ``OUT/.model.lock``. A kill in
that loop leaves ``.model.ready`` holding the files not yet moved; whoever next opens the
directory as a model (:func:`reading`) finishes the move first (roll forward), so what is read is
never a mix of two models. Readers hold a shared lock on the same file while they load: a live
swap waits for them, and they for it. Directories without the lock file (any model not written by
a training run) are read as they are, with nothing written.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from indexing.io import saving

PARTIAL, READY, LOCK = ".model.partial", ".model.ready", ".model.lock"
log = logging.getLogger("retriever")


def replace_model(out: Path, save: Callable[[Path], None]) -> None:
    """Replace the model files in ``out`` by what ``save(directory)`` writes, as described above."""
    out = Path(out)
    staging = out / PARTIAL
    shutil.rmtree(staging, ignore_errors=True)
    with saving(staging, partial=staging):
        save(staging)
    with _locked(out, fcntl.LOCK_EX):
        _roll_forward(out)  # a swap an earlier, killed writer began: finished before ours
        os.replace(staging, out / READY)  # the commit point: from here on, the new model wins
        _roll_forward(out)


@contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Held while the files of the model directory ``path`` are read: waits for a swap in
    progress and finishes one that was cut short. Notes a training run that has not finished."""
    root = Path(path)
    if not (root / LOCK).is_file() and not (root / READY).is_dir():
        yield
        return
    if (root / "training_config.json").is_file() and not (root / "training_summary.json").is_file():
        log.warning("model directory %s is from a training run that has not finished (no "
                    "training_summary.json): it holds the best model so far", root)
    with _locked(root, fcntl.LOCK_SH) as fd:
        if (root / READY).is_dir():
            fcntl.flock(fd, fcntl.LOCK_EX)  # a writer died mid-swap: finish its move
            try:
                _roll_forward(root)
            except OSError as e:
                raise OSError(e.errno, f"model directory {root}: a training run was killed while it replaced "
                              f"the model, and finishing that ({root / READY} -> {root}) failed "
                              f"({e.strerror}); rerun with write access to the directory") from None
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield


def _roll_forward(out: Path) -> None:
    ready = out / READY
    if not ready.is_dir():
        return
    for p in sorted(ready.rglob("*")):
        if p.is_file():
            dest = out / p.relative_to(ready)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
    shutil.rmtree(ready)


@contextmanager
def _locked(root: Path, how: int) -> Iterator[int]:
    try:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # a reader without write access: the lock file exists (checked above)
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        fd = os.open(root / LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, how)
        yield fd
    finally:
        os.close(fd)  # closing drops the lock
