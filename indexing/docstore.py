"""Stored document text, so search results can show a title and snippet without the corpus.

``docs.jsonl`` holds one ``{"title", "text"}`` object per internal id and ``docs_offsets.npy``
the byte offset of each line, so one document is read with a single seek.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from indexing.manifest import IndexWriter, load_array

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

    def close(self) -> None:
        self._f.close()
        self._writer.save_array(OFFSETS, np.asarray(self._offsets, dtype=np.int64))


class DocStore:
    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / DOCS
        self.offsets = load_array(root, OFFSETS)

    @staticmethod
    def exists(root: str | Path) -> bool:
        return (Path(root) / DOCS).is_file()

    def get(self, i: int) -> dict:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        with open(self.path, "rb") as f:
            f.seek(start)
            return json.loads(f.read(end - start))
