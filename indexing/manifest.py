"""The index directory contract: ``manifest.json``, ``docids.txt`` and checksummed arrays.

Every index kind writes through :class:`IndexWriter`, which builds into a temporary sibling
directory and renames it into place only when everything is written, so a crash leaves the old
index (or none), never half of one. :func:`read_manifest` refuses a directory whose format
version, file sizes or checksums do not match what its manifest recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCIDS = "docids.txt"


class IndexFormatError(Exception):
    """An index directory that cannot be used: missing, corrupt, or of another format."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class IndexWriter:
    """Writes an index directory atomically.

    Use as a context manager; files go into ``self.tmp`` and the whole directory appears at
    ``out`` on successful exit. An existing ``out`` is replaced only when ``overwrite`` is set.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False) -> None:
        self.out = Path(out).absolute()
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} already exists (use --overwrite, or overwrite=True, to replace it)")
        if self.out.exists() and not (self.out / MANIFEST).is_file():
            raise FileExistsError(f"{self.out} exists and is not an index; refusing to replace it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.out.name}.tmp-", dir=self.out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes it private; an index is not

    def path(self, name: str) -> Path:
        return self.tmp / name

    def save_array(self, name: str, array: np.ndarray) -> None:
        np.save(self.tmp / name, np.ascontiguousarray(array), allow_pickle=False)

    def write_docids(self, docids: Iterable[str]) -> None:
        with open(self.tmp / DOCIDS, "w", encoding="utf-8", newline="\n") as f:
            for d in docids:
                f.write(d)
                f.write("\n")

    def write_json(self, name: str, obj) -> None:
        with open(self.tmp / name, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)

    def finish(self, manifest: dict) -> None:
        files = {}
        for p in sorted(self.tmp.rglob("*")):
            if p.is_file():
                rel = p.relative_to(self.tmp).as_posix()
                files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        manifest = {
            "format_version": FORMAT_VERSION,
            **manifest,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        with open(self.tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        if self.out.exists():
            old = self.out.with_name(f"{self.out.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.tmp.exists():
            self.abort()


def read_manifest(path: str | os.PathLike, verify: bool = True) -> dict:
    """Read and check an index manifest; ``verify`` also recomputes file checksums."""
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise IndexFormatError(f"{root}: no such index directory")
    if not mpath.is_file():
        raise IndexFormatError(f"{mpath}: missing; {root} is not a retriever index")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise IndexFormatError(f"{mpath}:{e.lineno}: corrupt manifest ({e.msg})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{mpath}: index format version {version!r}, this retriever reads {FORMAT_VERSION}; "
            "rebuild the index with `retriever index`"
        )
    for name, info in manifest.get("files", {}).items():
        p = root / name
        if not p.is_file():
            raise IndexFormatError(f"{p}: missing (listed in {mpath})")
        if p.stat().st_size != info["bytes"]:
            raise IndexFormatError(
                f"{p}: {p.stat().st_size} bytes, manifest says {info['bytes']}; the index is corrupt"
            )
        if verify and sha256_file(p) != info["sha256"]:
            raise IndexFormatError(f"{p}: checksum does not match {mpath}; the index is corrupt")
    return manifest


def read_docids(path: str | os.PathLike) -> list[str]:
    with open(Path(path) / DOCIDS, encoding="utf-8", newline="\n") as f:
        return f.read().split("\n")[:-1]


def load_array(root: str | os.PathLike, name: str, mmap: bool = True) -> np.ndarray:
    return np.load(Path(root) / name, mmap_mode="r" if mmap else None, allow_pickle=False)
