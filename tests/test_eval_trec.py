"""eval.trec: TREC run files, deterministic order, exact scores, atomic writes, validation."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from indexing.errors import DataError
from eval.trec import read_run, write_run


def test_write_order_ranks_and_tag(tmp_path):
    out = tmp_path / "sub" / "run.trec"  # parent directory is created
    write_run({"q2": {"b": 0.5, "a": 0.5, "c": 2.0}, "q1": {"x": -1.0}}, out, tag="bm25", ties="trec")
    assert out.read_text().splitlines() == [
        "q2 Q0 c 1 2.0 bm25",
        "q2 Q0 a 2 0.5 bm25",  # tie: docid ascending
        "q2 Q0 b 3 0.5 bm25",
        "q1 Q0 x 1 -1.0 bm25",
    ]


def test_anserini_tie_adjustment(tmp_path):
    """Rounded to 1e-4 (float32), then 1e-6 less per tie, as Anserini writes runs."""
    from eval.trec import adjust_ties

    run = {"q": {"docA": 23.439316, "docT": 22.087432, "docS": 22.087432, "docZ": 21.602508, "docW": 21.60248}}
    adjusted = adjust_ties(run)["q"]
    assert list(adjusted) == ["docA", "docS", "docT", "docZ", "docW"]
    f32 = np.float32
    assert adjusted["docA"] == float(f32(23.4393)) and adjusted["docS"] == float(f32(22.0874))
    assert adjusted["docT"] == float(f32(f32(22.0874) - f32(1e-6)))
    assert adjusted["docW"] == float(f32(f32(21.6025) - f32(1e-6)))  # a tie after rounding
    write_run(run, tmp_path / "r.trec")
    back = read_run(tmp_path / "r.trec")["q"]
    assert sorted(back, key=lambda d: -back[d]) == list(adjusted)  # strictly decreasing: any tool keeps it


def test_float32_scores_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal(200) * 10).astype(np.float32)
    scores[5] = scores[6]  # a tie
    scores[7] = np.float32(0.1)  # %.6g would print 0.1 for a value that is not 0.1
    scores[8] = np.float32(123456.789)  # %.6g would lose digits
    run = {"q1": {f"d{i}": s for i, s in enumerate(scores)}}
    write_run(run, tmp_path / "r.trec", ties="trec")
    back = read_run(tmp_path / "r.trec")
    assert set(back["q1"]) == set(run["q1"])
    for d, s in run["q1"].items():
        assert back["q1"][d] == float(s)
        assert np.float32(back["q1"][d]) == s


def test_float64_scores_round_trip_exactly(tmp_path):
    run = {"q": {"a": 1 / 3, "b": 1e-300, "c": 123456789.123456789, "d": 1 / 61 + 1 / 62}}
    write_run(run, tmp_path / "r.trec", ties="trec")
    assert read_run(tmp_path / "r.trec") == run


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "run.trec"
    write_run({"q": {"d": 1.0}}, out)
    write_run({"q": {"e": 2.0}}, out)  # overwrite
    assert read_run(out) == {"q": {"e": 2.0}}
    with pytest.raises(ValueError, match="not finite"):
        write_run({"q": {"a": 1.0, "b": float("nan")}}, out)
    assert read_run(out) == {"q": {"e": 2.0}}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]


@pytest.mark.parametrize("run, tag", [
    ({"q 1": {"d": 1.0}}, "t"),
    ({"q": {"d\t1": 1.0}}, "t"),
    ({"q": {"": 1.0}}, "t"),
    ({"q": {"d": 1.0}}, "my tag"),
    ({"q": {"a\x00b": 1.0}}, "t"),  # what read_run refuses to read back: control characters,
    ({"q\x1b[31m": {"d": 1.0}}, "t"),  # lone surrogates (UnicodeEncodeError while writing, before)
    ({"q": {"a\ud800b": 1.0}}, "t"),
])
def test_write_rejects_unwritable_ids(tmp_path, run, tag):
    with pytest.raises(ValueError, match="cannot be written"):
        write_run(run, tmp_path / "r.trec", tag=tag)


def test_read_skips_blank_lines_and_crlf(tmp_path):
    f = tmp_path / "r.trec"
    f.write_bytes(b"q1 Q0 d1 1 3.5 t\r\n\r\nq1\t0\td2\t2\t-2e-3\tt\r\nq2 Q0 d1 1 1 t\r\n\r\n")
    assert read_run(f) == {"q1": {"d1": 3.5, "d2": -0.002}, "q2": {"d1": 1.0}}


@pytest.mark.parametrize("bad, fragment", [
    ("q1 Q0 d9 1 2.0", "expected 6 columns"),
    ("q1 Q0 d9 1 2.0 t extra", "got 7"),
    ("q1 Q0 d9 1 high t", "score 'high'"),
    ("q1 Q0 d9 one 2.0 t", "bad rank 'one'"),
    ("q1 Q0 d9 1 nan t", "not finite"),
    ("q1 Q0 d1 5 0.1 t", "repeated hit (q1, d1) (first on line 1)"),
])
def test_read_bad_line_names_file_and_line(tmp_path, bad, fragment):
    f = tmp_path / "r.trec"
    f.write_text(f"q1 Q0 d1 1 3.0 t\nq2 Q0 d1 1 3.0 t\n\n{bad}\nq3 Q0 d1 1 1.0 t\n")
    with pytest.raises(DataError) as exc:
        read_run(f)
    assert exc.value.line == 4
    assert str(exc.value).startswith(f"{f}:4: ")
    assert fragment in str(exc.value)


def test_read_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="cannot open"):
        read_run(tmp_path / "absent.trec")


@pytest.mark.parametrize("bad, fragment", [
    ("q\x001 Q0 d9 1 2.0 t", "query id 'q\\x001' contains a control character"),
    ("q1 Q0 d\x7f 1 2.0 t", "doc id 'd\\x7f' contains a control character"),
    ("q1 Q0 d9 " + "9" * 5000 + " 2.0 t", "bad rank"),
])
def test_read_odd_ids_and_huge_rank(tmp_path, bad, fragment):
    # a NUL in an id would be cut there by pytrec_eval ("q\x001" read as "q")
    f = tmp_path / "r.trec"
    f.write_text(f"q1 Q0 d1 1 3.0 t\n{bad}\n")
    with pytest.raises(DataError) as exc:
        read_run(f)
    assert exc.value.line == 2
    assert fragment in str(exc.value)


def test_read_gzip_and_corrupt_gzip(tmp_path):
    good = gzip.compress(b"q1 Q0 d1 1 3.0 t\n" * 1 + b"".join(b"q2 Q0 d%d %d 1.0 t\n" % (i, i) for i in range(300)))
    f = tmp_path / "r.trec.gz"
    f.write_bytes(good)
    assert len(read_run(f)["q2"]) == 300
    f.write_bytes(good[: len(good) // 2])  # truncated: used to raise EOFError
    with pytest.raises(DataError, match="corrupt or truncated gzip data"):
        read_run(f)
    f.write_bytes(b"q1 Q0 d1 1 3.0 t\n")  # not gzip at all: used to raise gzip.BadGzipFile
    with pytest.raises(DataError, match="corrupt or truncated gzip data after line 0"):
        read_run(f)


def test_read_directory(tmp_path: Path):
    with pytest.raises(DataError, match="is a directory, expected a file"):
        read_run(tmp_path)


def test_scores_the_anserini_rule_cannot_take_are_refused(tmp_path):
    """x 1e4 in float32 overflows above about 3.4e34: every such hit became inf and tied, and the
    metric changed silently. The run is refused (file and line when read); ties="trec" keeps it."""
    from eval.metrics import evaluate
    from eval.trec import adjust_ties, anserini_fits

    assert anserini_fits(3.4e34) and not anserini_fits(3.5e34) and not anserini_fits(-1e300)
    run = {"q": {"a": 2e35, "b": 1e35}}
    with pytest.raises(ValueError, match="query 'q', doc 'a': score 2e\\+35 is too large for the anserini"):
        adjust_ties(run)
    with pytest.raises(ValueError, match="too large"):
        evaluate({"q": {"b": 1}}, run, ["mrr@10"])
    assert evaluate({"q": {"b": 1}}, run, ["mrr@10"], ties="trec").metrics["mrr@10"] == 0.5
    with pytest.raises(ValueError, match="too large"):
        write_run(run, tmp_path / "w.trec")
    f = tmp_path / "big.trec"
    f.write_text("q Q0 a 1 3e34 t\nq Q0 b 2 -2e35 t\n")
    with pytest.raises(DataError, match=r"big\.trec:2: score '-2e35' is too large for the anserini tie rule"):
        read_run(f, ties="anserini")
    assert read_run(f) == read_run(f, ties="trec") == {"q": {"a": 3e34, "b": -2e35}}


def test_anserini_ties_above_16_stay_tied_as_in_anserini():
    """The adjustment is float32 arithmetic, as in Anserini (``docs.scores[i] -= 1e-6f * dup``):
    from 16 up a 1e-6 step is lost after the first tie. Kept for parity (eval.trec's docstring)."""
    from eval.trec import anserini_scores

    f32 = np.float32
    assert [s for _, s in anserini_scores([("a", 5.0), ("b", 5.0), ("c", 5.0)])] == \
        [5.0, float(f32(5.0) - f32(1e-6)), float(f32(5.0) - f32(2e-6))]  # strictly decreasing
    got = [s for _, s in anserini_scores([("a", 20.0), ("b", 20.0), ("c", 20.0)])]
    assert got == [20.0, float(f32(20.0) - f32(1e-6)), float(f32(20.0) - f32(1e-6))]
    assert got[1] == got[2]  # tied, as Anserini writes them


def _anserini_reference(ranking):
    """The tie rule one score at a time in numpy float32 scalars, as Anserini's Java does it
    (``Math.round(score * 1e4f) / 1e4f``: the float32 product rounded half up exactly, in Python
    integers; the int back to float32), for the differential test below."""
    out, previous, dup = [], None, 0
    e4, e6 = np.float32(1e4), np.float32(1e-6)
    for docid, score in ranking:
        s = np.float32(np.float32(math.floor(float(np.float32(score) * e4) + 0.5)) / e4)
        if previous is None or previous - s > np.float32(1e-4):
            dup = 0
        else:
            dup += 1
            s = np.float32(s - e6 * np.float32(dup))
        previous = s
        out.append((docid, float(s)))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_tie_rule_equals_the_scalar_one(seed):
    """Rankings full of ties, of scores a bucket (1e-4) apart and of runs across buckets, at
    magnitudes where a float32 step is below, near and above 1e-6, negative ones too: the same
    float32 values, bit for bit."""
    from eval.trec import anserini_scores

    rng = np.random.default_rng(seed)
    for scale in (1e-3, 1.0, 17.0, 300.0, 1000.0, -1200.0, 1e5, -2.0):
        base = scale * (1 + rng.integers(0, 40, 400) * 1e-4 * rng.choice([0.5, 1, 2.5], 400))
        base = np.sort(np.r_[base, np.repeat(base[:5], 20)])[::-1]
        ranking = [(f"d{i}", float(x)) for i, x in enumerate(base)]
        assert anserini_scores(ranking) == _anserini_reference(ranking)
    assert anserini_scores([]) == []


def test_rounding_is_javas_half_up_where_float32_addition_would_tie():
    """838.861 and 838.8609 x 1e4 are 8388610 and 8388609 in float32; adding 0.5 in float32 made
    the odd one a halfway case rounded to even (8388610): the two tied, and trec_eval put the
    lower-scored document first. Java's Math.round keeps them apart."""
    from eval.metrics import evaluate
    from eval.trec import adjust_ties, anserini_scores

    (_, a), (_, b) = anserini_scores([("a", 838.861), ("b", 838.8609)])
    assert a > b
    assert np.float32(a) == np.float32(8388610) / np.float32(1e4)
    assert np.float32(b) == np.float32(8388609) / np.float32(1e4)
    assert anserini_scores([("a", -838.8609)])[0][1] == float(np.float32(-8388609) / np.float32(1e4))
    run = {"q": {"a": 838.861, "b": 838.8609}}
    assert adjust_ties(run)["q"]["a"] > adjust_ties(run)["q"]["b"]
    assert evaluate({"q": {"a": 1}}, run, ["mrr@10"]).metrics["mrr@10"] == 1.0  # (evaluate applies the rule)


def test_write_run_refuses_what_read_run_would_read_otherwise(tmp_path):
    """A query id starting with a byte-order mark was written, and read back split in two (readers
    strip a BOM from a file's first line); scores that are not numbers, or too large for a float,
    are refused naming the query and doc. The file there before is left as it was."""
    path = tmp_path / "r.trec"
    path.write_text("keep\n")
    for run, said in (({"\ufeffq1": {"d1": 2.0, "d2": 1.0}}, "byte-order mark"),
                      ({"q": {"d1": 1.0, "d2": None}}, "doc 'd2': score None is not a number"),
                      ({"q": {"d1": 10**400}}, "doc 'd1': score too large for a float")):
        with pytest.raises(ValueError, match=said):
            write_run(run, path)
        assert path.read_text() == "keep\n"
    write_run({"q\ufeff": {"d1": 1.0}}, path)  # (only a leading one is read otherwise)
    assert list(read_run(path)) == ["q\ufeff"]
