"""Fuzzing the input-file readers: whatever the bytes, a reader returns or raises DataError.

Each case starts from a small valid file and applies random corruptions: byte flips, inserts,
deletes, duplicated spans, truncation, special bytes (NUL, CR, BOM, invalid UTF-8), whole lines
swapped for odd JSON (nested, non-object, huge numbers, lone surrogates) or odd TSV tokens.
The property: the reader either returns normally (iterators fully consumed, results well formed)
or raises indexing.errors.DataError -- never any other exception.

Profiles: "ci" (derandomized, 100 examples per case) runs by default; the @slow variants run
the same property with many more examples (`pytest -m slow tests/test_fuzz_readers.py`).
"""

from __future__ import annotations

import codecs
import gzip
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.beir import QRELS_MAX_RELEVANCE, BeirDataset, load_qrels, load_queries, load_query_file

from indexing.corpus import Doc, iter_corpus, iter_vector_collection
from indexing.errors import DataError
from eval.trec import read_run

settings.register_profile(
    "ci", derandomize=True, max_examples=100, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("slow", parent=settings.get_profile("ci"), max_examples=1500)
# Applied per test (not settings.load_profile) so this module never changes other modules' defaults.
CI = settings.get_profile("ci")
SLOW = settings.get_profile("slow")

# --- valid sample files ------------------------------------------------------------------------

CORPUS = (
    '{"_id": "d1", "title": "Vitamin D", "text": "Vitamin D reduces fractures."}\n'
    '{"id": "d2", "contents": "Coffee keeps people awake."}\n'
    "\n"
    '{"_id": 3, "title": "", "text": "An inverted index maps terms to documents.", "metadata": {"y": 1}}\n'
).encode()
VECTORS = (
    '{"id": "d1", "contents": "vitamin d", "vector": {"vitamin": 1.5, "d": 0.25}}\n'
    '{"id": "d2", "vector": {"coffee": 2, "awake": 0}}\n'
    '{"id": "d3", "title": "t", "text": "x", "vector": {}}\n'
).encode()
QUERIES_JSONL = (
    '{"_id": "q1", "text": "does vitamin D prevent fractures", "metadata": {}}\n'
    '{"id": 2, "text": "why does coffee keep you awake"}\n'
    '{"_id": "q3", "text": ""}\n'
).encode()
QUERIES_TSV = b"q1\tdoes vitamin D prevent fractures\nq2\twhy does coffee\tkeep you awake\n\nq3\t\n"
QRELS_BEIR = b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n"
QRELS_TREC = b"q1 0 d1 1\nq1 0 d2 0\nq2 Q0 d3 2\n"
RUN = b"q1 Q0 d1 1 3.5 bm25\nq1 Q0 d2 2 -0.25 bm25\nq2 Q0 d3 1 1e-3 bm25\n"

# --- corruptions -------------------------------------------------------------------------------

SPECIAL_BYTES = [
    b"\x00", b"\r", b"\r\n", b"\n", b"\n\n", b"\t", b" ", codecs.BOM_UTF8, b"\xff", b"\xfe", b"\x80",
    b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x1c", b"\x0b", b"\x85", "\u2028".encode(),
    "\u00e9".encode(), "\u0663".encode(), "\uff11".encode(), b"\x1f\x8b\x08", b"\"", b"\\", b"{", b"}",
    b"[", b"]", b":", b",", b"-", b"+", b".", b"e", b"9" * 5000, b"1e999", b"-1e999", b"NaN",
    b"Infinity", b"99999999999999999999", b"\\ud800", b"\\udc00", b"\\u0000", b"null", b"[]", b"{}",
    b'"_id"', b'"id"', b'"text"', b'"title"', b'"contents"', b'"vector"', b"Q0", b"score", b"rel",
]

# Whole lines: odd JSON records ...
_SURROGATES = st.sampled_from(["\ud800", "a\udc00b", "\udbff\udfff"])  # the last is a valid pair
_STRINGS = st.one_of(st.text(max_size=8), st.sampled_from(["", " ", "d1", "q1", "a b", "\x00", "x\ty"]),
                     _SURROGATES)
_NUMBERS = st.one_of(st.integers(), st.integers(min_value=-10**400, max_value=10**400),
                     st.floats(allow_nan=True, allow_infinity=True))
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _STRINGS)
_KEYS = st.one_of(st.sampled_from(["_id", "id", "text", "title", "contents", "vector", "metadata"]),
                  st.text(max_size=4), _SURROGATES)
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_KEYS, inner, max_size=4)),
                     max_leaves=12)
_RECORDS = st.one_of(
    st.dictionaries(_KEYS, _JSON, max_size=6),
    st.fixed_dictionaries({"_id": st.one_of(_STRINGS, _NUMBERS)},
                          optional={"title": _JSON, "text": _JSON, "contents": _JSON}),
    st.fixed_dictionaries({"id": _STRINGS, "vector": st.one_of(
        st.dictionaries(_STRINGS, st.one_of(_NUMBERS, st.booleans(), st.none(), _STRINGS), max_size=4), _JSON)},
        optional={"contents": _JSON}),
    _JSON,
)
_JSON_LINES = _RECORDS.map(lambda obj: json.dumps(obj).encode())
_RAW_LINES = st.sampled_from([
    b"[" * 5000 + b"]" * 5000,
    b'{"a": ' * 5000 + b"1" + b"}" * 5000,
    b'{"_id": "dx", "text": "x", "n": ' + b"9" * 5000 + b"}",
    b'{"_id": ' + b"9" * 5000 + b', "text": "x"}',
    b'{"id": "dx", "vector": {"t": ' + b"9" * 400 + b"}}",
    b'{"id": "dx", "vector": {"t": 1e400}}',
    b'{"id": "dx", "vector": {"\\ud800": 1}}',
    b'{"_id": "d\\ud800", "text": "x"}',
    b'{"_id": "dx", "text": "x\\udc00"}',
    b'{"_id": "d\\u0000", "text": "x"}',
    b'{"_id": "d1", "text": "dup"}',
    b"query-id\tcorpus-id\tscore", b"qid iter docid rel", b"q1\td1\tabc",
])
# ... and odd TSV / TREC rows
_TOKENS = st.sampled_from([
    "q1", "q2", "d1", "d2", "0", "1", "-1", "+3", "2", "Q0", "bm25", "abc", "score", "1.5", "1e3", "nan",
    "inf", "-inf", "1e999", "9" * 5000, "9" * 20, "2147483648", "", " ", "\x00", "\x0b", "\u0663", "\uff11",
    "1_0", "0x1", "q\x001", "\u00e9", "\u2028",
])
_TOKEN_LINES = st.builds(
    lambda toks, seps: "".join(t + s for t, s in zip(toks, seps)).encode(),
    st.lists(_TOKENS, min_size=1, max_size=7), st.lists(st.sampled_from(["\t", " ", "  ", "\t\t", "\t "]),
                                                         min_size=7, max_size=7))
LINES = st.one_of(_JSON_LINES, _RAW_LINES, _TOKEN_LINES, st.binary(max_size=24))

_POS = st.integers(min_value=0, max_value=1 << 16)
OPS = st.one_of(
    st.tuples(st.just("flip"), _POS, st.integers(0, 7)),
    st.tuples(st.just("insert"), _POS, st.one_of(st.sampled_from(SPECIAL_BYTES), st.binary(min_size=1, max_size=8))),
    st.tuples(st.just("replace"), _POS, st.sampled_from(SPECIAL_BYTES)),
    st.tuples(st.just("delete"), _POS, st.integers(1, 16)),
    st.tuples(st.just("duplicate"), _POS, st.integers(1, 64)),
    st.tuples(st.just("truncate"), _POS),
    st.tuples(st.just("dup_line"), _POS, _POS),       # copy a line elsewhere (duplicate ids)
    # whole-line edits reach past the JSON / column parsing, so they are drawn more often
    *[st.tuples(st.just(op), _POS, lines) for op in ("line", "add_line") for lines in (LINES, _RAW_LINES)],
)


def corrupt(data: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    buf = bytearray(data)
    for op, pos, *args in ops:
        at = pos % (len(buf) + 1)
        if op == "flip" and buf:
            buf[pos % len(buf)] ^= 1 << args[0]
        elif op == "insert":
            buf[at:at] = args[0]
        elif op == "replace":
            buf[at:at + len(args[0])] = args[0]
        elif op == "delete":
            del buf[at:at + args[0]]
        elif op == "duplicate":
            buf[at:at] = buf[at:at + args[0]]
        elif op == "truncate":
            del buf[at:]
        elif op in ("line", "add_line", "dup_line"):
            lines = bytes(buf).split(b"\n")
            i = pos % len(lines)
            if op == "line":
                lines[i] = args[0]
            elif op == "add_line":
                lines.insert(i, args[0])
            else:
                lines.insert(args[0] % (len(lines) + 1), lines[i])
            buf = bytearray(b"\n".join(lines))
    return bytes(buf)


CORRUPTIONS = st.lists(OPS, min_size=1, max_size=6)

# --- checks on what a reader returns -----------------------------------------------------------


def _text_ok(s: Any) -> None:
    assert isinstance(s, str)
    s.encode("utf-8")  # no lone surrogates: every string must survive encoding downstream


def _id_ok(s: Any) -> None:
    _text_ok(s)
    assert s and not any(c.isspace() or ord(c) < 32 for c in s), repr(s)


def _check_docs(docs: list[Doc]) -> None:
    for d in docs:
        _id_ok(d.docid)
        _text_ok(d.title)
        _text_ok(d.text)
    assert len({d.docid for d in docs}) == len(docs)


def _check_vectors(items: list[tuple[Doc, dict[str, float]]]) -> None:
    _check_docs([d for d, _ in items])
    for _, vec in items:
        for term, w in vec.items():
            _text_ok(term)
            assert not isinstance(w, bool) and isinstance(w, (int, float))
            assert math.isfinite(float(w)) and w >= 0


def _check_queries(queries: dict[str, str]) -> None:
    for qid, text in queries.items():
        _id_ok(qid)
        _text_ok(text)


def _check_qrels(qrels: dict[str, dict[str, int]]) -> None:
    for qid, docs in qrels.items():
        assert qid and isinstance(qid, str)
        for docid, rel in docs.items():
            assert docid and isinstance(docid, str)
            assert type(rel) is int and abs(rel) <= QRELS_MAX_RELEVANCE


def _check_run(run: dict[str, dict[str, float]]) -> None:
    for qid, hits in run.items():
        _id_ok(qid)
        for docid, score in hits.items():
            _id_ok(docid)
            assert isinstance(score, float) and math.isfinite(score)


def returns_or_data_error(read: Callable[[], Any], check: Callable[[Any], None]) -> None:
    try:
        result = read()
    except DataError as e:
        assert str(e).startswith(e.path)
        return
    check(result)


# --- cases -------------------------------------------------------------------------------------

def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# name: (file name, valid bytes, how to read it, what to check); `gz_raw` corrupts compressed bytes
CASES: dict[str, tuple[str, bytes, Callable[[Path], Any], Callable[[Any], None]]] = {
    "corpus": ("corpus.jsonl", CORPUS, lambda p: list(iter_corpus(p)), _check_docs),
    "corpus_gz": ("corpus.jsonl.gz", CORPUS, lambda p: list(iter_corpus(p)), _check_docs),
    "corpus_gz_raw": ("corpus.jsonl.gz", _gzip(CORPUS), lambda p: list(iter_corpus(p)), _check_docs),
    "vectors": ("vectors.jsonl", VECTORS, lambda p: list(iter_vector_collection(p)), _check_vectors),
    "queries": ("queries.jsonl", QUERIES_JSONL, load_queries, _check_queries),
    "query_file_jsonl": ("queries.jsonl", QUERIES_JSONL, load_query_file, _check_queries),
    "query_file_tsv": ("queries.tsv", QUERIES_TSV, load_query_file, _check_queries),
    "qrels_beir": ("test.tsv", QRELS_BEIR, load_qrels, _check_qrels),
    "qrels_trec": ("qrels.txt", QRELS_TREC, load_qrels, _check_qrels),
    "run": ("run.trec", RUN, read_run, _check_run),
    "run_gz_raw": ("run.trec.gz", _gzip(RUN), read_run, _check_run),
}


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fuzz_one(fuzz_dir: Path, case: str, ops: list[tuple[Any, ...]]) -> None:
    name, valid, read, check = CASES[case]
    data = corrupt(valid, ops)
    if case == "corpus_gz":
        data = _gzip(data)  # corrupt the text, then compress
    path = fuzz_dir / name
    path.write_bytes(data)
    returns_or_data_error(lambda: read(path), check)


SPLITS = st.one_of(st.just("test"), st.sampled_from(["train", "dev", "TEST", "../qrels/test", "./test", ".test",
                                                     "test/", "", "te\x00st", "test.tsv", "..", "/tmp/x"]),
                   st.text(max_size=8))


def _fuzz_dataset(root: Path, queries_ops, qrels_ops, split: str) -> None:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_bytes(CORPUS)
    (root / "queries.jsonl").write_bytes(corrupt(QUERIES_JSONL, queries_ops) if queries_ops else QUERIES_JSONL)
    (root / "qrels" / "test.tsv").write_bytes(corrupt(QRELS_BEIR, qrels_ops) if qrels_ops else QRELS_BEIR)

    def read() -> tuple[Any, Any]:
        ds = BeirDataset(root)
        return ds.qrels(split), ds.split_queries(split)

    def check(result: tuple[Any, Any]) -> None:
        qrels, queries = result
        _check_qrels(qrels)
        _check_queries(queries)
        assert list(queries) == [q for q in qrels if q in queries]

    returns_or_data_error(read, check)


MAYBE_CORRUPTIONS = st.one_of(st.just([]), CORRUPTIONS)


@pytest.mark.parametrize("case", sorted(CASES))
@settings(CI)
@given(ops=CORRUPTIONS)
def test_reader_returns_or_raises_data_error(fuzz_dir, case, ops):
    _fuzz_one(fuzz_dir, case, ops)


@settings(CI)
@given(queries_ops=MAYBE_CORRUPTIONS, qrels_ops=MAYBE_CORRUPTIONS, split=SPLITS)
def test_dataset_qrels_and_split_queries(fuzz_dir, queries_ops, qrels_ops, split):
    _fuzz_dataset(fuzz_dir / "ds", queries_ops, qrels_ops, split)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
@settings(SLOW)
@given(ops=CORRUPTIONS)
def test_reader_returns_or_raises_data_error_slow(fuzz_dir, case, ops):
    _fuzz_one(fuzz_dir, case, ops)


@pytest.mark.slow
@settings(SLOW)
@given(queries_ops=MAYBE_CORRUPTIONS, qrels_ops=MAYBE_CORRUPTIONS, split=SPLITS)
def test_dataset_qrels_and_split_queries_slow(fuzz_dir, queries_ops, qrels_ops, split):
    _fuzz_dataset(fuzz_dir / "ds", queries_ops, qrels_ops, split)


def test_corruptions_leave_valid_samples_readable(fuzz_dir):
    # the starting points are valid: each reads without error and yields something
    for case, (name, valid, read, check) in CASES.items():
        path = fuzz_dir / name
        path.write_bytes(_gzip(valid) if case == "corpus_gz" else valid)
        result = read(path)
        check(result)
        assert result, case
