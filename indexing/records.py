"""Reading the text files users give us: lines (UTF-8, BOM, CRLF, .gz), JSONL records, ids.

Every failure is a :class:`indexing.errors.DataError` naming the file and line; nothing else
escapes, whatever the bytes (``tests/test_fuzz_readers.py``).
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indexing.errors import DataError

_SPACE = re.compile(r"\s")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # only from JSON \u escapes; such strings cannot be encoded


def id_problem(ident: str, *, whitespace_ok: bool = False) -> str | None:
    """Why `ident` cannot be an id, or None: empty, whitespace, control characters, lone surrogates.

    Control characters and lone surrogates would reach pytrec_eval, which cuts ids at a NUL and
    crashes on surrogates.
    """
    if ident and ident.isprintable() and (whitespace_ok or " " not in ident):
        return None  # fast path: whitespace other than " ", controls and surrogates are unprintable
    if not ident or (not whitespace_ok and _SPACE.search(ident)):
        return "is empty or contains whitespace"
    if _CONTROL.search(ident):
        return "contains a control character"
    if _SURROGATE.search(ident):
        return "contains a lone surrogate (an unpaired \\u escape)"
    return None


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its CR/LF); strips a UTF-8 BOM; reads .gz too.

    Every failure is a DataError: a directory, an unreadable file, invalid UTF-8, a read error,
    and for .gz files a corrupt or truncated stream (found only as it is read).
    """
    if path.is_dir():
        raise DataError("is a directory, expected a file", path=path)
    gz = path.suffix == ".gz"
    opener: Any = gzip.open if gz else open
    try:
        f = opener(path, "rb")
    except OSError as e:
        raise DataError(f"cannot open: {e.strerror or e}", path=path) from None
    except ValueError as e:  # e.g. a NUL byte in the path
        raise DataError(f"cannot open: {e}", path=path) from None
    lineno = 0
    with f:
        try:
            for raw in f:
                lineno += 1
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"invalid UTF-8 at byte {e.start}", path=path, line=lineno) from None
                yield lineno, line.rstrip("\r\n")
        except (OSError, EOFError, zlib.error) as e:  # raised by the read, not by the consumer
            if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile):
                message = f"read error after line {lineno}: {e.strerror or e}"
            else:  # BadGzipFile (not gzip, bad CRC), EOFError (truncated), zlib.error (bad data)
                message = f"corrupt or truncated gzip data after line {lineno}: {e}"
            raise DataError(message, path=path) from None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank JSONL line."""
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg} (column {e.colno})", path=path, line=lineno) from None
        except ValueError as e:  # an integer over Python's digit limit
            raise DataError(f"malformed JSON: {str(e).split(';')[0]}", path=path, line=lineno) from None
        except RecursionError:
            raise DataError("malformed JSON: nested too deeply", path=path, line=lineno) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=lineno)
        yield lineno, obj


def record_id(obj: dict[str, Any], what: str, path: Path, lineno: int) -> str:
    key = "_id" if "_id" in obj else "id" if "id" in obj else None
    if key is None:
        raise DataError(f"missing {what} id ('_id' or 'id')", path=path, line=lineno)
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{what} id {key!r} must be a string or integer, got {type(value).__name__}",
                        path=path, line=lineno)
    ident = str(value)
    problem = id_problem(ident)
    if problem:
        raise DataError(f"{what} id {ident!r} {problem}", path=path, line=lineno)
    return ident


def string_field(obj: dict[str, Any], key: str, path: Path, lineno: int) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"field {key!r} must be a string, got {type(value).__name__}", path=path, line=lineno)
    if not value.isascii() and _SURROGATE.search(value):
        raise DataError(f"field {key!r} contains a lone surrogate (an unpaired \\u escape)",
                        path=path, line=lineno)
    return value


def first_line(path: Path, what: str, ident: str, nth: int = 1) -> int:
    """Line of the ``nth`` record with this id (only used to report a duplicate)."""
    for lineno, obj in read_jsonl(path):
        if record_id(obj, what, path, lineno) == ident:
            nth -= 1
            if nth == 0:
                return lineno
    raise AssertionError("unreachable: duplicate id not found on rescan")
