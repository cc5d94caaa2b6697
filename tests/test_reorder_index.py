"""Reordering an index (--reorder bp) renumbers its documents only: every external id, stored
text, result and tie order stays what the corpus order gives."""

import json

import numpy as np
import pytest

from retriever import Retriever


def corpus(tmp_path, n=400, seed=3):
    rng = np.random.default_rng(seed)
    topics = [[f"w{t}x{i}" for i in range(30)] for t in range(8)]
    path = tmp_path / "c.jsonl"
    lines = []
    for i in rng.permutation(n):
        t = int(rng.integers(8))
        words = list(rng.choice(topics[t], 12)) + list(rng.choice(topics[(t + 1) % 8], 3))
        if i % 37 == 0:  # duplicates: equal scores, the tie order matters
            words = topics[0][:10]
        lines.append(json.dumps({"_id": f"doc{i}", "title": f"T{i}", "text": " ".join(words)}))
    path.write_text("\n".join(lines) + "\n")
    return path, topics


@pytest.mark.parametrize("kind", ["bm25", "sparse"])
def test_reordered_index_returns_the_same(tmp_path, kind):
    path, topics = corpus(tmp_path)
    if kind == "sparse":  # precomputed vectors: the same postings through the sparse kind
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        vec = tmp_path / "v.jsonl"
        vec.write_text("".join(json.dumps({"id": r["_id"], "contents": r["text"],
                                            "vector": {w: 1.0 + len(w) % 3 for w in r["text"].split()}}) + "\n"
                               for r in rows))
        path, options = vec, {"kind": "sparse", "vectors": True}
    else:
        options = {}
    plain = Retriever.build(path, tmp_path / "plain", **options)
    bp = Retriever.build(path, tmp_path / "bp", reorder="bp", **options)
    assert bp.docids != plain.docids and sorted(bp.docids) == sorted(plain.docids)
    queries = [{w: 1.0 for w in topics[t][:4]} for t in range(8)] + [{w: 1.0 for w in topics[0][:10]}]
    for q in queries:
        for k in (1, 5, 50, 400):
            want = plain.search_weights(q, k=k)
            assert bp.search_weights(q, k=k) == want  # same ids, scores and tie order
            exhaustive = Retriever.load(tmp_path / "bp", strategy="exhaustive").search_weights(q, k=k)
            assert exhaustive == want
    for docid in ("doc0", "doc37", "doc399"):
        assert bp.doc(docid) == plain.doc(docid)
    m = bp.manifest
    assert m["settings"]["reorder"] == "bp" and m["corpus"]["fingerprint"] == plain.manifest["corpus"]["fingerprint"]


@pytest.mark.parametrize("kind", ["bm25", "sparse"])
def test_auto_reorders_from_the_threshold_only(tmp_path, monkeypatch, kind):
    """``--reorder auto`` (the default) keeps the corpus order below ``REORDER_AUTO_DOCS``
    documents and reorders from there; the manifest says which (``reordered``); explicit
    ``none`` / ``bp`` do what they say whatever the size."""
    from retriever import kinds

    path, topics = corpus(tmp_path, n=300)
    options = {"kind": "sparse", "vectors": True} if kind == "sparse" else {}
    if kind == "sparse":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path = tmp_path / "v.jsonl"
        path.write_text("".join(json.dumps({"id": r["_id"], "contents": r["text"],
                                            "vector": {w: 1.0 for w in r["text"].split()}}) + "\n" for r in rows))
    small = Retriever.build(path, tmp_path / "small", **options)
    assert small.manifest["settings"]["reorder"] == "auto" and small.manifest["reordered"] == "none"
    assert Retriever.build(path, tmp_path / "bp", reorder="bp", **options).manifest["reordered"] == "bp"
    monkeypatch.setattr(kinds, "REORDER_AUTO_DOCS", 300)
    large = Retriever.build(path, tmp_path / "large", **options)
    assert large.manifest["reordered"] == "bp" and large.docids != small.docids
    assert Retriever.build(path, tmp_path / "none", reorder="none", **options).manifest["reordered"] == "none"
    q = {w: 1.0 for w in topics[2][:5]}
    assert large.search_weights(q, k=20) == small.search_weights(q, k=20)
