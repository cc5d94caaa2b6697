"""The one error type for bad input files."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data; `str(err)` is ``"{path}:{line}: {message}"`` (no ``:{line}`` if unknown)."""

    def __init__(self, message: str, *, path: str | os.PathLike[str], line: int | None = None):
        self.message = message
        self.path = os.fspath(path)
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")
