"""The analyzer must emit Lucene's English-analyzer tokens; expected values follow Lucene 9."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexing.analysis import LUCENE_ENGLISH_STOPWORDS, Analyzer, standard_tokenize
from indexing.porter import stem


@pytest.mark.parametrize("text, tokens", [
    ("Hello, world!", ["Hello", "world"]),
    # apostrophes join letters (WB6/7); a leading or trailing one is dropped
    ("don't o'neill 'quoted' students'", ["don't", "o'neill", "quoted", "students"]),
    ("rock\u2019n\u2019roll", ["rock\u2019n\u2019roll"]),
    # hyphens always split; digits and letters stay together
    ("COVID-19 IL-6 α-helix 19th covid19", ["COVID", "19", "IL", "6", "α", "helix", "19th", "covid19"]),
    # numbers keep inner separators, letters keep inner dots; trailing dots go
    ("3.14 1,000,000 p<0.05 U.S.A. e.g.", ["3.14", "1,000,000", "p", "0.05", "U.S.A", "e.g"]),
    ("a.1 1.a", ["a", "1", "1", "a"]),
    ("foo_bar ___ _x", ["foo_bar", "_x"]),
    ("Na+/K+ ATPase 50% $100", ["Na", "K", "ATPase", "50", "100"]),
    ("café naïve Schrödinger", ["café", "naïve", "Schrödinger"]),
    ("中文字 ひらがな カタカナ", ["中", "文", "字", "ひ", "ら", "が", "な", "カタカナ"]),
    ("immuno\u00adlogy", ["immuno\u00adlogy"]),  # a soft hyphen (Format) does not break a word
    ("", []),
    ("  ...  ", []),
])
def test_standard_tokenizer(text, tokens):
    assert standard_tokenize(text) == tokens


def test_long_tokens_are_cut_at_255():
    assert [len(t) for t in standard_tokenize("x" * 600)] == [255, 255, 90]


@pytest.mark.parametrize("text, tokens", [
    # possessives: 's in any apostrophe form, before lower-casing; s' is left to the tokenizer
    ("John's dog\u2019s JOHN'S", ["john", "dog", "john"]),
    ("aren't", ["aren't"]),
    # stop words are removed after lower-casing, before stemming
    ("The cat IS on the mat", ["cat", "mat"]),
    ("there these they this to was will with", []),
    # Porter stemming
    ("running generalizations fractures vitamin D", ["run", "gener", "fractur", "vitamin", "d"]),
    ("U.S. 3.14 COVID-19", ["u.", "3.14", "covid", "19"]),
])
def test_english_analyzer(text, tokens):
    assert Analyzer()(text) == tokens


def test_analyzer_options_and_config_round_trip():
    a = Analyzer(stopwords="none", stemmer="none")
    assert a("The Running dogs") == ["the", "running", "dogs"]
    assert Analyzer.from_config(a.config()) == a
    with pytest.raises(ValueError, match="stemmer"):
        Analyzer(stemmer="snowball")


def test_lucene_stopword_list_is_lucenes():
    assert len(LUCENE_ENGLISH_STOPWORDS) == 33
    assert {"a", "not", "such", "will"} <= LUCENE_ENGLISH_STOPWORDS
    assert "he" not in LUCENE_ENGLISH_STOPWORDS


@pytest.mark.parametrize("word, expected", [
    # Porter's paper examples
    ("caresses", "caress"), ("ponies", "poni"), ("ties", "ti"), ("cats", "cat"),
    ("feed", "feed"), ("agreed", "agre"), ("plastered", "plaster"), ("bled", "bled"),
    ("motoring", "motor"), ("sing", "sing"), ("conflated", "conflat"), ("troubled", "troubl"),
    ("sized", "size"), ("hopping", "hop"), ("falling", "fall"), ("hissing", "hiss"),
    ("filing", "file"), ("happy", "happi"), ("sky", "sky"), ("relational", "relat"),
    ("conditional", "condit"), ("rational", "ration"), ("digitizer", "digit"),
    ("vietnamization", "vietnam"), ("predication", "predic"), ("operator", "oper"),
    ("feudalism", "feudal"), ("decisiveness", "decis"), ("hopefulness", "hope"),
    ("sensibiliti", "sensibl"), ("triplicate", "triplic"), ("formative", "form"),
    ("electrical", "electr"), ("goodness", "good"), ("revival", "reviv"),
    ("allowance", "allow"), ("adjustable", "adjust"), ("adoption", "adopt"),
    ("communism", "commun"), ("effective", "effect"), ("bowdlerize", "bowdler"),
    ("probate", "probat"), ("rate", "rate"), ("cease", "ceas"), ("controll", "control"),
    ("roll", "roll"),
    # the reference implementation's departures, which Lucene follows
    ("conformabli", "conform"), ("archaeology", "archaeolog"), ("ies", "i"),
    # two letters or fewer are left alone
    ("as", "as"), ("is", "is"),
])
def test_porter(word, expected):
    assert stem(word) == expected


def test_a_word_longer_than_the_match_run_is_cut_as_the_whole_word(tmp_path):
    """Words are cut in 255-character pieces; a match stops every 64 x 255 characters (bounded
    backtracking state), and the pieces are those of the whole word. An 8M-character word (a DNA
    string) tokenises within 600 MB of address space (it raised MemoryError)."""
    import subprocess
    import sys

    word = "ab" * 20_000 + "c"
    assert standard_tokenize(f"x {word} y") == ["x", *(word[i:i + 255] for i in range(0, len(word), 255)), "y"]
    script = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))\n"
              "from indexing.analysis import standard_tokenize\n"
              "print(len(standard_tokenize('acgt' * 2_000_000)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == [str(-(-8_000_000 // 255))], done.stderr[-500:]


def _run_python(script: str, timeout: float) -> list[str]:
    """What ``script`` prints, split, run in a fresh interpreter (a hang fails it at ``timeout``)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-500:]
    return done.stdout.split()


def test_pathological_runs_tokenise_in_linear_time_and_bounded_memory():
    """Runs no word rule bounds on its own: an 8M-character joiner chain of pictographs raised
    MemoryError (both versions); a Thai run with marks did (version 2's first form); a million
    underscores followed by a letter were searched a million times (quadratic)."""
    script = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))\n"
              "from indexing.analysis import standard_tokenize as t\n"
              "print(len(t('\\U0001f600\\u200d' * 1_000_000)), len(t('\\U0001f600\\u200d' * 1_000_000, 1)),\n"
              "      len(t('\\u0e01\\u0301' * 1_000_000)), len(t('_' * 2_000_000 + 'a')),\n"
              "      len(t('_\\u0eb5' * 100_000)), len(t('_\\u200d' * 500_000)))\n")
    # pieces of 255 characters; the connector run's last piece holds the letter; each Lao vowel a token
    assert _run_python(script, timeout=120) == ["7844", "7844", "7844", str(-(-((2_000_000 % 16_320) + 1) // 255)), "100000", "0"]


def test_joiner_runs_tokenise_in_linear_time():
    """A run of zero-width joiners that no pictograph ends was read to its end from every joiner in
    it (80,000 took 20 s, a million ~250 s); joiners before a pictograph still join it."""
    script = ("from indexing.analysis import standard_tokenize as t\n"
              "print(len(t('\\u200d' * 1_000_000)), len(t('_' + '\\u200d' * 1_000_000)),\n"
              "      t('\\u200d\\u200d\\U0001f600 a') == ['\\u200d\\u200d\\U0001f600', 'a'])\n")
    assert _run_python(script, timeout=30) == ["0", "0", "True"]


@pytest.mark.parametrize("text, v2, v1", [
    # Hebrew acronyms keep their double quote (WB7b/c), a trailing single quote stays (WB7a)
    ('צה"ל ש"ח', ['צה"ל', 'ש"ח'], ["צה", "ל", "ש", "ח"]),
    ("ג' צ'יפס", ["ג'", "צ'יפס"], ["ג", "צ'יפס"]),
    # case folded code point by code point, as Java's Character.toLowerCase: no final sigma, no dot
    ("ΟΔΟΣ ΣΑΣ İstanbul", ["οδοσ", "σασ", "istanbul"], ["οδος", "σας", "i\u0307stanbul"]),
    # a South-East Asian character carries its combining marks and joiners
    ("\u0e01\u0301\u0e02 \u0e01\u200d\u0e02", ["\u0e01\u0301\u0e02", "\u0e01\u200d\u0e02"], ["\u0e01", "\u0e02"] * 2),
    # connectors alone are no token, and give back the mark they took ("_" + Lao vowel sign + letter)
    ("\u2040 __ _\u0eb5\u1012 foo_bar _x", ["\u0eb5\u1012", "foo_bar", "_x"], ["\u2040", "\u1012", "foo_bar", "_x"]),
    # katakana joins letters and digits through a connector (WB13a/b), never directly
    ("a_\u30ab \u30ab_1 _\u30ab_ \u30abx", ["a_\u30ab", "\u30ab_1", "_\u30ab_", "\u30ab", "x"],
     ["a_", "\u30ab", "\u30ab_", "1", "\u30ab_", "\u30ab", "x"]),
    # pictographs: a joiner before one joins it; after VS16 only a joiner and a pictograph go on;
    # a flag's regional indicators carry their marks
    ("'\u200d\u203c \U0001f624\ufe0f\u0301 \u2764\ufe0f\u200d\U0001f525 \U0001f1fa\u0301\U0001f1f8",
     ["\u200d\u203c", "\U0001f624\ufe0f", "\u2764\ufe0f\u200d\U0001f525", "\U0001f1fa\u0301\U0001f1f8"],
     ["\u203c", "\U0001f624\ufe0f\u0301", "\u2764\ufe0f\u200d\U0001f525"]),
    # Lucene's Hebrew quirk: a Hebrew letter bound to the letter before it by a joiner takes no quote
    ("\u0465.\u05de' \u05d2'\u05d5\u05e8\u05d2'", ["\u0465.\u05de", "\u05d2'\u05d5\u05e8\u05d2'"],
     ["\u0465.\u05de", "\u05d2'\u05d5\u05e8\u05d2"]),
])
def test_version_2_follows_lucene_and_version_1_stays_for_older_indexes(text, v2, v1):
    """Each case's version-2 tokens are what Lucene's analyzer gives (checked against it in
    tests/test_lucene.py), and version 3's (it stems otherwise only beyond the Basic Multilingual
    Plane); an index built before records no version and keeps version 1's."""
    assert Analyzer()(text) == v2
    assert Analyzer(version=1)(text) == v1
    assert Analyzer.from_config({"stopwords": "lucene", "stemmer": "porter", "lowercase": True,
                                 "possessive": True}).version == 1
    assert Analyzer().config()["version"] == 3
    assert Analyzer(version=2)(text) == v2


def test_version_3_stems_as_lucene_and_version_2_stays_for_older_indexes():
    """A letter beyond the Basic Multilingual Plane is two UTF-16 units to Lucene's stemmer
    (tests/test_lucene.py checks version 3 against it); an index built under version 2 keeps its
    stems, so its queries still find its documents."""
    assert Analyzer()("\U0001d400s ba\U0001d400ing running") == ["\U0001d400", "ba\U0001d400", "run"]
    assert Analyzer(version=2)("\U0001d400s ba\U0001d400ing running") == ["\U0001d400s", "ba\U0001d400e", "run"]
    assert Analyzer(version=3, stemmer="none")("\U0001d400s") == ["\U0001d400s"]


def test_an_unknown_analysis_version_is_refused():
    for bad in (0, 4, True, "2"):
        with pytest.raises(ValueError, match="analysis version"):
            Analyzer(version=bad)


# ASCII text takes a fast path (the standard library's engine, the filters a list at a time), and
# so do the ASCII stretches of other text, cut at ASCII white space; every token and every
# filtered term must be what the general expression and the token-by-token filters give.
_PIECES = list("aZs S9_'.:,;\"-") + ["'s", "'S", "__", "ab", "1.5", "x'y", "e.g", "THE", "The", "is",
                                       "running", "a" * 300, "\t", "\n", "\r", "\x0b", "\x0c"]
_OTHER = ["\u00e9", "\u2019", "\u2019s", "\u03a3", "\u0130", "\u0301", "\u200d", "\u00a0", "\u3000",
          "\u05d0\"\u05d1", "\u0e01\u0e32", "\u4e2d", "\u30ab", "\U0001f600", "\u200d\U0001f600",
          "\U0001f1eb\U0001f1f7", "\u00ad", "\u2028", "\u0085", "\ufeff", "\u00df"]


def _general_tokens(text: str) -> list[str]:
    from indexing.analysis import _cut, _words_v2
    return _cut(_words_v2(text))


def _check_against_the_general_path(text, analyzer):
    general = _general_tokens(text)
    assert standard_tokenize(text) == general
    stop = LUCENE_ENGLISH_STOPWORDS if analyzer.stopwords == "lucene" else frozenset()
    assert analyzer(text) == analyzer._tokens(general, stop, analyzer.stemmer == "porter")


_ANALYZERS = st.builds(Analyzer, stopwords=st.sampled_from(["lucene", "none"]),
                       stemmer=st.sampled_from(["porter", "none"]), lowercase=st.booleans(),
                       possessive=st.booleans())


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)
       | st.text(st.characters(max_codepoint=127), max_size=60), _ANALYZERS)
def test_the_ascii_path_equals_the_general_one(text, analyzer):
    assert text.isascii()
    _check_against_the_general_path(text, analyzer)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(_PIECES + _OTHER) | st.text(max_size=3), max_size=60).map("".join)
       | st.lists(st.sampled_from(_PIECES[:20] + _OTHER) | st.just("w" * 70), max_size=30).map(" ".join),
       _ANALYZERS)
def test_text_cut_into_ascii_and_other_pieces_equals_the_general_path(text, analyzer):
    _check_against_the_general_path(text, analyzer)


def test_the_fast_paths_on_a_corpus():
    import json
    from pathlib import Path
    corpus = Path(__file__).resolve().parents[1] / "scripts" / "data" / "tinyfacts" / "corpus.jsonl"
    texts = [f"{d.get('title', '')} {d['text']}" for d in map(json.loads, corpus.open(encoding="utf-8"))]
    assert sum(t.isascii() for t in texts) > 50
    for text in texts + ["caf\u00e9 " * 3 + "plain words " * 20 + "na\u00efve", "\u00e9" + "x" * 100_000 + "\u00e9"]:
        _check_against_the_general_path(text, Analyzer())


def test_cutting_at_spaces_stays_linear():
    """Each piece's ends are sought from where the last piece ended, never from the text's
    start: sought from the start, 300,000 non-ASCII words took over a minute."""
    script = ("from indexing.analysis import _pieces, standard_tokenize as t\n"
              "for text in ['\\u00e9a' * 200_000, '\\u00e9' + 'a' * 400_000, '\\u00e9 a ' * 100_000 + 'x ' * 100_000,\n"
              "             ('\\u00e9' + ' ' * 70 + 'a ') * 200_000]:\n"
              "    assert ''.join(p for _, p in _pieces(text)) == text\n"
              "    print(len(_pieces(text)), len(t(text)))\n")
    assert _run_python(script, timeout=60) == ["1", "1569", "1", "1569", "2", "300000", "400000", "400000"]
