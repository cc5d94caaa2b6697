"""Seeded SPLADE-like sparse vectors with topical structure, streamed, for the scale benchmarks.

The model (:class:`SpladeLike`; defaults in brackets):

- Vocabulary: BERT's 30,522 wordpiece ids; ids below ``first_token`` [999] (``[PAD]``,
  ``[unusedN]``, ``[CLS]``, ``[SEP]``, ``[MASK]``) are never produced.
- Background: a Zipf law [exponent 1.0] over the usable ids in a fixed seeded random order, so
  frequent tokens are scattered over the id space as wordpieces are.
- Topics [1,000]: each is ``topic_terms`` [400] distinct ids drawn uniformly, with a Zipf law
  [exponent 0.8] over them.
- A document has a dominant topic, a secondary topic (both uniform over topics, independent of
  its position: documents are i.i.d., so corpus order carries no topic, as in a shuffled
  corpus) and shares of its terms drawn from each: dominant U(0.45, 0.70), secondary
  U(0.10, 0.25), the rest from the background. It has exactly ``n ~ U{doc_terms}``
  [120..250] distinct term ids (draws repeat; drawing goes on until ``n`` distinct ids are in).
- Queries the same way with ``query_terms`` [20..40] ids, dominant share U(0.60, 0.85),
  secondary U(0.0, 0.15).
- Weights (float32) are log-normal, larger for topical terms, like SPLADE's (a few large, many
  small): ``exp(N(mu, 0.6))`` with mu -0.4 (dominant topic), -0.8 (secondary), -1.3
  (background); queries add +0.3; clipped to [0.01, 4.0]. A term drawn from several sources
  keeps the weight of its first draw.

Reproducible: documents are generated in fixed blocks of ``block`` documents, block ``b`` from
``numpy.random.default_rng([seed, 1, b])`` (queries: ``[seed, 2, b]``; the topic model:
``[seed, 0]``). Document ``i`` is therefore the same whatever range is asked for, and ranges
can be generated in parallel. Memory is one block, never the corpus.

Consumers: :meth:`SpladeLike.documents` yields ``(ids int32 ascending, weights float32)`` per
document, the stream ``indexing.impacts.build_impact_index`` takes; :meth:`SpladeLike.blocks`
yields whole blocks as CSR arrays plus topics (for vectorised consumers: document reordering,
brute-force checks); :meth:`SpladeLike.queries` returns a list of (ids, weights).

    python scripts/synthetic_splade.py --docs 1000000      # prints docs/s and statistics
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
from numba import njit

VOCAB = 30_522
FIRST_TOKEN = 999  # BERT: 0 [PAD], 1-998 [unusedN] and specials ([UNK] 100 .. [MASK] 103)


class Block(NamedTuple):
    """Documents ``start .. start + len(topic) - 1`` as CSR: row ``i`` is
    ``ids[indptr[i]:indptr[i + 1]]`` (ascending) with ``weights`` alongside."""

    start: int
    indptr: np.ndarray  # int64, len + 1
    ids: np.ndarray  # int32
    weights: np.ndarray  # float32
    topic: np.ndarray  # int32, dominant topic per row
    second: np.ndarray  # int32, secondary topic per row


GUIDE = 1 << 16  # guide-table buckets for inverse-CDF sampling


@njit(cache=True, nogil=True)
def _inverse_cdf(cdf, guide, v):
    """The first index with ``cdf[index] > v`` (``searchsorted(cdf, v, "right")``, clamped to
    the last index): ``guide[b]`` is that index for the bucket's lower edge ``b / GUIDE``, so
    when the next edge maps to the same index it is the answer, else scan forward from it."""
    b = int(v * GUIDE)
    j = guide[b]
    if guide[b + 1] == j:  # the bucket lies inside one rank (most draws of a Zipf law)
        return j
    last = cdf.shape[0] - 1
    while j < last and cdf[j] <= v:
        j += 1
    return j


@njit(cache=True, nogil=True)
def _draw_rows(want, draw_ptr, u, v, s1, s2, topic, second, table, topic_cdf, topic_guide,
               background, bg_cdf, bg_guide, spare_v, vocab):
    """Per row ``i``: draws ``draw_ptr[i] .. draw_ptr[i + 1] - 1`` pick a source by ``u``
    (dominant topic below ``s1[i]``, secondary below ``s1[i] + s2[i]``, else background) and a
    term of it by ``v`` (inverse CDF); the first ``want[i]`` distinct ids are kept. A row that
    runs short goes on with spare background draws ``spare_v`` (consumed in order across rows),
    then, should those run out, with the background ids in popularity order, so every row gets
    exactly ``want[i]`` ids (``want[i]`` <= the usable vocabulary).

    Returns (indptr, ids ascending within each row, source 0/1/2 of each kept id)."""
    n = want.shape[0]
    stamp = np.zeros(vocab, dtype=np.int64)  # row + 1 that last took each id
    indptr = np.zeros(n + 1, dtype=np.int64)
    keys = np.empty(int(want.sum()), dtype=np.int64)  # id * 4 + source, sorted per row
    spare = 0
    pos = 0
    for i in range(n):
        start = pos
        p = draw_ptr[i]
        fallback = 0
        while pos - start < want[i]:
            if p < draw_ptr[i + 1]:
                if u[p] < s1[i]:
                    src = 0
                    t = table[topic[i], _inverse_cdf(topic_cdf, topic_guide, v[p])]
                elif u[p] < s1[i] + s2[i]:
                    src = 1
                    t = table[second[i], _inverse_cdf(topic_cdf, topic_guide, v[p])]
                else:
                    src = 2
                    t = background[_inverse_cdf(bg_cdf, bg_guide, v[p])]
                p += 1
            elif spare < spare_v.shape[0]:
                src = 2
                t = background[_inverse_cdf(bg_cdf, bg_guide, spare_v[spare])]
                spare += 1
            else:  # spares used up (practically never): the background ids in popularity order
                src = 2
                t = background[fallback]
                fallback += 1
            if stamp[t] != i + 1:
                stamp[t] = i + 1
                keys[pos] = t * 4 + src
                pos += 1
        keys[start:pos].sort()
        indptr[i + 1] = pos
    keys = keys[:pos]
    return indptr, (keys >> 2).astype(np.int32), (keys & 3).astype(np.int8)


def _zipf_cdf(n: int, exponent: float) -> tuple[np.ndarray, np.ndarray]:
    """The CDF of a Zipf law over n ranks and its guide table for :func:`_inverse_cdf`."""
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    c = np.cumsum(p)
    c /= c[-1]
    guide = np.minimum(np.searchsorted(c, np.arange(GUIDE + 1) / GUIDE, side="right"), n - 1)
    return c, guide.astype(np.int32)


@dataclass(frozen=True)
class SpladeLike:
    """A seeded SPLADE-like corpus and query set (see the module docstring for the model)."""

    seed: int = 0
    vocab: int = VOCAB
    first_token: int = FIRST_TOKEN
    topics: int = 1000
    topic_terms: int = 400
    topic_exponent: float = 0.8
    background_exponent: float = 1.0
    doc_terms: tuple[int, int] = (120, 250)
    query_terms: tuple[int, int] = (20, 40)
    oversample: float = 1.6
    block: int = 8192

    def __post_init__(self) -> None:
        usable = self.vocab - self.first_token
        if usable < 1 or self.first_token < 0:
            raise ValueError("need 0 <= first_token < vocab")
        if not 1 <= self.topic_terms <= usable or self.topics < 1:
            raise ValueError(f"topics >= 1 and topic_terms in [1, {usable}]")
        for name in ("doc_terms", "query_terms"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi <= usable:
                raise ValueError(f"{name} must be (lo, hi) with 1 <= lo <= hi <= {usable}")
        if self.block < 1 or not self.oversample >= 1.0:
            raise ValueError("block >= 1 and oversample >= 1")
        rng = np.random.default_rng([self.seed, 0])
        # frozen dataclass: the derived tables are set once here
        object.__setattr__(self, "_background", (rng.permutation(usable) + self.first_token).astype(np.int32))
        object.__setattr__(self, "_background_cdf", _zipf_cdf(usable, self.background_exponent))
        table = np.empty((self.topics, self.topic_terms), dtype=np.int32)
        for k in range(self.topics):
            table[k] = rng.choice(usable, size=self.topic_terms, replace=False) + self.first_token
        object.__setattr__(self, "_topic_table", table)
        object.__setattr__(self, "_topic_cdf", _zipf_cdf(self.topic_terms, self.topic_exponent))

    # -- generation ----------------------------------------------------------------------------

    def _rows(self, rng: np.random.Generator, n: int, terms: tuple[int, int], shares, mu) -> Block:
        """``n`` rows: term counts, topics, shares, then the draws (compiled) and weights."""
        want = rng.integers(terms[0], terms[1] + 1, size=n)
        topic = rng.integers(0, self.topics, size=n).astype(np.int32)
        second = rng.integers(0, self.topics, size=n).astype(np.int32)
        s1 = rng.uniform(*shares[0], size=n)
        s2 = rng.uniform(*shares[1], size=n)
        draw_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.ceil(want * self.oversample).astype(np.int64), out=draw_ptr[1:])
        u = rng.random(int(draw_ptr[-1]))
        v = rng.random(int(draw_ptr[-1]))
        spare_v = rng.random(max(64, 4 * n))
        indptr, ids, src = _draw_rows(want, draw_ptr, u, v, s1, s2, topic, second, self._topic_table,
                                      *self._topic_cdf, self._background, *self._background_cdf,
                                      spare_v, self.vocab)
        w = np.asarray(mu, dtype=np.float64)[src] + 0.6 * rng.standard_normal(len(ids))
        np.exp(w, out=w)
        return Block(0, indptr, ids, np.clip(w, 0.01, 4.0).astype(np.float32), topic, second)

    def blocks(self, start: int, stop: int) -> Iterator[Block]:
        """Documents ``[start, stop)`` as CSR blocks (cut at multiples of ``block``)."""
        if not 0 <= start <= stop:
            raise ValueError("need 0 <= start <= stop")
        b = start // self.block
        while b * self.block < stop:
            rows = self._rows(np.random.default_rng([self.seed, 1, b]), self.block, self.doc_terms,
                              ((0.45, 0.70), (0.10, 0.25)), (-0.4, -0.8, -1.3))
            lo = max(start - b * self.block, 0)
            hi = min(stop - b * self.block, self.block)
            yield _slice(rows, lo, hi, b * self.block + lo)
            b += 1

    def documents(self, num: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int32 ascending, weights float32) of documents ``start .. start + num - 1``."""
        for blk in self.blocks(start, start + num):
            ids, w, ptr = blk.ids, blk.weights, blk.indptr
            for i in range(len(blk.topic)):
                yield ids[ptr[i]:ptr[i + 1]], w[ptr[i]:ptr[i + 1]]

    def query_block(self, num: int) -> Block:
        """``num`` queries as one CSR block (queries are not part of the document stream)."""
        parts = []
        for b in range(-(-num // self.block)):
            n = min(self.block, num - b * self.block)
            rows = self._rows(np.random.default_rng([self.seed, 2, b]), self.block, self.query_terms,
                              ((0.60, 0.85), (0.0, 0.15)), (-0.1, -0.5, -1.0))
            parts.append(_slice(rows, 0, n, b * self.block))
        return _concat(parts)

    def queries(self, num: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``num`` queries as (ids int32 ascending, weights float32)."""
        q = self.query_block(num)
        return [(q.ids[q.indptr[i]:q.indptr[i + 1]], q.weights[q.indptr[i]:q.indptr[i + 1]])
                for i in range(num)]


def _slice(b: Block, lo: int, hi: int, start: int) -> Block:
    a, z = int(b.indptr[lo]), int(b.indptr[hi])
    return Block(start, b.indptr[lo:hi + 1] - a, b.ids[a:z], b.weights[a:z], b.topic[lo:hi], b.second[lo:hi])


def _concat(parts: list[Block]) -> Block:
    """One block of consecutive blocks (an empty block for none)."""
    ptrs, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        ptrs.append(p.indptr[1:] + base)
        base += int(p.indptr[-1])
    return Block(parts[0].start if parts else 0, np.concatenate(ptrs),
                 np.concatenate([p.ids for p in parts] or [np.zeros(0, np.int32)]),
                 np.concatenate([p.weights for p in parts] or [np.zeros(0, np.float32)]),
                 np.concatenate([p.topic for p in parts] or [np.zeros(0, np.int32)]),
                 np.concatenate([p.second for p in parts] or [np.zeros(0, np.int32)]))


def splade_documents(num: int, seed: int = 0, **model) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shorthand: ``SpladeLike(seed, **model).documents(num)`` (the ``build_impact_index`` stream)."""
    return SpladeLike(seed, **model).documents(num)


def splade_queries(num: int, seed: int = 0, **model) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shorthand: ``SpladeLike(seed, **model).queries(num)``; same topics as the documents."""
    return SpladeLike(seed, **model).queries(num)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-doc", action="store_true", help="time the per-document stream, not blocks")
    args = ap.parse_args()
    model = SpladeLike(args.seed)
    next(model.blocks(0, 1))  # compile
    t0 = time.perf_counter()
    nnz = 0
    if args.per_doc:
        for ids, _ in model.documents(args.docs):
            nnz += len(ids)
    else:
        for blk in model.blocks(0, args.docs):
            nnz += len(blk.ids)
    secs = time.perf_counter() - t0
    print(f"{args.docs:,} documents in {secs:.1f} s: {args.docs / secs:,.0f} docs/s, "
          f"{nnz / args.docs:.1f} terms/doc")


if __name__ == "__main__":
    main()
