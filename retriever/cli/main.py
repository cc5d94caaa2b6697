"""The ``retriever`` command line. Heavy modules are imported inside commands."""

from __future__ import annotations

import math
import os
from pathlib import Path

import click

from retriever import kinds

KIND_NAMES = tuple(kinds.names())  # the built-in kinds (their modules load on use)


class _Group(click.Group):
    """Turns the errors users cause (bad files, bad indexes, bad options, unwritable paths) into
    one clean line and exit status 1; ``--debug`` (or RETRIEVER_DEBUG=1) shows the traceback."""

    def invoke(self, ctx):
        from indexing.errors import DataError
        from indexing.manifest import IndexBusyError, IndexFormatError

        if ctx.params.get("debug"):
            return super().invoke(ctx)
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except (DataError, IndexFormatError, IndexBusyError) as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(_os_error(e)) from None
        except (ValueError, TypeError, ImportError, KeyError) as e:
            raise click.ClickException(str(e) if not isinstance(e, KeyError) else f"not found: {e}") from None


def _os_error(e: OSError) -> str:
    """``path: reason`` for an OSError (the target of a rename when there is one; the first file
    of a ``shutil`` copy that failed on several, not the list's repr)."""
    import shutil

    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        first = e.args[0][0]
        more = len(e.args[0]) - 1
        if isinstance(first, tuple) and len(first) == 3:
            return f"{first[1]}: {first[2]}" + (f" (and {more} more files)" if more else "")
    if isinstance(e, (FileExistsError, FileNotFoundError)) and e.filename is None:
        return str(e)
    path = e.filename2 if e.filename2 is not None else e.filename
    reason = e.strerror or str(e)
    return f"{path}: {reason}" if path is not None else reason


class _Finite(click.ParamType):
    """A finite float, optionally bounded (``retriever index --k1 nan`` is a usage error)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, open_low: bool = False,
                 open_high: bool = False) -> None:
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            x = value
        else:
            try:
                x = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (x < self.low or (self.open_low and x == self.low)):
            self.fail(f"{x:g} must be {'>' if self.open_low else '>='} {self.low:g}", param, ctx)
        if self.high is not None and (x > self.high or (self.open_high and x == self.high)):
            self.fail(f"{x:g} must be {'<' if self.open_high else '<='} {self.high:g}", param, ctx)
        return x


FINITE = _Finite()
NONNEG = _Finite(low=0.0)
POSITIVE = _Finite(low=0.0, open_low=True)
AT_LEAST_1 = click.IntRange(min=1)
AT_LEAST_0 = click.IntRange(min=0)
FRACTION = _Finite(0.0, 1.0, open_low=True, open_high=True)


def _output_file(path: Path | None, what: str) -> None:
    """Refuse an output file path that cannot be written, before any work is done."""
    if path is None:
        return
    if path.is_dir():
        raise click.UsageError(f"{what} {path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    here = parent
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir() or not os.access(here, os.W_OK | os.X_OK):
        raise click.UsageError(f"{what} {path}: cannot write in {here}")


class _Dataset(click.ParamType):
    """A BEIR dataset directory, or a dataset name (``beir/scifact``, ``irds:ID``) resolved and
    materialised once through ir_datasets (``eval.datasets``); ``files`` also accepts a JSONL file."""

    name = "dataset"

    def __init__(self, files: bool = False) -> None:
        self.files = files

    def convert(self, value, param, ctx):
        from eval.datasets import resolve
        from indexing.errors import DataError

        if isinstance(value, Path):
            return value
        try:
            path = resolve(value)
        except DataError as e:
            self.fail(str(e), param, ctx)
        if not path.exists():
            self.fail(f"{value}: no such directory or dataset name (see `retriever datasets list`)", param, ctx)
        if path.is_file() and not self.files:
            self.fail(f"{value}: expected a BEIR dataset directory or a dataset name", param, ctx)
        return path


DATASET = _Dataset()
CORPUS = _Dataset(files=True)


def _split_guard(split: str, why: str) -> None:
    """Refuse the test split, by its resolved name (``./test`` and ``../qrels/test`` too)."""
    from eval.beir import is_test_split

    if is_test_split(split):
        raise click.UsageError(why)


@click.group(cls=_Group)
@click.version_option(package_name="retriever")
@click.option("--debug", is_flag=True, envvar="RETRIEVER_DEBUG",
              help="Show the full traceback of an error (also RETRIEVER_DEBUG=1).")
def main(debug) -> None:
    """Dense and learned-sparse retrieval with BEIR evaluation."""

def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"expected finite numbers, got {text!r}")
    return values

