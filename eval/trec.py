"""TREC run files: `qid Q0 docid rank score tag`, one hit per line."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from indexing.errors import DataError
from indexing.io import atomic_open
from indexing.records import id_problem, read_lines
from indexing.results import Run


def _check_token(value: str, what: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} cannot be written to a TREC run (empty or has whitespace)")


def write_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str],
              tag: str = "retriever") -> None:
    """Write `run` atomically; per query, hits go by score descending, ties by docid ascending.

    Scores are written with `repr(float(score))`, so float64 and float32 values round-trip exactly.
    """
    _check_token(tag, "tag")
    with atomic_open(path) as f:
        for qid, hits in run.items():
            _check_token(qid, "query id")
            scored = [(float(s), d) for d, s in hits.items()]
            for s, d in scored:
                _check_token(d, "doc id")
                if not math.isfinite(s):
                    raise ValueError(f"query {qid!r}, doc {d!r}: score {s} is not finite")
            scored.sort(key=lambda x: (-x[0], x[1]))
            for rank, (s, d) in enumerate(scored, 1):
                f.write(f"{qid} Q0 {d} {rank} {s!r} {tag}\n")


def _pair_line(path: Path, qid: str, docid: str) -> int:
    """Line of the first hit for (qid, docid); only used to report a duplicate."""
    for lineno, line in read_lines(path):
        cols = line.split()
        if len(cols) == 6 and cols[0] == qid and cols[2] == docid:
            return lineno
    raise AssertionError("unreachable: duplicate hit not found on rescan")


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run into {qid: {docid: score}}; malformed lines and repeated hits are DataErrors."""
    file = Path(path)
    run: Run = {}
    for lineno, line in read_lines(file):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 6:
            raise DataError(f"expected 6 columns (qid Q0 docid rank score tag), got {len(cols)}",
                            path=file, line=lineno)
        qid, _, docid, rank, score_text, _ = cols
        try:
            int(rank)
            score = float(score_text)
        except ValueError:
            raise DataError(f"bad rank {rank!r} or score {score_text!r}", path=file, line=lineno) from None
        if not math.isfinite(score):
            raise DataError(f"score {score_text!r} is not finite", path=file, line=lineno)
        if not (qid.isprintable() and docid.isprintable()):  # fast path; control characters are not
            for what, ident in (("query", qid), ("doc", docid)):
                problem = id_problem(ident)
                if problem:
                    raise DataError(f"{what} id {ident!r} {problem}", path=file, line=lineno)
        hits = run.setdefault(qid, {})
        if docid in hits:
            first = _pair_line(file, qid, docid)
            raise DataError(f"repeated hit ({qid}, {docid}) (first on line {first})", path=file, line=lineno)
        hits[docid] = score
    return run
