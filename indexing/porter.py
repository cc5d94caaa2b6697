"""The Porter stemmer, in the variant Lucene's ``PorterStemFilter`` applies.

That variant is Martin Porter's reference implementation rather than the 1980 paper: it maps
``-bli`` to ``-ble`` (not ``-abli`` to ``-able``), adds ``-logi`` to ``-log``, and leaves words
of one or two letters alone. Those differences decide whether our BM25 tokens equal Anserini's.

Written from the published algorithm description; the word is worked on as a list of characters
``b`` whose live end is ``k`` (inclusive), with ``j`` marking the end of the stem before a
matched suffix, as in the algorithm's own notation.
"""

from __future__ import annotations

from functools import lru_cache

_VOWELS = frozenset("aeiou")


class _Word:
    __slots__ = ("b", "k", "j")

    def __init__(self, word: str) -> None:
        self.b = list(word)
        self.k = len(word) - 1
        self.j = 0

    def cons(self, i: int) -> bool:
        ch = self.b[i]
        if ch in _VOWELS:
            return False
        if ch == "y":
            return True if i == 0 else not self.cons(i - 1)
        return True

    def m(self) -> int:
        """Number of consonant-vowel sequences (the measure) in b[0..j]."""
        n, i, j = 0, 0, self.j
        while True:
            if i > j:
                return n
            if not self.cons(i):
                break
            i += 1
        i += 1
        while True:
            while True:
                if i > j:
                    return n
                if self.cons(i):
                    break
                i += 1
            i += 1
            n += 1
            while True:
                if i > j:
                    return n
                if not self.cons(i):
                    break
                i += 1
            i += 1

    def vowel_in_stem(self) -> bool:
        return any(not self.cons(i) for i in range(self.j + 1))

    def double_cons(self, i: int) -> bool:
        return i >= 1 and self.b[i] == self.b[i - 1] and self.cons(i)

    def cvc(self, i: int) -> bool:
        if i < 2 or not self.cons(i) or self.cons(i - 1) or not self.cons(i - 2):
            return False
        return self.b[i] not in "wxy"

    def ends(self, suffix: str) -> bool:
        n = len(suffix)
        if n > self.k + 1:
            return False
        if "".join(self.b[self.k - n + 1 : self.k + 1]) != suffix:
            return False
        self.j = self.k - n
        return True

    def set_to(self, s: str) -> None:
        self.b[self.j + 1 :] = list(s)
        self.k = self.j + len(s)

    def replace_if_measured(self, s: str) -> None:
        if self.m() > 0:
            self.set_to(s)

    def text(self) -> str:
        return "".join(self.b[: self.k + 1])


def _step1ab(w: _Word) -> None:
    b = w.b
    if b[w.k] == "s":
        if w.ends("sses"):
            w.k -= 2
        elif w.ends("ies"):
            w.set_to("i")
        elif b[w.k - 1] != "s":
            w.k -= 1
    if w.ends("eed"):
        if w.m() > 0:
            w.k -= 1
    elif (w.ends("ed") or w.ends("ing")) and w.vowel_in_stem():
        w.k = w.j
        if w.ends("at"):
            w.set_to("ate")
        elif w.ends("bl"):
            w.set_to("ble")
        elif w.ends("iz"):
            w.set_to("ize")
        elif w.double_cons(w.k):
            if b[w.k] not in "lsz":
                w.k -= 1
        elif w.m() == 1 and w.cvc(w.k):
            w.set_to("e")


def _step1c(w: _Word) -> None:
    if w.ends("y") and w.vowel_in_stem():
        w.b[w.k] = "i"


# Suffix tables keyed by the penultimate letter; within a group the first suffix that matches
# decides, whether or not its measure condition then allows the replacement.
_STEP2 = {
    "a": (("ational", "ate"), ("tional", "tion")),
    "c": (("enci", "ence"), ("anci", "ance")),
    "e": (("izer", "ize"),),
    "l": (("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous")),
    "o": (("ization", "ize"), ("ation", "ate"), ("ator", "ate")),
    "s": (("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous")),
    "t": (("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")),
    "g": (("logi", "log"),),
}

_STEP3 = {
    "e": (("icate", "ic"), ("ative", ""), ("alize", "al")),
    "i": (("iciti", "ic"),),
    "l": (("ical", "ic"), ("ful", "")),
    "s": (("ness", ""),),
}

_STEP4 = {
    "a": ("al",),
    "c": ("ance", "ence"),
    "e": ("er",),
    "i": ("ic",),
    "l": ("able", "ible"),
    "n": ("ant", "ement", "ment", "ent"),
    "o": ("ion", "ou"),
    "s": ("ism",),
    "t": ("ate", "iti"),
    "u": ("ous",),
    "v": ("ive",),
    "z": ("ize",),
}


def _apply_table(w: _Word, table: dict, key_index: int) -> None:
    if w.k + key_index < 0:
        return
    group = table.get(w.b[w.k + key_index])
    if not group:
        return
    for suffix, replacement in group:
        if w.ends(suffix):
            w.replace_if_measured(replacement)
            return


def _step4(w: _Word) -> None:
    if w.k == 0:
        return
    group = _STEP4.get(w.b[w.k - 1])
    if not group:
        return
    for suffix in group:
        if w.ends(suffix):
            if suffix == "ion" and not (w.j >= 0 and w.b[w.j] in "st"):
                continue
            break
    else:
        return
    if w.m() > 1:
        w.k = w.j


def _step5(w: _Word) -> None:
    w.j = w.k
    if w.b[w.k] == "e":
        a = w.m()
        if a > 1 or (a == 1 and not w.cvc(w.k - 1)):
            w.k -= 1
    if w.b[w.k] == "l" and w.double_cons(w.k) and w.m() > 1:
        w.k -= 1


@lru_cache(maxsize=1 << 20)
def stem(word: str) -> str:
    """Stem one lower-cased token. Words of one or two characters come back unchanged. A
    character beyond the Basic Multilingual Plane is one character here (analysis versions 1
    and 2); ``stem_utf16`` counts it as Lucene does."""
    if len(word) <= 2:
        return word
    return _stemmed(word)


@lru_cache(maxsize=1 << 20)
def stem_utf16(word: str) -> str:
    """``stem`` as Lucene's stemmer computes it on Java's UTF-16 strings (analysis version 3)."""
    if word.isascii() or max(word) <= "\uffff":
        return stem(word)
    return _stem_utf16(word)


def _stem_utf16(word: str) -> str:
    """``stem`` of a word holding characters beyond the Basic Multilingual Plane, as Java sees it:
    each such character is two UTF-16 units (surrogates, consonants to the algorithm), which count
    in the length rule and the consonant-vowel-consonant test ("\U0001d400s" is three units, so
    Lucene drops its "s"). The units are stemmed and joined back; no rule removes a surrogate
    alone (a suffix is letters; a double consonant is two equal units, and a pair's differ)."""
    units = "".join(c if c <= "\uffff" else chr(0xD800 + ((ord(c) - 0x10000) >> 10)) + chr(0xDC00 + ((ord(c) - 0x10000) & 0x3FF))
                    for c in word)
    out = units if len(units) <= 2 else _stemmed(units)
    return out.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _stemmed(word: str) -> str:
    w = _Word(word)
    _step1ab(w)
    _step1c(w)
    _apply_table(w, _STEP2, -1)
    _apply_table(w, _STEP3, 0)
    _step4(w)
    _step5(w)
    return w.text()
