"""Text analysis for lexical indexes: Lucene's English analyzer, reimplemented.

The chain is the one Anserini uses for BEIR (``DefaultEnglishAnalyzer``): standard tokenisation
(Unicode word boundaries, UAX #29), English possessive removal, lower-casing, Lucene's English
stop words, Porter stemming. Matching it token for token is what makes our BM25 numbers equal
Lucene's, so every step follows Lucene's behaviour rather than a generic tokenizer's.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Literal

import regex

from indexing.porter import stem as porter_stem
from indexing.porter import stem_utf16

# org.apache.lucene.analysis.en.EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (33 words).
LUCENE_ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)

# Word-break classes (UAX #29) that the standard tokenizer keeps.
_AL = r"\p{WB=ALetter}\p{WB=Hebrew_Letter}"
_NU = r"\p{WB=Numeric}"
_EX = r"\p{WB=ExtendNumLet}"
_FE = r"\p{WB=Extend}\p{WB=Format}\p{WB=ZWJ}"
_MID_LETTER = r"\p{WB=MidLetter}\p{WB=MidNumLet}\p{WB=Single_Quote}"
_MID_NUM = r"\p{WB=MidNum}\p{WB=MidNumLet}\p{WB=Single_Quote}"

# A word: letters, digits and connectors joined by the UAX #29 rules that apply within words:
# letter x letter/digit (WB5, WB9, WB10), digit x digit (WB8), ExtendNumLet both ways (WB13a/b),
# letter (MidLetter|MidNumLet|') letter (WB6/7), digit (MidNum|MidNumLet|') digit (WB11/12);
# Extend/Format/ZWJ characters are carried by whatever precedes them (WB4).
# A match stops after _WORD_RUN characters (a multiple of MAX_TOKEN_LENGTH, so the pieces cut
# from consecutive matches are the pieces of the whole word): the engine keeps ~110 bytes of
# backtracking state a character, and one 8M-character word (a DNA string) raised MemoryError.
_WORD_RUN = 64 * 255
_WORD = (
    rf"[{_AL}{_NU}{_EX}](?:[{_AL}{_NU}{_EX}{_FE}]"
    rf"|(?<=[{_AL}][{_FE}]*)[{_MID_LETTER}](?=[{_FE}]*[{_AL}])"
    rf"|(?<=[{_NU}][{_FE}]*)[{_MID_NUM}](?=[{_FE}]*[{_NU}])){{0,{_WORD_RUN - 1}}}"
)
_KATAKANA = rf"\p{{WB=Katakana}}[\p{{WB=Katakana}}{_EX}{_FE}]*"
# Ideographs and hiragana are one token per character; South-East Asian scripts (no spaces
# between words) come through as whole runs, as Lucene's tokenizer emits them.
_SINGLE = rf"[\p{{Ideographic}}\p{{Script=Hiragana}}][{_FE}]*"
_SOUTHEAST_ASIAN = r"\p{LB=SA}+"
# Lucene (since 8.x) also emits emoji as tokens: pictographs such as (c), (R), TM and arrows,
# joined into one token through zero-width joiners, and regional-indicator pairs (flags).
_EMOJI = (rf"\p{{Extended_Pictographic}}(?:[{_FE}]|(?<=\u200d)\p{{Extended_Pictographic}}){{0,{_WORD_RUN - 1}}}"
          r"|\p{RI}{2}")  # (bounded as words are: an 8M-character joiner chain raised MemoryError)

# Version 2 follows Lucene where version 1 did not (found by differential tests against Lucene's
# analyzer: tests/test_lucene.py): Hebrew letters keep a double quote between them (WB7b/c:
# acronyms such as the IDF's) and a single quote after them (WB7a); each South-East Asian
# character carries its Extend/Format/ZWJ marks (a combining accent or a zero-width joiner split
# a Thai run, dropping the mark); a run of connectors alone (ExtendNumLet: "_", "\u2040") is no
# token and gives back the marks it took (``_scan``); case is folded code point by code point
# (``lower_code_points``); katakana joins letters and digits through a connector (WB13a/b).
# Still different (tests/test_lucene.py leaves them out): where the Unicode versions differ
# (the ``regex`` module's against Lucene's), the characters whose properties changed (some
# pictographs, U+00B8, U+0600-0605); a word longer than MAX_TOKEN_LENGTH, which Lucene ends at
# the longest token its 255-character buffer holds (then starts again) and ``_cut`` cuts every 255
# characters: the same pieces unless a joiner or an underscore falls at a cut ("a" * 254 + "'s":
# Lucene "a" * 254 and "s", here "a" * 254 + "'" and "s"; no token of SciFact's or NFCorpus's
# corpus is that long); and a Hebrew letter, double quote, Hebrew letter followed by a joiner,
# where Lucene ends the word before the joiner ('\u05d0"\u05d1.a').
_HL = r"\p{WB=Hebrew_Letter}"
_DQ, _SQ = r"\p{WB=Double_Quote}", r"\p{WB=Single_Quote}"
_LETTERS_V2 = (  # each joiner is matched before its look-behind is tried: most words end at a space
    rf"[{_AL}{_NU}{_EX}](?:[{_AL}{_NU}{_EX}{_FE}]"
    rf"|[{_MID_LETTER}](?<=[{_AL}][{_FE}]*[{_MID_LETTER}])(?=[{_FE}]*[{_AL}])"
    rf"|[{_MID_NUM}](?<=[{_NU}][{_FE}]*[{_MID_NUM}])(?=[{_FE}]*[{_NU}])"
    rf"|{_DQ}(?<={_HL}[{_FE}]*{_DQ})(?<!{{bound}}{_DQ})(?=[{_FE}]*{_HL})"
    rf"|{_SQ}(?<={_HL}[{_FE}]*{_SQ})(?<!{{bound}}{_SQ})){{0,{_WORD_RUN - 1}}}"
).replace("{bound}", (  # Lucene's quirk: a Hebrew letter a joiner binds to the letter before it
    rf"(?:\p{{WB=ALetter}}[{_FE}]*[\p{{WB=MidLetter}}\p{{WB=MidNumLet}}{_SQ}]"  # takes no quote after it
    rf"|{_HL}[{_FE}]*[\p{{WB=MidLetter}}\p{{WB=MidNumLet}}])[{_FE}]*{_HL}[{_FE}]*"))
_KA = r"\p{WB=Katakana}"
_KATAKANA_V2 = rf"[{_KA}{_EX}][{_KA}{_EX}{_FE}]{{0,{_WORD_RUN - 1}}}"
# Letters/digits and katakana never join directly, only through a connector (WB13a/b: "a_\u30ab"
# is one word): a word is chunks of either, each after the first following a connector.
_WORD_V2 = (rf"(?:{_LETTERS_V2}|{_KATAKANA_V2})"
            rf"(?:(?=[{_KA}{_AL}{_NU}])(?<=[{_EX}][{_FE}]*)(?:{_LETTERS_V2}|{_KATAKANA_V2})){{0,{_WORD_RUN}}}")
_SOUTHEAST_ASIAN_V2 = rf"\p{{LB=SA}}[\p{{LB=SA}}{_FE}]{{0,{_WORD_RUN - 1}}}"  # bounded in characters, as words
# zero-width joiners no word took join the pictograph after them (WB3c); a flag's two regional
# indicators carry their marks (WB4)
_EP = r"\p{Extended_Pictographic}"
_PICTOGRAPH = rf"{_EP}(?:(?!\ufe0f)[{_FE}]|(?<=\u200d){_EP}){{0,{_WORD_RUN - 1}}}"  # marks, joined pictographs
_EMOJI_V2 = (  # after a variation selector 16, only a joiner and a pictograph continue (Lucene's rule)
    # Joiners before a pictograph are taken from the first of their run only: tried at every joiner
    # of a long run that no pictograph ends, each try read the rest of the run (quadratic: 80,000
    # joiners took 20 s). Inside a run that is where a match may begin only after a run longer than
    # _WORD_RUN, or a word cut at _WORD_RUN characters, before it.
    rf"(?:(?<!\u200d)\u200d{{1,{_WORD_RUN}}})?{_PICTOGRAPH}(?:\ufe0f\u200d(?={_EP}){_PICTOGRAPH}){{0,{_WORD_RUN}}}\ufe0f?"
    rf"|\p{{RI}}[{_FE}]*\p{{RI}}[{_FE}]*")
_TOKEN = {1: regex.compile(f"{_WORD}|{_KATAKANA}|{_SINGLE}|{_SOUTHEAST_ASIAN}|{_EMOJI}", regex.V0),
          2: regex.compile(f"{_WORD_V2}|{_SINGLE}|{_SOUTHEAST_ASIAN_V2}|{_EMOJI_V2}", regex.V0)}
_TOKEN[3] = _TOKEN[2]  # (version 3 tokenises as 2; it stems as Lucene: ANALYSIS_VERSION)
_HAS_ALNUM = regex.compile(rf"[{_AL}{_NU}]")
_HAS_WORD_CHAR = regex.compile(rf"[{_AL}{_NU}{_KA}]")
_HAS_CONNECTOR = regex.compile(rf"[{_EX}]")
_MAY_BEGIN_INSIDE = regex.compile(r"[\p{LB=SA}\u200d]")  # what can begin a token inside a run of connectors
ANALYSIS_VERSION = 3  # what new indexes use; an index keeps the version it was built with
# Version 3 is version 2 with Porter stemming on UTF-16 units, as Lucene stems Java strings: a
# letter beyond the Basic Multilingual Plane counts twice (indexing.porter.stem_utf16).

# Version 2 on ASCII, with the standard library's engine (analysis ~2.2x faster on SciFact's
# corpus: docs/BENCHMARKS.md). In ASCII the classes above hold letters, digits, "_"
# (ExtendNumLet), MidLetter "'.:" and MidNum "',.;", and nothing else (no Extend/Format, Hebrew
# letter, katakana, pictograph or South-East Asian character), so this is ``_LETTERS_V2``
# restricted to ASCII and a run of connectors alone ("___") is simply no token. Other text is cut
# at ASCII white space (``_pieces``) and its ASCII stretches go this way too. ``test_analysis.py``
# checks both against the general expression on drawn text, every setting; ``test_lucene.py``
# against Lucene.
_ASCII_WORD = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_]|(?<=[A-Za-z])['.:](?=[A-Za-z])|(?<=[0-9])[',.;](?=[0-9]))"
    rf"{{0,{_WORD_RUN - 1}}}")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_ASCII_SPACES = " \t\n\r\x0b\x0c"
_ASCII_SPACE = re.compile(f"[{_ASCII_SPACES}]")
_MERGE_GAP = 64  # ASCII stretches shorter than this between non-ASCII words go the general way too

# Every character class the analysis reads from Unicode's tables (the ``regex`` module's), for
# ``unicode_tables``: an index built under other tables than it is searched with tokenises the
# characters whose properties changed differently on each side.
_CLASSES = (_AL, _NU, _EX, _FE, _MID_LETTER, _MID_NUM, _KA, r"\p{Ideographic}\p{Script=Hiragana}",
            r"\p{LB=SA}", _EP, r"\p{RI}", _HL, _DQ, _SQ)

MAX_TOKEN_LENGTH = 255  # Lucene StandardTokenizer's default; longer tokens are cut in pieces
_APOSTROPHES = ("'", "\u2019", "\uff07")


def standard_tokenize(text: str, version: int = ANALYSIS_VERSION) -> list[str]:
    """Split text into word tokens as Lucene's ``StandardTokenizer`` does (case preserved).
    ``version`` 1: the tokens of indexes built before version 2 (see ``_WORD_V2``)."""
    if version == 1:
        return _cut([t for t in _TOKEN[1].findall(text) if t[0] != "_" or _HAS_ALNUM.search(t)])
    return _cut([tok for general, piece in _pieces(text)
                 for tok in (_words_v2(piece) if general else _ascii_words(piece))])


def _cut(tokens: list[str]) -> list[str]:
    """Tokens longer than MAX_TOKEN_LENGTH cut in pieces of that length, as Lucene does."""
    if all(len(tok) <= MAX_TOKEN_LENGTH for tok in tokens):
        return tokens
    n = MAX_TOKEN_LENGTH
    return [tok[i : i + n] for tok in tokens for i in range(0, len(tok), n)]


def _ascii_words(text: str) -> list[str]:
    """Version 2's tokens of ASCII text (before the cut), by ``_ASCII_WORD``."""
    tokens = _ASCII_WORD.findall(text)
    if "_" in text:
        tokens = [t for t in tokens if t.strip("_")]
    return tokens


def _pieces(text: str) -> list[tuple[bool, str]]:
    """``text`` cut at ASCII white space into (general, piece) in order: pieces holding a
    non-ASCII character (general: True) and ASCII stretches. No token crosses an ASCII space
    character (it belongs to no class a token or a look-around of version 2 reads), so the
    pieces' tokens, in order, are the text's. Linear: each character is looked at a bounded
    number of times."""
    if text.isascii():
        return [(False, text)]
    spans: list[list[int]] = []
    end = 0
    for m in _NON_ASCII.finditer(text):
        s, e = m.span()
        if s < end:
            continue  # inside the piece taken last (a piece ends at a space or the text's end)
        left = max(text.rfind(c, end, s) for c in _ASCII_SPACES)
        left = end if left < 0 else left + 1
        space = _ASCII_SPACE.search(text, e)
        end = len(text) if space is None else space.start()
        if spans and left - spans[-1][1] < _MERGE_GAP:
            spans[-1][1] = end
        else:
            spans.append([left, end])
    out, prev = [], 0
    for s, e in spans:
        if prev < s:
            out.append((False, text[prev:s]))
        out.append((True, text[s:e]))
        prev = e
    if prev < len(text):
        out.append((False, text[prev:]))
    return out


def _words_v2(text: str) -> list[str]:
    """Version 2's tokens (before the 255-character cut) by the general expression."""
    tokens = _TOKEN[2].findall(text)
    if _HAS_CONNECTOR.search(text) and any(_connectors_only(t) for t in tokens):
        tokens = _scan(text)
    return tokens


def _connectors_only(token: str) -> bool:
    return _HAS_CONNECTOR.match(token) is not None and _HAS_WORD_CHAR.search(token) is None


def _scan(text: str) -> list[str]:
    """The version-2 tokens one match at a time. A match of connectors (and their marks) alone is
    no token; Lucene's tokenizer would start again one character on, and inside such a run only a
    South-East Asian character or a zero-width joiner can begin a token ("_" + Lao vowel sign +
    letter). So just those places are tried, anchored, in one pass over the run: linear in the
    text (a run of a million underscores was searched a million times)."""
    out, pos, rx = [], 0, _TOKEN[2]
    while (m := rx.search(text, pos)) is not None:
        if not _connectors_only(m.group()):
            out.append(m.group())
            pos = m.end()
            continue
        taken = m.start() + 1  # where a token inside the run may begin: after the last one taken
        for start in _MAY_BEGIN_INSIDE.finditer(text, m.start() + 1, m.end()):
            if start.start() >= taken:
                inner = rx.match(text, start.start())
                if inner is not None and not _connectors_only(inner.group()):
                    out.append(inner.group())
                    taken = inner.end()
        pos = max(taken, m.end())
    return out


def lower_code_points(token: str) -> str:
    """Lower-case each code point alone, as Lucene's LowerCaseFilter does (Java's
    ``Character.toLowerCase``): Python's ``str.lower`` applies context and full mappings, which
    give a final "\u03c2" for a capital sigma ending a word (Lucene: "\u03c3") and "i\u0307"
    for "\u0130" (Lucene: "i"); those two are the only differences."""
    low = token.lower()
    if "\u03c2" not in low and "\u0307" not in low:
        return low
    return "".join("i" if c == "\u0130" else c.lower() for c in token)


def strip_possessive(token: str) -> str:
    """Lucene's EnglishPossessiveFilter: drop a trailing 's (any apostrophe form, s or S)."""
    if len(token) >= 2 and token[-1] in "sS" and token[-2] in _APOSTROPHES:
        return token[:-2]
    return token


@dataclass(frozen=True)
class Analyzer:
    """Lucene-compatible English analysis; its settings go into every index manifest."""

    stopwords: Literal["lucene", "none"] = "lucene"
    stemmer: Literal["porter", "none"] = "porter"
    lowercase: bool = True
    possessive: bool = True
    version: int = ANALYSIS_VERSION  # 1: str.lower and the version-1 tokenizer (indexes built before 2);
    # 2: the stemmer counting code points (indexes built before 3)

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or self.version not in _TOKEN:
            raise ValueError(f"analysis version must be one of {sorted(_TOKEN)}, not {self.version!r} "
                             "(an index of a newer retriever?)")
        if self.stopwords not in ("lucene", "none"):
            raise ValueError(f"stopwords must be 'lucene' or 'none', not {self.stopwords!r}")
        if self.stemmer not in ("porter", "none"):
            raise ValueError(f"stemmer must be 'porter' or 'none', not {self.stemmer!r}")

    def config(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> "Analyzer":
        return cls(**{"version": 1, **config})  # recorded before versions: version 1

    def __call__(self, text: str) -> list[str]:
        stop = LUCENE_ENGLISH_STOPWORDS if self.stopwords == "lucene" else frozenset()
        stemming = self.stemmer == "porter"
        if self.version == 1:
            return self._tokens(standard_tokenize(text, 1), stop, stemming)
        out: list[str] = []
        for general, piece in _pieces(text):
            if general:
                out += self._tokens(_cut(_words_v2(piece)), stop, stemming)
            else:
                out += self._ascii(piece, stop, stemming)
        return out

    def _tokens(self, tokens: list[str], stop: frozenset, stemming: bool) -> list[str]:
        """The filters, token by token, on the tokenizer's output (any text)."""
        out = []
        code_points = self.version >= 2
        stem = stem_utf16 if self.version >= 3 else porter_stem
        for tok in tokens:
            if self.possessive:
                tok = strip_possessive(tok)
            if self.lowercase:
                low = tok.lower()
                if code_points and ("\u03c2" in low or "\u0307" in low):  # see lower_code_points
                    low = lower_code_points(tok)
                tok = low
            if not tok or tok in stop:
                continue
            out.append(stem(tok) if stemming else tok)
        return out

    def _ascii(self, text: str, stop: frozenset, stemming: bool) -> list[str]:
        """``_tokens`` of ASCII text's tokens, the steps done a list at a time (ASCII case
        folding is per character, so lower-casing first tokenises alike)."""
        tokens = _cut(_ascii_words(text.lower() if self.lowercase else text))
        if self.possessive and "'" in text:
            tokens = [strip_possessive(t) for t in tokens]
        if stemming:
            return [porter_stem(t) for t in tokens if t and t not in stop]
        return [t for t in tokens if t and t not in stop]


def unicode_tables() -> dict:
    """What an index records of the Unicode tables its documents were analysed with: the
    ``regex`` module's version, Python's Unicode version (case mapping) and a sha256 of every
    character class the analysis uses (computed once a process, ~0.4 s)."""
    return {"regex": regex.__version__, "unicode": unicodedata.unidata_version, "sha256": _tables_digest()}


def tables_note(recorded) -> str | None:
    """None when ``recorded`` (an index's ``unicode_tables``, or None for an index from before
    they were recorded) matches the tables here; else what to tell the user. The digest is
    computed only when a version differs."""
    if not isinstance(recorded, dict):
        return None
    here = {"regex": regex.__version__, "unicode": unicodedata.unidata_version}
    if all(recorded.get(k) == v for k, v in here.items()) or recorded.get("sha256") == _tables_digest():
        return None
    return (f"built with other Unicode tables (regex {recorded.get('regex')}, Unicode {recorded.get('unicode')}; "
            f"here regex {here['regex']}, Unicode {here['unicode']}): queries holding characters whose "
            "properties changed between them may not match their documents; rebuild the index to be exact")


@functools.cache
def _tables_digest() -> str:
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    h = hashlib.sha256()
    for cls in _CLASSES:
        h.update("".join(regex.findall(f"[{cls}]+", every)).encode("utf-8"))
        h.update(b"\0")
    h.update("".join(c.lower() for c in every).encode("utf-8"))
    return h.hexdigest()
