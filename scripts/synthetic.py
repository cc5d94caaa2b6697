"""Seeded synthetic corpora for scale and speed benchmarks (no external data).

- ``write_text_corpus``: BEIR-style JSONL of pseudo-word documents whose term frequencies follow
  a Zipf law (as natural text does), for BM25 at any scale; with ``topics``, documents mix a
  dominant and a secondary topic's words into the Zipf background (``topical_text_queries``
  asks about one topic), so words co-occur as in text about something.
- ``sparse_vectors``: SPLADE-like document vectors: ~250 non-zero terms over a 30,522-token
  vocabulary, term popularity Zipfian, weights in (0, 3] skewed small, as SPLADE models produce.

    python scripts/synthetic.py text OUT.jsonl --docs 1000000 [--topics 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator

import numpy as np

_SYLLABLES = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"] + ["qu" + v for v in "aei"]


def pseudo_words(n: int, seed: int = 0) -> list[str]:
    """n distinct pronounceable words of 2-4 syllables (none is an English stop word)."""
    rng = np.random.default_rng(seed)
    words: dict[str, None] = {}
    while len(words) < n:
        k = rng.integers(2, 5, size=4096)
        picks = rng.integers(0, len(_SYLLABLES), size=(4096, 4))
        for row, length in zip(picks, k):
            words.setdefault("".join(_SYLLABLES[i] for i in row[:length]))
            if len(words) == n:
                break
    return list(words)


def zipf_probabilities(n: int, exponent: float = 1.1) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return p / p.sum()


TOPIC_TERMS = 400  # words per topic (topical corpora)
TOPIC_EXPONENT = 0.8  # Zipf law over a topic's words
CONTENT_RANK = 100  # topic words are drawn from ranks >= this one (the top ranks play stop words)


def topic_words(topics: int, vocab: int = 200_000, seed: int = 0) -> np.ndarray:
    """(topics, TOPIC_TERMS) word ranks: each topic's words, drawn uniformly from the content
    ranks, its most frequent first (a topic's own Zipf law runs along its row)."""
    if topics < 1 or vocab < CONTENT_RANK + TOPIC_TERMS:
        raise ValueError(f"topics must be >= 1 and vocab >= {CONTENT_RANK + TOPIC_TERMS} (topic words come from "
                         f"ranks >= {CONTENT_RANK}, {TOPIC_TERMS} a topic), got topics={topics}, vocab={vocab}")
    rng = np.random.default_rng([seed, 7])
    return np.stack([rng.choice(np.arange(CONTENT_RANK, vocab), TOPIC_TERMS, replace=False) for _ in range(topics)])


def _topical_tokens(rng, lengths: np.ndarray, table: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Word ranks of documents of ``lengths`` tokens, document by document: a dominant topic's
    words make U(0.3, 0.5) of each, a secondary topic's U(0.05, 0.15) (topics uniform, so
    documents are i.i.d. and corpus order carries no topic), the rest the corpus's Zipf law."""
    n = len(lengths)
    first, second = rng.integers(0, len(table), n), rng.integers(0, len(table), n)
    n1 = np.rint(lengths * rng.uniform(0.3, 0.5, n)).astype(np.int64)
    n2 = np.rint(lengths * rng.uniform(0.05, 0.15, n)).astype(np.int64)
    nb = lengths - n1 - n2
    within = np.cumsum(zipf_probabilities(table.shape[1], TOPIC_EXPONENT))
    doc = np.concatenate([np.repeat(np.arange(n), n1), np.repeat(np.arange(n), n2), np.repeat(np.arange(n), nb)])
    topic = np.concatenate([np.repeat(first, n1), np.repeat(second, n2)])
    ranks = np.minimum(np.searchsorted(within, rng.random(len(topic))), table.shape[1] - 1)
    background = np.minimum(np.searchsorted(cdf, rng.random(int(nb.sum()))), len(cdf) - 1)
    ids = np.concatenate([table[topic, ranks], background])
    return ids[np.lexsort((rng.random(len(ids)), doc))]  # each document's words in a random order


def write_text_corpus(path: Path, docs: int, vocab: int = 200_000, mean_len: int = 60,
                      seed: int = 0, topics: int = 0) -> None:
    """A JSONL corpus ({"_id", "title", "text"}) of Zipf-distributed pseudo-words; with
    ``topics``, documents are topic mixtures (``_topical_tokens``; ``topic_words(topics, vocab,
    seed)``), as text about something is: its words co-occur."""
    if topics < 0:
        raise ValueError(f"topics must be >= 0 (0: words drawn independently), got {topics}")
    rng = np.random.default_rng(seed)
    words = np.array(pseudo_words(vocab, seed))
    cdf = np.cumsum(zipf_probabilities(vocab))
    table = topic_words(topics, vocab, seed) if topics else None
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, docs, 10_000):
            n = min(10_000, docs - start)
            lengths = _lengths(rng, n, mean_len)
            if table is None:
                ids = np.searchsorted(cdf, rng.random(lengths.sum()))
                ids = np.minimum(ids, vocab - 1)
            else:
                ids = _topical_tokens(rng, lengths, table, cdf)
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            lines = []
            for i in range(n):
                toks = words[ids[bounds[i] : bounds[i + 1]]]
                lines.append(json.dumps({"_id": f"s{start + i}", "title": " ".join(toks[:4]),
                                         "text": " ".join(toks[4:])}))
            f.write("\n".join(lines) + "\n")


def text_queries(num: int, vocab: int = 200_000, seed: int = 1) -> dict[str, str]:
    """Queries of 2-6 words drawn from the mid-frequency vocabulary (ranks 100-20,000)."""
    rng = np.random.default_rng(seed)
    words = pseudo_words(vocab, 0)
    out = {}
    for i in range(num):
        ranks = rng.integers(100, 20_000, size=rng.integers(2, 7))
        out[f"q{i}"] = " ".join(words[r] for r in ranks)
    return out


def weighted_text_queries(num: int, vocab: int = 200_000, first_rank: int = 100, seed: int = 2) -> dict[str, str]:
    """Queries of 2-6 words drawn with the corpus's own Zipf frequencies from ranks >= ``first_rank``
    (the top ranks play the stop words an analyzer drops): as in query logs, where the terms
    people type follow the collection's frequencies, so most queries hold a term of long postings."""
    rng = np.random.default_rng(seed)
    words = pseudo_words(vocab, 0)
    p = zipf_probabilities(vocab)[first_rank:]
    p = p / p.sum()
    out = {}
    for i in range(num):
        ranks = first_rank + rng.choice(len(p), rng.integers(2, 7), p=p)
        out[f"w{i}"] = " ".join(words[r] for r in ranks)
    return out


def topical_text_queries(num: int, topics: int, vocab: int = 200_000, corpus_seed: int = 0,
                         seed: int = 3, topical: float = 0.75) -> dict[str, str]:
    """Queries of 2-6 words about one topic each (of the corpus ``write_text_corpus(...,
    seed=corpus_seed, topics=topics)``): a word is the topic's (its Zipf law) with probability
    ``topical``, else drawn with the corpus's frequencies from the content ranks (stop words
    dropped, as ``weighted_text_queries``)."""
    rng = np.random.default_rng(seed)
    words = pseudo_words(vocab, corpus_seed)
    table = topic_words(topics, vocab, corpus_seed)
    within = zipf_probabilities(table.shape[1], TOPIC_EXPONENT)
    p = zipf_probabilities(vocab)[CONTENT_RANK:]
    p = p / p.sum()
    out = {}
    for i in range(num):
        topic, size = rng.integers(0, topics), rng.integers(2, 7)
        from_topic = rng.random(size) < topical
        ranks = np.where(from_topic, table[topic, rng.choice(table.shape[1], size, p=within)],
                         CONTENT_RANK + rng.choice(len(p), size, p=p))
        out[f"t{i}"] = " ".join(words[r] for r in ranks)
    return out


def _lengths(rng, n: int, mean_len: int) -> np.ndarray:
    """Tokens of ``n`` documents of ``write_text_corpus``: log-normal around ``mean_len``, >= 5."""
    return np.maximum(5, rng.lognormal(np.log(mean_len), 0.5, size=n).astype(int))


def text_df_shares(vocab: int = 200_000, mean_len: int = 60) -> np.ndarray:
    """The expected share of ``write_text_corpus``'s documents (no topics) holding each rank's
    word, decreasing with the rank: 1 - E[(1 - p)^length] over the corpus's length law (the
    words are drawn independently). Porter may fold two pseudo-words into one term, whose share
    is then higher: ``profiled_text_queries``'s caller measures the index's own."""
    lengths, counts = np.unique(_lengths(np.random.default_rng(12345), 200_000, mean_len), return_counts=True)
    p = zipf_probabilities(vocab)
    absent = np.zeros(vocab)
    for length, count in zip(lengths.tolist(), counts.tolist()):
        absent += count * (1.0 - p) ** length
    return 1.0 - absent / counts.sum()


def profiled_text_queries(num: int, profile: list[list[float]], vocab: int = 200_000, seed: int = 4,
                          prefix: str = "p") -> dict[str, str]:
    """Queries shaped like real ones: each copies one real query (drawn from ``profile``: per
    query, the share of its corpus's documents holding each of its terms, as
    ``scripts/query_profile.py`` measures a BEIR collection's) onto the pseudo-words whose
    expected share (``text_df_shares``) is nearest that share times a jitter of up to +-10%, a
    word once per query. Real queries keep terms of long postings after the analyzer drops stop
    words (SciFact's train claims: a median query's most common term is in 28% of documents);
    the mid-rank sets above have none above ~4%."""
    if not profile or not all(profile):
        raise ValueError("profile must hold at least one query, each with at least one term share")
    if not all(0.0 < x <= 1.0 for q in profile for x in q):
        raise ValueError("profile shares must lie in (0, 1]: the share of documents holding a term")
    rng = np.random.default_rng(seed)
    words = pseudo_words(vocab, 0)
    falling = -text_df_shares(vocab)  # ascending, for searchsorted
    out = {}
    for i in range(num):
        shares = np.asarray(profile[rng.integers(len(profile))], dtype=np.float64)
        target = shares * np.exp(rng.uniform(-0.1, 0.1, len(shares)))
        taken: list[int] = []
        for r in np.minimum(np.searchsorted(falling, -target), vocab - 1).tolist():
            while r in taken:  # two terms of one share: the next word down
                r = (r + 1) % vocab
            taken.append(r)
        out[f"{prefix}{i}"] = " ".join(words[r] for r in taken)
    return out


def sparse_vectors(docs: int, vocab: int = 30_522, mean_terms: int = 250, seed: int = 0
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(token ids ascending, float32 weights) per document, SPLADE-like statistics."""
    rng = np.random.default_rng(seed)
    p = zipf_probabilities(vocab, 0.9)
    cdf = np.cumsum(p)
    for _ in range(docs):
        n = int(np.clip(rng.normal(mean_terms, mean_terms / 4), 10, vocab // 4))
        ids = np.unique(np.minimum(np.searchsorted(cdf, rng.random(int(n * 1.3))), vocab - 1))[:n]
        weights = np.minimum(3.0, rng.gamma(1.2, 0.35, size=len(ids))).astype(np.float32) + 0.01
        yield ids.astype(np.int32), weights


def sparse_queries(num: int, vocab: int = 30_522, seed: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """~25-term SPLADE-like queries."""
    return list(sparse_vectors(num, vocab, mean_terms=25, seed=seed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["text"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--topics", type=int, default=0, help="documents as topic mixtures (0: i.i.d. words)")
    args = ap.parse_args()
    write_text_corpus(args.out, args.docs, seed=args.seed, topics=args.topics)


if __name__ == "__main__":
    main()
