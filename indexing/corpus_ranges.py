"""A corpus file read in blocks by byte range, so many workers can read one file at once.

:func:`split_ranges` cuts a JSONL corpus into ``n`` contiguous byte ranges that start at line
starts (about equal in bytes; found with a few seeks, never a full read). :func:`iter_range`
streams the documents whose lines start inside one range, checked exactly as
:func:`indexing.corpus.iter_corpus` checks them; errors name the file and the line number
(counted from the start of the file only when an error is raised). Together the ranges read
every line once, in corpus order.

Duplicate doc ids are found within a range here; across ranges, by whoever joins them
(``retriever.shards``). Compressed corpora cannot be split by bytes and are refused.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Iterator

from indexing.corpus import Doc, PathLike, corpus_file, doc_from_record, vector_record
from indexing.errors import DataError

Range = tuple[int, int]  # [start, end) byte offsets


def splittable_file(path: PathLike) -> Path:
    """The corpus file of ``path`` (a BEIR directory or a JSONL file), refused if compressed."""
    file = corpus_file(path)
    if file.suffix == ".gz":
        raise DataError("a compressed corpus cannot be read by byte ranges; decompress it for a "
                        "sharded build", path=file)
    return file


def split_ranges(path: PathLike, n: int) -> list[Range]:
    """``n`` contiguous byte ranges covering the file, each starting at a line start. A range
    may be empty when the file has fewer lines than ``n`` (the caller decides what that means)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of ranges must be an integer >= 1, got {n!r}")
    file = splittable_file(path)
    size = file.stat().st_size
    cuts = [0]
    with open(file, "rb") as f:
        for i in range(1, n):
            target = max(cuts[-1], size * i // n)
            if target == 0:
                cuts.append(0)
                continue
            f.seek(target - 1)
            f.readline()  # to the end of the line holding byte target-1: the next line starts here
            cuts.append(min(f.tell(), size))
    cuts.append(size)
    return [(cuts[i], cuts[i + 1]) for i in range(n)]


def split_rows(path: PathLike, n: int, align: int) -> list[Range]:
    """``n`` contiguous byte ranges covering the file whose documents (non-blank lines) are cut
    only at multiples of ``align`` documents: range ``i`` holds whole blocks of ``align``
    documents (the last block may be short), the blocks shared out as evenly as possible. A
    model encodes documents in blocks of that size (length-sorted batches within a block), so
    shards cut this way encode every document exactly as one index does. One sequential read of
    the file (no parsing); a range is empty when there are fewer blocks than ``n``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of ranges must be an integer >= 1, got {n!r}")
    if isinstance(align, bool) or not isinstance(align, int) or align < 1:
        raise ValueError(f"align must be an integer >= 1, got {align!r}")
    file = splittable_file(path)
    size = file.stat().st_size
    starts, rows, pos = [], 0, 0
    with open(file, "rb") as f:
        for raw in f:
            body = raw[len(codecs.BOM_UTF8):] if pos == 0 and raw.startswith(codecs.BOM_UTF8) else raw
            if body.strip():
                if rows % align == 0:
                    starts.append(pos)
                rows += 1
            pos += len(raw)
    blocks = len(starts)

    def offset(j: int) -> int:  # where block j starts (the first block: at the file's start)
        return size if j >= blocks else 0 if j == 0 else starts[j]

    cut = [i * blocks // n for i in range(n + 1)]
    return [(offset(cut[i]), offset(cut[i + 1])) for i in range(n)]


def _line_number(file: Path, offset: int) -> int:
    """1-based number of the line starting at byte ``offset`` (reads the file up to it)."""
    count, done = 0, 0
    with open(file, "rb") as f:
        while done < offset:
            block = f.read(min(1 << 22, offset - done))
            if not block:
                break
            count += block.count(b"\n")
            done += len(block)
    return count + 1


def _lines(file: Path, rng: Range) -> Iterator[tuple[int, int, str]]:
    """(byte offset, line index within the range, text) of every line starting in ``rng``."""
    start, end = rng
    with open(file, "rb") as f:
        f.seek(start)
        pos, index = start, 0
        while pos < end:
            raw = f.readline()
            if not raw:
                break
            if pos == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
                here = pos
                pos += len(codecs.BOM_UTF8)
            else:
                here = pos
            pos += len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"invalid UTF-8 at byte {e.start}", path=file,
                                line=_line_number(file, here)) from None
            yield here, index, text.rstrip("\r\n")
            index += 1


def _records(file: Path, rng: Range) -> Iterator[tuple[int, dict]]:
    """(byte offset, JSON object) of every non-blank line starting in ``rng``."""
    for here, _, line in _lines(file, rng):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e).split(";")[0]
            raise DataError(f"malformed JSON: {msg}", path=file, line=_line_number(file, here)) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=file,
                            line=_line_number(file, here))
        yield here, obj


def iter_range(path: PathLike, rng: Range, vectors: bool = False) -> Iterator[Doc]:
    """The documents whose lines start in byte range ``rng``, in file order; with ``vectors``,
    JsonVectorCollection records (each Doc carries its ``vector``)."""
    file = splittable_file(path)
    seen: dict[str, int] = {}
    for here, obj in _records(file, rng):
        try:
            if vectors:
                doc, vector = vector_record(obj, file, 0)
                doc = Doc(doc.docid, doc.title, doc.text, vector)
            else:
                doc = doc_from_record(obj, file, 0)
        except DataError as e:  # re-raised with the real line number
            raise DataError(e.message, path=file, line=_line_number(file, here)) from None
        if doc.docid in seen:
            first = _line_number(file, seen[doc.docid])
            raise DataError(f"duplicate doc id {doc.docid!r} (first on line {first})", path=file,
                            line=_line_number(file, here))
        seen[doc.docid] = here
        yield doc


def count_range(path: PathLike, rng: Range) -> int:
    """Non-blank lines starting in ``rng`` (the documents it holds, if they are valid)."""
    file = splittable_file(path)
    return sum(1 for _, _, line in _lines(file, rng) if line.strip())
