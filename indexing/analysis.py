"""Text analysis for lexical indexes: Lucene's English analyzer, reimplemented.

The chain is the one Anserini uses for BEIR (``DefaultEnglishAnalyzer``): standard tokenisation
(Unicode word boundaries, UAX #29), English possessive removal, lower-casing, Lucene's English
stop words, Porter stemming. Matching it token for token is what makes our BM25 numbers equal
Lucene's, so every step follows Lucene's behaviour rather than a generic tokenizer's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import regex

from indexing.porter import stem as porter_stem

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
_EMOJI = rf"\p{{Extended_Pictographic}}(?:[{_FE}]|(?<=\u200d)\p{{Extended_Pictographic}})*|\p{{RI}}{{2}}"
_TOKEN = regex.compile(f"{_WORD}|{_KATAKANA}|{_SINGLE}|{_SOUTHEAST_ASIAN}|{_EMOJI}", regex.V0)
_HAS_ALNUM = regex.compile(rf"[{_AL}{_NU}]")

MAX_TOKEN_LENGTH = 255  # Lucene StandardTokenizer's default; longer tokens are cut in pieces
_APOSTROPHES = ("'", "\u2019", "\uff07")


def standard_tokenize(text: str) -> list[str]:
    """Split text into word tokens as Lucene's ``StandardTokenizer`` does (case preserved)."""
    out = []
    for tok in _TOKEN.findall(text):
        if tok[0] == "_" and not _HAS_ALNUM.search(tok):
            continue  # a run of connectors alone is not a word
        if len(tok) > MAX_TOKEN_LENGTH:
            out.extend(tok[i : i + MAX_TOKEN_LENGTH] for i in range(0, len(tok), MAX_TOKEN_LENGTH))
        else:
            out.append(tok)
    return out


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

    def __post_init__(self) -> None:
        if self.stopwords not in ("lucene", "none"):
            raise ValueError(f"stopwords must be 'lucene' or 'none', not {self.stopwords!r}")
        if self.stemmer not in ("porter", "none"):
            raise ValueError(f"stemmer must be 'porter' or 'none', not {self.stemmer!r}")

    def config(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> "Analyzer":
        return cls(**config)

    def __call__(self, text: str) -> list[str]:
        stop = LUCENE_ENGLISH_STOPWORDS if self.stopwords == "lucene" else frozenset()
        stemming = self.stemmer == "porter"
        out = []
        for tok in standard_tokenize(text):
            if self.possessive:
                tok = strip_possessive(tok)
            if self.lowercase:
                tok = tok.lower()
            if not tok or tok in stop:
                continue
            out.append(porter_stem(tok) if stemming else tok)
        return out
