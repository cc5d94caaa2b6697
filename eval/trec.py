"""TREC run files: `qid Q0 docid rank score tag`, one hit per line, and the tie rule.

Every searcher returns hits by score descending, then doc id (string) ascending. trec_eval
re-sorts a run by score and breaks ties by doc id DEScending, so a run with tied scores would be
evaluated in another order than the engine returned. ``ties="anserini"`` (the default, as
Anserini/Pyserini write runs) rounds each score to 4 decimals in float32 and lowers every score
tied with the one before it by 1e-6 per position (Anserini's ScoreTiesAdjusterReranker), so the
scores decrease in the engine's order and evaluators keep it; published Pyserini numbers are
computed this way. ``ties="trec"`` keeps the raw scores (trec_eval's rule).

Like Anserini's (``docs.scores[i] -= 1e-6f * dup``), the adjustment is float32 arithmetic, kept so
for parity: from a score of 16 up a float32 step is 1.9e-6 or more, so consecutive multiples of
1e-6 can round to the same value and hits of a run of ties can stay tied (at 20: 20.0, 19.999998,
19.999998); evaluators order those by doc id descending, as they do Anserini's runs. Where we
differ: Anserini's ``Math.round`` saturates at 2**31 - 1, so every score above 214748.3647 becomes
that one value; we keep the float32 value, and refuse a score whose float32 value x 1e4 overflows
(|score| above about 3.4e34), which would make every such hit inf and tied.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from indexing.errors import DataError
from indexing.io import atomic_open
from indexing.records import id_problem, read_lines
from indexing.results import Run, ranked


TIES = ("anserini", "trec")


ANSERINI_TOO_LARGE = ("is too large for the anserini tie rule (float32 score x 1e4 overflows above about "
                      "3.4e34); evaluate or write such a run with ties 'trec'")


def anserini_fits(score: float) -> bool:
    """Whether the anserini tie rule can take ``score``: its float32 value x 1e4 is finite."""
    if abs(score) < 3e34:  # the common case, without numpy
        return True
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float32(score) * np.float32(1e4)))


def anserini_scores(ranking: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Anserini's tie adjustment of a ranking (in order): float32 scores rounded to 1e-4, and each
    score within 1e-4 of the previous (adjusted) one lowered by 1e-6 x its run of ties.
    ValueError for a score the rule cannot take (|score| above about 3.4e34)."""
    if not ranking:
        return []
    raw = np.fromiter((score for _, score in ranking), dtype=np.float64, count=len(ranking))
    e4 = np.float32(1e4)
    with np.errstate(over="ignore", invalid="ignore"):
        y = raw.astype(np.float32) * e4  # Math.round(x * 1e4f) / 1e4f: Java's round is exact (half up), so
        # y + 0.5 is added in float64 (exact for any float32 y): in float32 an odd y in [2**23, 2**24) gave a
        # halfway sum that rounded to even (8388609 -> 8388610, tying scores Anserini keeps apart)
        rounded = np.floor(y.astype(np.float64) + 0.5).astype(np.float32) / e4
    bad = ~np.isfinite(rounded)
    if bad.any():
        docid, score = ranking[int(np.flatnonzero(bad)[0])]
        raise ValueError(f"doc {docid!r}: score {float(score)!r} {ANSERINI_TOO_LARGE}")
    adjusted = _tie_kernel()(rounded).tolist()  # (float32 throughout: every operand above is)
    return [(docid, s) for (docid, _), s in zip(ranking, adjusted)]


def _lower_ties(s: np.ndarray) -> np.ndarray:
    """The rounded float32 scores of a ranking, each within 1e-4 of the one before it (as
    adjusted) lowered by 1e-6 x its place in the run of ties, in place, in float32 arithmetic as
    Anserini's. Sequential (each test reads the previous adjusted score): compiled when numba is
    there (a ranking of 1,000: ~3.6 ms a query in numpy scalars before)."""
    e4, e6 = np.float32(1e-4), np.float32(1e-6)
    dup = 0
    previous = s[0]
    for i in range(1, s.shape[0]):
        x = s[i]
        if previous - x > e4:
            dup = 0
        else:
            dup += 1
            x = np.float32(x - e6 * np.float32(dup))
            s[i] = x
        previous = x
    return s


@functools.cache
def _tie_kernel():
    """``_lower_ties`` compiled, on first use (importing numba with this module cost every CLI
    command 0.18 s)."""
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - numba is a core dependency
        return _lower_ties
    return njit(cache=True, nogil=True)(_lower_ties)


def adjust_ties(run: Mapping[str, Mapping[str, float]], ties: str = "anserini") -> dict[str, dict[str, float]]:
    """The run as it is written and evaluated under a tie rule (see the module docstring)."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, not {ties!r}")
    if ties == "trec":
        return {q: dict(hits) for q, hits in run.items()}
    out = {}
    for q, hits in run.items():
        try:
            out[q] = dict(anserini_scores(ranked(hits)))
        except ValueError as e:
            raise ValueError(f"query {q!r}, {e}") from None
    return out


def _check_token(value: str, what: str) -> None:
    """Refuse what ``read_run`` would refuse to read back (the one rule, ``id_problem``)."""
    problem = "is empty or has whitespace" if not value or any(c.isspace() for c in value) else id_problem(value)
    if problem:
        raise ValueError(f"{what} {value!r} cannot be written to a TREC run ({problem.removeprefix('is ')})")


def write_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str],
              tag: str = "retriever", ties: str = "anserini") -> None:
    """Write `run` atomically; per query, hits go by score descending, ties by docid ascending,
    with scores adjusted by the tie rule ``ties`` so that evaluators keep that order.

    Scores are written with `repr(float(score))`, so float64 and float32 values round-trip exactly.
    """
    _check_token(tag, "tag")
    for qid, hits in run.items():
        _check_finite(qid, hits)
    run = adjust_ties(run, ties)
    good: set[str] = set()  # doc ids checked already (a run names the same documents again and again)
    with atomic_open(path) as f:
        for qid, hits in run.items():
            _check_token(qid, "query id")
            if qid.startswith("\ufeff"):  # (readers strip a byte-order mark from a file's first line)
                raise ValueError(f"query id {qid!r} cannot be written to a TREC run (it starts with a "
                                 "byte-order mark, U+FEFF)")
            for d in hits:
                if d not in good:
                    _check_token(d, "doc id")
                    good.add(d)
            f.write("".join(f"{qid} Q0 {d} {rank} {float(s)!r} {tag}\n"
                            for rank, (d, s) in enumerate(ranked(hits), 1)))


def _check_finite(qid: str, hits: Mapping[str, float]) -> None:
    try:
        finite = bool(np.isfinite(np.fromiter(hits.values(), dtype=np.float64, count=len(hits))).all())
    except (TypeError, ValueError, OverflowError):
        finite = False  # (not numbers: found one by one below, for the message)
    if not finite:
        for d, s in hits.items():
            if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)):
                raise ValueError(f"query {qid!r}, doc {d!r}: score {s!r} is not a number")
            try:
                float(s)
            except OverflowError:
                raise ValueError(f"query {qid!r}, doc {d!r}: score too large for a float (a "
                                 f"{int(s).bit_length()}-bit integer)") from None
            if not math.isfinite(float(s)):
                raise ValueError(f"query {qid!r}, doc {d!r}: score {float(s)} is not finite")


def _pair_line(path: Path, qid: str, docid: str) -> int:
    """Line of the first hit for (qid, docid); only used to report a duplicate."""
    for lineno, line in read_lines(path):
        cols = line.split()
        if len(cols) == 6 and cols[0] == qid and cols[2] == docid:
            return lineno
    raise AssertionError("unreachable: duplicate hit not found on rescan")


def read_run(path: str | os.PathLike[str], ties: str | None = None) -> Run:
    """Read a TREC run into {qid: {docid: score}}; malformed lines and repeated hits are DataErrors.
    With ``ties="anserini"``, so are scores that tie rule cannot take (see ``anserini_fits``)."""
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
        if ties == "anserini" and not anserini_fits(score):
            raise DataError(f"score {score_text!r} {ANSERINI_TOO_LARGE}", path=file, line=lineno)
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
