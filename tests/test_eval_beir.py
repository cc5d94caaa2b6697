"""eval.beir: corpus/queries/qrels parsing, validation with file:line errors, dataset layout."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import pytest
from privileges import permissions_enforced

from eval.beir import QRELS_HEADER_SCORES, BeirDataset, check_qrels, check_split_name, is_test_split, load_qrels, load_queries, load_query_file

from indexing.corpus import Doc, iter_corpus, iter_vector_collection
from indexing.errors import DataError


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def assert_data_error(exc: pytest.ExceptionInfo[DataError], path: Path, line: int | None, fragment: str):
    err = exc.value
    assert err.path == str(path)
    assert err.line == line
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(err).startswith(where), str(err)
    assert fragment in str(err), str(err)


# --- errors ------------------------------------------------------------------------------------

def test_data_error_format():
    assert str(DataError("bad", path="a/b.tsv", line=3)) == "a/b.tsv:3: bad"
    assert str(DataError("bad", path="a/b.tsv")) == "a/b.tsv: bad"
    assert isinstance(DataError("x", path="p"), ValueError)


# --- corpus ------------------------------------------------------------------------------------

def test_corpus_accepts_all_record_shapes(tmp_path):
    f = write(tmp_path / "c.jsonl", "\n".join([
        '{"_id": "d1", "title": "T1", "text": "x1"}',
        '{"id": "d2", "contents": "x2"}',
        "",
        '{"_id": "d3", "text": "x3"}',
        '   ',
        '{"id": 4, "title": "T4", "text": "x4", "metadata": {}}',
    ]) + "\n\n")
    assert list(iter_corpus(f)) == [
        Doc("d1", "T1", "x1"), Doc("d2", "", "x2"), Doc("d3", "", "x3"), Doc("4", "T4", "x4")]


def test_corpus_crlf_and_bom(tmp_path):
    raw = '\ufeff{"_id": "d1", "title": "é", "text": "a"}\r\n{"_id": "d2", "text": "b"}\r\n'
    f = write(tmp_path / "c.jsonl", raw)
    assert list(iter_corpus(f)) == [Doc("d1", "é", "a"), Doc("d2", "", "b")]


def test_corpus_from_dataset_dir(tmp_path):
    write(tmp_path / "corpus.jsonl", '{"_id": "d1", "text": "a"}\n')
    assert [d.docid for d in iter_corpus(tmp_path)] == ["d1"]


def test_corpus_missing_file(tmp_path):
    with pytest.raises(DataError) as exc:
        list(iter_corpus(tmp_path))  # a directory without corpus.jsonl
    assert_data_error(exc, tmp_path / "corpus.jsonl", None, "no such corpus file")
    import os

    os.mkfifo(tmp_path / "pipe.jsonl")  # what `retriever index <(...) OUT` is given
    with pytest.raises(DataError, match="not a regular file \\(a pipe or device\\?\\)"):
        list(iter_corpus(tmp_path / "pipe.jsonl"))


def test_corpus_is_streamed(tmp_path):
    # the error on line 3 only surfaces once the first two docs have been consumed
    f = write(tmp_path / "c.jsonl", '{"_id": "a", "text": ""}\n{"_id": "b", "text": ""}\n{oops\n')
    it = iter_corpus(f)
    assert next(it).docid == "a"
    assert next(it).docid == "b"
    with pytest.raises(DataError) as exc:
        next(it)
    assert_data_error(exc, f, 3, "malformed JSON")


GOOD = '{"_id": "ok", "text": "fine"}'


@pytest.mark.parametrize("bad, fragment", [
    ("{not json", "malformed JSON"),
    ('["_id", "text"]', "expected a JSON object, got list"),
    ('"just a string"', "expected a JSON object, got str"),
    ('{"text": "no id"}', "missing doc id"),
    ('{"_id": 1.5, "text": "a"}', "must be a string or integer, got float"),
    ('{"_id": null, "text": "a"}', "must be a string or integer, got NoneType"),
    ('{"_id": true, "text": "a"}', "must be a string or integer, got bool"),
    ('{"_id": "", "text": "a"}', "empty or contains whitespace"),
    ('{"_id": "a b", "text": "a"}', "empty or contains whitespace"),
    ('{"_id": "d", "title": "t"}', "has no 'text' (or 'contents')"),
    ('{"_id": "d", "text": 5}', "field 'text' must be a string, got int"),
    ('{"id": "d", "contents": ["x"]}', "field 'contents' must be a string, got list"),
    ('{"_id": "d", "title": null, "text": "a"}', "field 'title' must be a string"),
])
def test_corpus_bad_record_names_file_and_line(tmp_path, bad, fragment):
    # line 1 good, line 2 blank (still counted), line 3 bad
    f = write(tmp_path / "corpus.jsonl", f"{GOOD}\n\n{bad}\n{GOOD.replace('ok', 'ok2')}\n")
    with pytest.raises(DataError) as exc:
        list(iter_corpus(f))
    assert_data_error(exc, f, 3, fragment)


def test_corpus_invalid_utf8(tmp_path):
    f = write(tmp_path / "c.jsonl", GOOD.encode() + b"\n" + b'{"_id": "x", "text": "\xff"}\n')
    with pytest.raises(DataError) as exc:
        list(iter_corpus(f))
    assert_data_error(exc, f, 2, "invalid UTF-8")


def test_corpus_duplicate_id_names_both_lines(tmp_path):
    f = write(tmp_path / "c.jsonl", "\n".join([
        '{"_id": "d1", "text": "a"}', '{"_id": "d2", "text": "b"}', '',
        '{"id": "d2", "contents": "again"}']))
    with pytest.raises(DataError) as exc:
        list(iter_corpus(f))
    assert_data_error(exc, f, 4, "duplicate doc id 'd2' (first on line 2)")


def test_corpus_int_and_str_ids_collide(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"_id": 7, "text": "a"}\n{"_id": "7", "text": "b"}\n')
    with pytest.raises(DataError) as exc:
        list(iter_corpus(f))
    assert_data_error(exc, f, 2, "first on line 1")


# --- queries -----------------------------------------------------------------------------------

def test_queries_ok_with_bom_and_crlf(tmp_path):
    f = write(tmp_path / "queries.jsonl",
              '\ufeff{"_id": "q1", "text": "one", "metadata": {}}\r\n\r\n{"id": 2, "text": "two"}\r\n')
    assert load_queries(f) == {"q1": "one", "2": "two"}


@pytest.mark.parametrize("bad, fragment", [
    ('{"_id": "q2"}', "query 'q2' has no 'text'"),
    ('{"text": "x"}', "missing query id"),
    ('{"_id": "q2", "text": 3}', "field 'text' must be a string"),
    ('{"_id": "q1", "text": "dup"}', "duplicate query id 'q1' (first on line 1)"),
    ("[]", "expected a JSON object"),
    ("{", "malformed JSON"),
])
def test_queries_bad_record(tmp_path, bad, fragment):
    f = write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "one"}\n' + bad + "\n")
    with pytest.raises(DataError) as exc:
        load_queries(f)
    assert_data_error(exc, f, 2, fragment)


# --- qrels -------------------------------------------------------------------------------------

def test_qrels_beir_header_crlf_trailing_blanks(tmp_path):
    f = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td2\t2\r\nq2\td1\t0\r\n\r\n\r\n")
    assert load_qrels(f) == {"q1": {"d1": 1, "d2": 2}, "q2": {"d1": 0}}


def test_qrels_without_header_and_with_bom(tmp_path):
    f = write(tmp_path / "test.tsv", "\ufeffq1\td1\t1\nq2\td3\t-1\n")
    assert load_qrels(f) == {"q1": {"d1": 1}, "q2": {"d3": -1}}


def test_qrels_trec_format(tmp_path):
    f = write(tmp_path / "qrels.txt", "301 0 FBIS3-10082 1\n301  0\tFBIS3-10169 0\n302 Q0 LA-1 2\n")
    assert load_qrels(f) == {"301": {"FBIS3-10082": 1, "FBIS3-10169": 0}, "302": {"LA-1": 2}}


def test_qrels_repeated_pair_keeps_last(tmp_path):
    f = write(tmp_path / "t.tsv", "q1\td1\t1\nq1\td1\t2\n")
    assert load_qrels(f) == {"q1": {"d1": 2}}


@pytest.mark.parametrize("body, line, fragment", [
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", 3, "got 2"),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1.5\n", 3, "relevance '1.5' is not an integer"),
    ("q1\td1\t1\n\nq1\td2\tscore\n", 3, "relevance 'score' is not an integer"),  # header only on line 1
    ("q1 0 d1 1\nq1 0 d2 1 extra\n", 2, "got 5"),
    ("q1 0 d1 x\n", 1, "relevance 'x' is not an integer"),  # not a header: 'x' is no header name
    ("q1\t\t1\n", 1, "empty query or doc id"),
])
def test_qrels_malformed_rows(tmp_path, body, line, fragment):
    f = write(tmp_path / "test.tsv", body)
    with pytest.raises(DataError) as exc:
        load_qrels(f)
    assert_data_error(exc, f, line, fragment)


def test_qrels_first_row_with_a_bad_score_is_an_error_not_a_header(tmp_path):
    # it used to be dropped silently as a "header", losing a judgement
    f = write(tmp_path / "test.tsv", "q1\td1\tabc\nq2\td2\t1\n")
    with pytest.raises(DataError) as exc:
        load_qrels(f)
    assert_data_error(exc, f, 1, "relevance 'abc' is not an integer")


@pytest.mark.parametrize("header", [
    "query-id\tcorpus-id\tscore",  # BEIR
    "QUERY-ID\tCORPUS-ID\tSCORE",
    "qid\tdocid\trelevance",
    "query_id corpus_id label",
    "qid iter docno rel",  # TREC-style, 4 columns
    "qid\tQ0\tdocid\tJudgement",
])
def test_qrels_header_is_recognised_by_its_score_column(tmp_path, header):
    f = write(tmp_path / "test.tsv", f"\n{header}\nq1\td1\t1\n")  # first non-blank line
    assert load_qrels(f) == {"q1": {"d1": 1}}


def test_qrels_header_names():
    assert {"score", "relevance", "rel", "label", "grade", "judgment", "judgement"} <= QRELS_HEADER_SCORES


@pytest.mark.parametrize("score", ["1001", "-1001", "2147483647", "99999999999999999999", "9" * 5000])
def test_qrels_relevance_out_of_range(tmp_path, score):
    # pytrec_eval takes minutes over a grade of 10**6 and crashes the interpreter at 2**31 - 1;
    # 5000 digits made int() itself raise a bare ValueError
    f = write(tmp_path / "test.tsv", f"q1\td1\t1\nq1\td2\t{score}\n")
    with pytest.raises(DataError) as exc:
        load_qrels(f)
    assert_data_error(exc, f, 2, "out of range")
    assert len(str(exc.value)) < 200


def test_qrels_relevance_limits_accepted(tmp_path):
    f = write(tmp_path / "test.tsv", "q1\td1\t1000\nq1\td2\t-1000\nq1\td3\t+0\n")
    assert load_qrels(f) == {"q1": {"d1": 1000, "d2": -1000, "d3": 0}}


@pytest.mark.parametrize("row", ["q\x001\td1\t1", "q1\td\x001\t1", "q1 0 d\x7f 1"])
def test_qrels_control_characters_in_ids(tmp_path, row):
    # pytrec_eval cuts ids at a NUL: "q\x001" would be judged as "q"
    f = write(tmp_path / "test.tsv", f"q0\td0\t1\n{row}\n")
    with pytest.raises(DataError) as exc:
        load_qrels(f)
    assert_data_error(exc, f, 2, "contains a control character")


def test_qrels_ids_with_inner_spaces_still_read(tmp_path):
    f = write(tmp_path / "test.tsv", "q 1\td 1\t1\n")
    assert load_qrels(f) == {"q 1": {"d 1": 1}}


def test_qrels_missing_file(tmp_path):
    with pytest.raises(DataError) as exc:
        load_qrels(tmp_path / "nope.tsv")
    assert_data_error(exc, tmp_path / "nope.tsv", None, "cannot open")


# --- dataset -----------------------------------------------------------------------------------

@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "toy"
    write(root / "corpus.jsonl", '{"_id": "d1", "title": "", "text": "a"}\n{"_id": "d2", "title": "", "text": "b"}\n')
    write(root / "queries.jsonl", '{"_id": "q1", "text": "one"}\n{"_id": "q2", "text": "two"}\n'
                                  '{"_id": "q3", "text": "three"}\n')
    write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq2\td1\t1\nq9\td2\t1\n")
    write(root / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    write(root / "qrels" / "notes.txt", "not a split\n")
    return root


def test_dataset_layout(dataset):
    ds = BeirDataset(dataset)
    assert ds.corpus_path == dataset / "corpus.jsonl"
    assert [d.docid for d in ds.iter_corpus()] == ["d1", "d2"]
    assert ds.queries() is ds.queries()  # cached
    assert ds.splits() == ["test", "train"]
    assert ds.qrels("test") == {"q2": {"d1": 1}, "q9": {"d2": 1}}
    assert ds.split_queries("test") == {"q2": "two"}  # q9 is not in queries.jsonl
    assert ds.split_queries("train") == {"q1": "one"}


def test_dataset_missing_split_lists_available(dataset):
    with pytest.raises(DataError) as exc:
        BeirDataset(dataset).qrels("dev")
    assert_data_error(exc, dataset / "qrels" / "dev.tsv", None, "available splits: test, train")
    assert "'dev'" in str(exc.value)


def test_dataset_without_qrels_dir(dataset):
    for p in (dataset / "qrels").iterdir():
        p.unlink()
    (dataset / "qrels").rmdir()
    ds = BeirDataset(dataset)
    assert ds.splits() == []
    with pytest.raises(DataError, match="available splits: none"):
        ds.qrels("test")


def test_dataset_root_errors(tmp_path, dataset):
    with pytest.raises(DataError) as exc:
        BeirDataset(tmp_path / "absent")
    assert_data_error(exc, tmp_path / "absent", None, "not a BEIR dataset directory")
    (dataset / "queries.jsonl").unlink()
    with pytest.raises(DataError) as exc:
        BeirDataset(dataset)
    assert_data_error(exc, dataset, None, "missing queries.jsonl")
    (dataset / "corpus.jsonl").unlink()
    with pytest.raises(DataError, match="missing corpus.jsonl, queries.jsonl"):
        BeirDataset(dataset)


# --- check_qrels -------------------------------------------------------------------------------

def test_check_qrels_counts_unknown_ids():
    qrels = {"q1": {"d1": 1, "dx": 0}, "q9": {"d1": 1, "dy": 2}, "q8": {"dx": 1}}
    report = check_qrels(qrels, {"q1": "text"}, ["d1", "d2"])
    assert (report.queries, report.docs, report.judgements) == (3, 3, 5)
    assert (report.unknown_queries, report.unknown_docs) == (2, 2)
    assert report.example_queries == ("q9", "q8")
    assert report.example_docs == ("dx", "dy")
    assert not report.clean
    text = str(report)
    assert "\n" not in text
    assert "2/3 qrels queries" in text and "q9" in text
    assert "2/3 judged docs" in text and "dx" in text


def test_check_qrels_clean_is_empty_string():
    report = check_qrels({"q1": {"d1": 1}}, {"q1"}, {"d1"})
    assert report.clean
    assert str(report) == ""


# --- split names -------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["test", "dev", "train", "TEST", "train-2", "cqa_android", "v1.0", "2024"])
def test_check_split_name_accepts_plain_names(split):
    assert check_split_name(split) == split


@pytest.mark.parametrize("split", ["", ".", "..", ".test", "./test", "../qrels/test", "qrels/test", "a\\b",
                                   "/abs/test", "te st", "test\n", "te\x00st", "t\u00e9st", "test/", None, 3])
def test_check_split_name_refuses_paths_and_odd_names(split):
    with pytest.raises(ValueError, match="bad split name") as exc:
        check_split_name(split)
    assert repr(split) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_is_test_split():
    assert is_test_split("test") and is_test_split("TEST") and is_test_split("Test")
    assert not is_test_split("dev") and not is_test_split("test2") and not is_test_split("train")
    for sneaky in ("../qrels/test", "./test", "test/"):
        with pytest.raises(ValueError):
            is_test_split(sneaky)


@pytest.mark.parametrize("split", ["../qrels/test", "./test", "../toy/qrels/test", ".test", "test/../test"])
def test_dataset_refuses_split_paths(dataset, split):
    # "qrels/{split}.tsv" would reach test.tsv and get past guards that compare the name with "test"
    ds = BeirDataset(dataset)
    for method in (ds.qrels, ds.split_queries):
        with pytest.raises(DataError) as exc:
            method(split)
        assert_data_error(exc, dataset / "qrels", None, "bad split name")
        assert repr(split) in str(exc.value)


def test_dataset_splits_lists_only_plain_names(dataset):
    write(dataset / "qrels" / ".hidden.tsv", "q1\td1\t1\n")
    assert BeirDataset(dataset).splits() == ["test", "train"]


# --- load_query_file ---------------------------------------------------------------------------

def test_query_file_tsv_bom_crlf_blank_lines(tmp_path):
    f = write(tmp_path / "q.tsv", "\ufeffq1\tone\r\n\r\n  \r\nq2\ttwo\twith a tab\r\nq3\t\r\n")
    assert load_query_file(f) == {"q1": "one", "q2": "two\twith a tab", "q3": ""}
    assert list(load_query_file(f)) == ["q1", "q2", "q3"]


@pytest.mark.parametrize("name", ["queries.jsonl", "queries.json", "queries.jsonl.gz"])
def test_query_file_jsonl_goes_to_load_queries(tmp_path, name):
    body = b'{"_id": "q1", "text": "one"}\n{"_id": "q2", "text": "two"}\n'
    f = write(tmp_path / name, gzip.compress(body) if name.endswith(".gz") else body)
    assert load_query_file(f) == {"q1": "one", "q2": "two"}


def test_query_file_tsv_gz(tmp_path):
    f = write(tmp_path / "q.tsv.gz", gzip.compress(b"q1\tone\n"))
    assert load_query_file(f) == {"q1": "one"}


@pytest.mark.parametrize("body, line, fragment", [
    ("q1\tone\nno tab here\n", 2, "expected 'qid<TAB>text'"),
    ("q1\tone\nq1\tagain\n", 2, "duplicate query id 'q1' (first on line 1)"),
    ("q1\tone\n\ttext\n", 2, "query id '' is empty or contains whitespace"),
    ("q1\tone\nq 2\ttext\n", 2, "query id 'q 2' is empty or contains whitespace"),
    ("q1\tone\n q2\ttext\n", 2, "is empty or contains whitespace"),
    ("q1\tone\nq\x002\ttext\n", 2, "contains a control character"),
    (b"q1\tone\nq2\t\xff\n", 2, "invalid UTF-8"),
])
def test_query_file_tsv_bad_lines(tmp_path, body, line, fragment):
    f = write(tmp_path / "q.tsv", body)
    with pytest.raises(DataError) as exc:
        load_query_file(f)
    assert_data_error(exc, f, line, fragment)


def test_query_file_directory_or_missing(tmp_path):
    for path in (tmp_path, tmp_path / "queries.jsonl"):
        path.mkdir(exist_ok=True)
        with pytest.raises(DataError) as exc:
            load_query_file(path)
        assert_data_error(exc, path, None, "is a directory")
    with pytest.raises(DataError) as exc:
        load_query_file(tmp_path / "absent.tsv")
    assert_data_error(exc, tmp_path / "absent.tsv", None, "cannot open")


# --- directories, unreadable files, corrupt gzip -----------------------------------------------

def test_readers_refuse_a_directory(tmp_path):
    d = tmp_path / "dir.tsv"
    d.mkdir()
    for read in (load_queries, load_qrels, load_query_file):
        with pytest.raises(DataError) as exc:
            read(d)
        assert_data_error(exc, d, None, "is a directory, expected a file")
    gz = tmp_path / "corpus.jsonl.gz"
    gz.mkdir()
    with pytest.raises(DataError):
        list(iter_corpus(gz))


def test_unreadable_file(tmp_path, monkeypatch):
    f = write(tmp_path / "q.tsv", "q1\tone\n")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(f))

    monkeypatch.setattr("indexing.records.open", denied, raising=False)
    with pytest.raises(DataError) as exc:
        load_query_file(f)
    assert_data_error(exc, f, None, "cannot open: Permission denied")


def test_unreadable_file_chmod(tmp_path):
    f = write(tmp_path / "test.tsv", "q1\td1\t1\n")
    f.chmod(0)
    with permissions_enforced(), pytest.raises(DataError, match="cannot open"):  # (root too)
        load_qrels(f)


GZ_CORPUS = b"".join(b'{"_id": "d%d", "text": "some text %d"}\n' % (i, i) for i in range(200))


def _bad_gzip(kind: str) -> bytes:
    good = gzip.compress(GZ_CORPUS, mtime=0)
    if kind == "not gzip":
        return GZ_CORPUS
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "bad crc":
        return good[:-8] + bytes([good[-8] ^ 1]) + good[-7:]
    if kind == "bad deflate data":  # a raw deflate block with an invalid block type
        return good[:10] + b"\xff" * 16 + good[26:]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["not gzip", "truncated", "bad crc", "bad deflate data"])
def test_corrupt_gzip_is_a_data_error(tmp_path, kind):
    # gzip.BadGzipFile, EOFError and zlib.error used to escape while iterating
    f = write(tmp_path / "corpus.jsonl.gz", _bad_gzip(kind))
    with pytest.raises(DataError) as exc:
        list(iter_corpus(f))
    assert_data_error(exc, f, None, "corrupt or truncated gzip data after line")


def test_bad_deflate_data_really_is_a_zlib_error():
    with pytest.raises(zlib.error):
        gzip.decompress(_bad_gzip("bad deflate data"))


# --- JSON the parser cannot take, lone surrogates, huge numbers --------------------------------

@pytest.mark.parametrize("bad, fragment", [
    ('{"_id": "d", "text": "a", "n": ' + "9" * 5000 + "}", "malformed JSON: Exceeds the limit"),
    ("[" * 5000 + "]" * 5000, "malformed JSON: nested too deeply"),
    ('{"_id": "d", "text": "a", "m": ' + '{"a": ' * 5000 + "1" + "}" * 5001, "nested too deeply"),
    ('{"_id": "d\\ud800", "text": "a"}', "contains a lone surrogate"),
    ('{"_id": "d", "text": "a\\udc00b"}', "field 'text' contains a lone surrogate"),
    ('{"_id": "d", "title": "\\ud800", "text": "a"}', "field 'title' contains a lone surrogate"),
    ('{"_id": "d\\u0000", "text": "a"}', "contains a control character"),
])
def test_corpus_json_crash_classes(tmp_path, bad, fragment):
    # these used to raise ValueError / RecursionError, or yield strings that cannot be encoded
    f = write(tmp_path / "corpus.jsonl", f"{GOOD}\n{bad}\n")
    with pytest.raises(DataError) as exc:
        list(iter_corpus(f))
    assert_data_error(exc, f, 2, fragment)
    assert len(str(exc.value)) < 300


def test_surrogate_pairs_are_fine(tmp_path):
    f = write(tmp_path / "corpus.jsonl", '{"_id": "d\\ud83d\\ude00", "text": "\\ud83d\\ude00"}\n')
    assert list(iter_corpus(f)) == [Doc("d\U0001F600", "", "\U0001F600")]


@pytest.mark.parametrize("bad, fragment", [
    ('{"id": "x", "vector": {"a": ' + "9" * 400 + "}}", "must be a finite number, got 99999"),
    ('{"id": "x", "vector": {"a": -' + "9" * 400 + "}}", "must be a finite number"),
    ('{"id": "x", "vector": {"\\ud800": 1.0}}', "contains a lone surrogate"),
])
def test_vector_collection_crash_classes(tmp_path, bad, fragment):
    # a 400-digit weight used to raise OverflowError from math.isfinite
    f = write(tmp_path / "vectors.jsonl", '{"id": "ok", "vector": {"a": 1}}\n' + bad + "\n")
    with pytest.raises(DataError) as exc:
        list(iter_vector_collection(f))
    assert_data_error(exc, f, 2, fragment)
    assert len(str(exc.value)) < 200


def test_queries_json_crash_classes(tmp_path):
    f = write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "one"}\n' + "[" * 5000 + "\n")
    with pytest.raises(DataError) as exc:
        load_queries(f)
    assert_data_error(exc, f, 2, "nested too deeply")


def _eval_cli(*args):
    from click.testing import CliRunner

    from retriever import cli

    return CliRunner().invoke(cli.main, ["eval", *map(str, args)])


def test_cli_eval_run_notes_qrels_queries_missing_from_the_run(beir_dir, tmp_path):
    """As eval --index notes qrels queries it cannot search, eval --run notes those the run lacks
    (a run of other query ids, or an empty one, gave all zeros without a word)."""
    partial, other, empty = tmp_path / "partial.trec", tmp_path / "other.trec", tmp_path / "empty.trec"
    partial.write_text("q1 Q0 d1 1 2.0 t\nq2 Q0 d3 1 1.0 t\n")
    other.write_text("zz1 Q0 d1 1 2.0 t\n")
    empty.write_text("")
    res = _eval_cli("--run", partial, "--dataset", beir_dir, "--metrics", "mrr@10")
    assert res.exit_code == 0, res.output
    assert f"note: 1/3 qrels queries with a relevant judgement are not in {partial} (e.g. q3)" in res.stderr
    for run in (other, empty):
        res = _eval_cli("--run", run, "--dataset", beir_dir, "--metrics", "mrr@10")
        assert res.exit_code == 0 and "note: 3/3 qrels queries" in res.stderr and "0.0000" in res.stdout
    full = tmp_path / "full.trec"
    full.write_text("q1 Q0 d1 1 2.0 t\nq2 Q0 d3 1 1.0 t\nq3 Q0 d5 1 1.0 t\n")
    res = _eval_cli("--run", full, "--dataset", beir_dir, "--metrics", "mrr@10")
    assert res.exit_code == 0 and "note" not in res.stderr and "1.0000" in res.stdout


def test_cli_eval_run_refuses_scores_the_anserini_rule_cannot_take(beir_dir, tmp_path):
    run = tmp_path / "big.trec"
    run.write_text("q1 Q0 d2 1 2e35 t\nq1 Q0 d1 2 1e35 t\n")  # d1, relevant, second
    res = _eval_cli("--run", run, "--dataset", beir_dir, "--metrics", "mrr@10")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{run}:1: score '2e35' is too large for the anserini tie rule" in res.output
    res = _eval_cli("--run", run, "--dataset", beir_dir, "--metrics", "mrr@10", "--ties", "trec")
    assert res.exit_code == 0 and "0.1667" in res.stdout  # 1/2 for q1, 0 for q2 and q3


def test_cli_eval_metric_cutoff_bound(beir_dir, tmp_path):
    run = tmp_path / "r.trec"
    run.write_text("q1 Q0 d1 1 2.0 t\n")
    res = _eval_cli("--run", run, "--dataset", beir_dir,
                    "--metrics", "recall@9223372036854775807,recall@9223372036854775808")  # aborted in C
    assert res.exit_code == 1 and "cutoff must be at most 2147483647" in res.output
