"""The SPLADE-like synthetic corpus for the scale benchmarks (scripts/synthetic_splade.py)."""

import numpy as np
import pytest

from scripts.synthetic_splade import FIRST_TOKEN, VOCAB, SpladeLike, splade_documents, splade_queries

SMALL = dict(topics=20, block=512)  # small blocks: several per test, boundaries exercised
ONE_BLOCK = dict(topics=20, block=4096)  # the tests of statistics read one block


def stacked(pairs):
    return [(ids.tolist(), w.tolist()) for ids, w in pairs]


def overlap(a, b):
    return len(np.intersect1d(a, b, assume_unique=True))


# -- reproducibility ---------------------------------------------------------------------------

def test_same_seed_same_corpus_and_queries():
    a, b = SpladeLike(3, **SMALL), SpladeLike(3, **SMALL)
    assert stacked(a.documents(1200)) == stacked(b.documents(1200))
    assert stacked(a.queries(50)) == stacked(b.queries(50))
    c = SpladeLike(4, **SMALL)
    assert stacked(c.documents(20)) != stacked(a.documents(20))
    assert stacked(splade_documents(30, seed=3, **SMALL)) == stacked(a.documents(30))
    assert stacked(splade_queries(5, seed=3, **SMALL)) == stacked(a.queries(5))


def test_a_document_is_the_same_whatever_range_is_asked_for():
    model = SpladeLike(1, **SMALL)
    whole = stacked(model.documents(1500))
    assert stacked(model.documents(700, start=400)) == whole[400:1100]
    assert stacked(model.documents(1, start=511)) == whole[511:512]  # the last of a block
    blocks = list(model.blocks(300, 1500))
    assert [b.start for b in blocks] == [300, 512, 1024]
    assert sum(len(b.topic) for b in blocks) == 1200
    assert stacked(model.queries(10)) == stacked(model.queries(60))[:10]
    assert list(model.documents(0)) == [] and model.queries(0) == []


def test_bad_models_are_refused():
    with pytest.raises(ValueError):
        SpladeLike(doc_terms=(50, 10))
    with pytest.raises(ValueError):
        SpladeLike(topic_terms=0)
    with pytest.raises(ValueError):
        SpladeLike(oversample=0.5)
    with pytest.raises(ValueError):
        list(SpladeLike(**SMALL).blocks(5, 2))


# -- shape of the vectors ----------------------------------------------------------------------

def test_term_counts_ids_and_types():
    model = SpladeLike(0, **SMALL)
    counts = []
    for ids, w in model.documents(2000):
        assert ids.dtype == np.int32 and w.dtype == np.float32 and len(ids) == len(w)
        assert (np.diff(ids) > 0).all()  # ascending, distinct
        assert ids[0] >= FIRST_TOKEN and ids[-1] < VOCAB
        counts.append(len(ids))
    counts = np.array(counts)
    assert counts.min() >= 120 and counts.max() <= 250
    assert 175 < counts.mean() < 195  # uniform over 120..250
    q = np.array([len(ids) for ids, _ in model.queries(500)])
    assert q.min() >= 20 and q.max() <= 40 and 27 < q.mean() < 33


def test_weights_are_skewed_like_splade():
    model = SpladeLike(0, **ONE_BLOCK)
    blk = next(model.blocks(0, 2000))
    w = blk.weights
    assert w.min() >= 0.01 and w.max() <= 4.0
    assert 0.3 < np.median(w) < 0.7 and np.mean(w) > np.median(w)  # a long right tail
    assert 0.01 < (w > 2.0).mean() < 0.05  # a few large ...
    assert (w < 0.5).mean() > 0.45  # ... many small
    # within a document the topical terms weigh more than the background ones
    q = model.query_block(300).weights
    assert np.median(q) > np.median(w)  # SPLADE's query weights run higher


# -- topical structure -------------------------------------------------------------------------

def test_documents_of_one_topic_share_more_terms():
    model = SpladeLike(0, **ONE_BLOCK)
    blk = next(model.blocks(0, 2000))
    rows = [blk.ids[blk.indptr[i]:blk.indptr[i + 1]] for i in range(len(blk.topic))]
    rng = np.random.default_rng(0)
    same, other = [], []
    for _ in range(400):
        i, j = rng.integers(0, len(rows), size=2)
        if i != j:
            (same if blk.topic[i] == blk.topic[j] else other).append(overlap(rows[i], rows[j]))
    by_topic = {}
    for i, t in enumerate(blk.topic):
        by_topic.setdefault(int(t), []).append(i)
    same += [overlap(rows[ix[0]], rows[ix[1]]) for ix in by_topic.values() if len(ix) > 1]
    assert np.mean(same) > 3 * np.mean(other)
    # corpus order carries no topic: neighbours share a topic about as often as random pairs
    assert (blk.topic[1:] == blk.topic[:-1]).mean() < 2 / ONE_BLOCK["topics"]


def test_queries_overlap_their_topics_documents():
    model = SpladeLike(0, **ONE_BLOCK)
    blk = next(model.blocks(0, 3000))
    rows = [blk.ids[blk.indptr[i]:blk.indptr[i + 1]] for i in range(len(blk.topic))]
    q = model.query_block(100)
    hits_same, hits_other, top_same = [], [], 0
    for k in range(100):
        qi = q.ids[q.indptr[k]:q.indptr[k + 1]]
        same = np.flatnonzero(blk.topic == q.topic[k])[:20]
        other = np.flatnonzero(blk.topic != q.topic[k])[:20]
        hits_same.append(np.mean([overlap(qi, rows[d]) for d in same]))
        hits_other.append(np.mean([overlap(qi, rows[d]) for d in other]))
        # and the best document by dot product is of the query's topic
        dense = np.zeros(VOCAB)
        dense[qi] = q.weights[q.indptr[k]:q.indptr[k + 1]]
        scores = np.add.reduceat(dense[blk.ids] * blk.weights, blk.indptr[:-1])
        top_same += blk.topic[int(np.argmax(scores))] == q.topic[k]
    assert np.mean(hits_same) > 3 * np.mean(hits_other)
    assert top_same >= 80


# -- the consumers -----------------------------------------------------------------------------

def test_build_impact_index_consumes_the_stream(tmp_path):
    from indexing.impacts import build_impact_index
    from indexing.manifest import IndexWriter

    model = SpladeLike(0, **SMALL)
    expected = sum(len(ids) for ids, _ in model.documents(600))
    with IndexWriter(tmp_path / "idx") as w:
        index, stats = build_impact_index(model.documents(600), w, [f"t{i}" for i in range(VOCAB)],
                                          "uint16", 100.0)
        assert index.num_docs == 600 and stats["postings"] == expected
        assert stats["clipped_weights"] == 0
        ids, weights = model.queries(1)[0]
        hits, _ = index.top_k_ids(ids, weights, 10)
        assert len(hits) == 10


def test_the_benchmark_model_makes_whole_blocks():
    """(Its speed, ~40,000 docs/s here, is printed by ``python scripts/synthetic_splade.py``: a
    timing goal is a benchmark's, not a unit test's.)"""
    model = SpladeLike(0)  # the benchmark's model: 1,000 topics, blocks of 8,192
    blocks = list(model.blocks(0, 2 * 8192 + 5))
    assert [len(b.topic) for b in blocks] == [8192, 8192, 5]
    assert all(b.indptr[-1] == len(b.ids) == len(b.weights) for b in blocks)


def test_frequency_weighted_text_queries_follow_the_corpus_from_their_first_rank():
    from scripts.synthetic import pseudo_words, text_queries, weighted_text_queries

    vocab = 25_000
    rank = {w: i for i, w in enumerate(pseudo_words(vocab, 0))}
    a = weighted_text_queries(300, vocab=vocab, first_rank=100)
    assert a == weighted_text_queries(300, vocab=vocab, first_rank=100)  # seeded
    ranks = [rank[w] for q in a.values() for w in q.split()]
    assert min(ranks) >= 100 and all(2 <= len(q.split()) <= 6 for q in a.values())
    uniform = [rank[w] for q in text_queries(300, vocab=vocab).values() for w in q.split()]
    assert np.median(ranks) < np.median(uniform) / 3  # frequent words far more often than uniform draws
    assert min(rank[w] for q in weighted_text_queries(300, vocab=vocab, first_rank=1).values()
               for w in q.split()) < 10


# -- topical pseudo-word text (scripts/synthetic.py, the bm25-topical benchmark) ----------------

def _corpus(path, docs, **kw):
    import json

    from scripts.synthetic import write_text_corpus

    write_text_corpus(path, docs, vocab=20_000, **kw)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_topical_text_is_seeded_and_the_plain_corpus_is_untouched(tmp_path):
    import hashlib

    plain = _corpus(tmp_path / "plain.jsonl", 300)
    # the i.i.d. corpus every earlier BM25 benchmark searched: the same bytes as before topics existed
    assert hashlib.sha256((tmp_path / "plain.jsonl").read_bytes()).hexdigest()[:16] == "f06beb07f76b27f0"  # (before topics)
    a = _corpus(tmp_path / "a.jsonl", 300, topics=50)
    assert a == _corpus(tmp_path / "b.jsonl", 300, topics=50)
    assert a != plain and a != _corpus(tmp_path / "c.jsonl", 300, topics=50, seed=1)
    assert [d["_id"] for d in a] == [f"s{i}" for i in range(300)]


def test_topic_words_co_occur_in_topical_text_and_not_in_plain(tmp_path):
    from scripts.synthetic import pseudo_words, topic_words

    words = pseudo_words(20_000, 0)
    table = topic_words(50, 20_000, 0)
    assert table.shape[0] == 50 and table.min() >= 100 and len(set(table[0].tolist())) == table.shape[1]

    def lift(docs):  # P(both of a topic's two first words) / (P(first) P(second)), over the topics
        bags = [set((d["title"] + " " + d["text"]).split()) for d in docs]
        out = []
        for row in table:
            a, b = words[row[0]], words[row[1]]
            pa = np.mean([a in s for s in bags])
            pb = np.mean([b in s for s in bags])
            pab = np.mean([a in s and b in s for s in bags])
            if pa * pb > 0:
                out.append(pab / (pa * pb))
        return np.mean(out) if out else 0.0

    topical = _corpus(tmp_path / "t.jsonl", 3000, topics=50)
    assert lift(topical) > 10  # a topic's words come together (one topic in ~50 documents' dominant share)
    assert lift(_corpus(tmp_path / "p.jsonl", 3000)) < 3


def test_topical_queries_ask_about_one_topic():
    from scripts.synthetic import pseudo_words, topic_words, topical_text_queries

    rank = {w: i for i, w in enumerate(pseudo_words(20_000, 0))}
    table = topic_words(50, 20_000, 0)
    rows = [set(r.tolist()) for r in table]
    q = topical_text_queries(200, 50, vocab=20_000)
    assert q == topical_text_queries(200, 50, vocab=20_000)
    assert all(2 <= len(t.split()) <= 6 for t in q.values())
    ranks = [[rank[w] for w in t.split()] for t in q.values()]
    assert min(min(r) for r in ranks) >= 100  # stop-word ranks dropped
    # most words of a query come from one topic's row
    share = np.mean([max(sum(x in row for x in r) for row in rows) / len(r) for r in ranks])
    assert share > 0.6


def test_bad_topical_settings_are_refused(tmp_path):
    from scripts.synthetic import topical_text_queries, write_text_corpus

    with pytest.raises(ValueError, match="topics must be >= 0"):
        write_text_corpus(tmp_path / "x.jsonl", 10, topics=-1)
    with pytest.raises(ValueError, match="vocab >= 500"):
        write_text_corpus(tmp_path / "x.jsonl", 10, vocab=300, topics=5)
    with pytest.raises(ValueError, match="topics must be >= 1"):
        topical_text_queries(3, 0)
    write_text_corpus(tmp_path / "empty.jsonl", 0, vocab=1000, topics=3)
    assert (tmp_path / "empty.jsonl").read_text() == ""


# -- queries shaped like real ones (scripts/query_profile.py, synthetic.profiled_text_queries) ---

def test_expected_document_shares_match_a_written_corpus(tmp_path):
    from scripts.synthetic import pseudo_words, text_df_shares

    docs = _corpus(tmp_path / "p.jsonl", 4000)
    index = {w: i for i, w in enumerate(pseudo_words(20_000, 0))}
    holding = np.zeros(20_000)
    for d in docs:
        for w in set((d["title"] + " " + d["text"]).split()):
            holding[index[w]] += 1
    shares = text_df_shares(20_000)
    assert np.all(np.diff(shares) < 0)  # falling with the rank: one rank per share
    for r in (0, 5, 30, 200):  # binomial noise over 4,000 documents: a few percent
        assert holding[r] / 4000 == pytest.approx(shares[r], rel=0.1, abs=0.004), r


def test_profiled_queries_copy_each_profile_query_onto_words_of_that_share():
    from scripts.synthetic import profiled_text_queries, pseudo_words, text_df_shares

    vocab = 20_000
    rank = {w: i for i, w in enumerate(pseudo_words(vocab, 0))}
    shares = text_df_shares(vocab)
    profile = [(0.3, 0.02, 0.001), (0.3, 0.3)]
    q = profiled_text_queries(100, profile, vocab=vocab)
    assert q == profiled_text_queries(100, profile, vocab=vocab) and q != profiled_text_queries(100, profile, vocab=vocab, seed=5)
    for text in q.values():
        ranks = [rank[w] for w in text.split()]
        assert len(set(ranks)) == len(ranks)  # two terms of one share: two words
        want = next(p for p in profile if len(p) == len(ranks))
        got = sorted(shares[ranks].tolist(), reverse=True)
        # the share within the +-10% jitter, give or take the next rank's step (and the word taken next to a twin)
        for g, w in zip(got, want):
            assert 0.8 * w <= g <= 1.25 * w, (text, got, want)
    with pytest.raises(ValueError, match="at least one term"):
        profiled_text_queries(3, [(0.1,), ()])
    with pytest.raises(ValueError, match="must lie in"):
        profiled_text_queries(3, [(0.1, 1.5)])


def test_a_query_profile_is_the_share_of_documents_holding_each_analysed_term(tmp_path):
    from conftest import write_beir

    from scripts.query_profile import query_profile, summary

    root = write_beir(tmp_path / "toy", queries=[{"_id": "q1", "text": "does vitamin D prevent fractures"},
                                                 {"_id": "q2", "text": "the of and"},  # stop words only
                                                 {"_id": "q3", "text": "zebra caffeine"}])
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    profile = query_profile(root, "train")
    # 6 documents: "vitamin" and "d" in d1, d2, q1; "fractur" in d1, q1; "doe" and "prevent" in none (dropped);
    # q2 all stop words (dropped); q3: "zebra" in none, "caffein" in d3, d4
    assert profile == ((3 / 6, 3 / 6, 2 / 6), (2 / 6,))
    assert summary(profile)["queries"] == 2
    with pytest.raises(FileNotFoundError, match="no BEIR corpus.jsonl"):
        query_profile(tmp_path / "nowhere")
