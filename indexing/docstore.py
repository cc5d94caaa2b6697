"""Stored document text, so search results can show a title and snippet without the corpus.

``docs.jsonl`` holds one ``{"title", "text"}`` object per internal id and ``docs_offsets.npy``
the byte offset of each line, so one document is read with a single seek.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from indexing.manifest import IndexFormatError, IndexWriter, load_array

DOCS = "docs.jsonl"
OFFSETS = "docs_offsets.npy"


class DocStoreWriter:
    def __init__(self, writer: IndexWriter) -> None:
        self._writer = writer
        self._f = open(writer.path(DOCS), "wb")
        self._offsets = [0]

    def add(self, title: str, text: str) -> None:
        line = json.dumps({"title": title, "text": text}, ensure_ascii=False).encode("utf-8") + b"\n"
        self._f.write(line)
        self._offsets.append(self._offsets[-1] + len(line))

    def close(self, order=None) -> None:
        """Finish the store; ``order`` (new row i = added document ``order[i]``) rewrites it in
        another order (an index that renumbered its documents)."""
        self._f.close()
        offsets = np.asarray(self._offsets, dtype=np.int64)
        if order is not None:
            path = self._writer.path(DOCS)
            tmp = path.with_name(path.name + ".tmp")
            new = [0]
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                for i in np.asarray(order):
                    start, end = int(offsets[i]), int(offsets[i + 1])
                    src.seek(start)
                    dst.write(src.read(end - start))
                    new.append(new[-1] + end - start)
            os.replace(tmp, path)
            offsets = np.asarray(new, dtype=np.int64)
        self._writer.save_array(OFFSETS, offsets)


class DocStore:
    """Reads the stored text of the index generation it was opened on: the file is opened once
    and read with ``pread``, so an index rebuilt (renamed over) later does not change what this
    store returns."""

    def __init__(self, root: str | Path) -> None:
        self._fd = None  # __del__ runs even when __init__ raises: it must find no descriptor to close
        self.path = Path(root) / DOCS
        self.offsets = load_array(root, OFFSETS)
        fd = os.open(self.path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        off = self.offsets
        if off.ndim != 1 or off.dtype.kind not in "iu" or len(off) == 0 or int(off[0]) != 0 \
                or int(off[-1]) != size or not (np.diff(off) >= 0).all():
            os.close(fd)  # (closing it twice could close another thread's file that reused the number)
            raise IndexFormatError(f"{self.path}: offsets in {OFFSETS} do not describe this file; "
                                   "the index is corrupt")
        self._fd = fd

    @staticmethod
    def exists(root: str | Path) -> bool:
        return (Path(root) / DOCS).is_file()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"document row {i} outside the store (0..{len(self) - 1})")
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        raw = os.pread(self._fd, end - start, start)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IndexFormatError(f"{self.path}: row {i} is not a stored document; the index is "
                                   "corrupt") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except (AttributeError, OSError):
            pass
