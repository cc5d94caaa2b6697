"""SciFact parity with Lucene (needs the shared BEIR copy; `make test-slow`)."""

import os
from pathlib import Path

import pytest

from eval.beir import BeirDataset
from eval.metrics import evaluate
from retriever import Retriever

SCIFACT = Path(os.environ.get("RETRIEVER_SCIFACT",
                              Path(__file__).resolve().parents[2] / "shared/data/beir/scifact"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scifact():
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.fail(f"SciFact not found at {SCIFACT}; set RETRIEVER_SCIFACT")
    return BeirDataset(SCIFACT)


@pytest.mark.parametrize("fields, ndcg, recall", [("flat", 0.6789, 0.9253), ("multifield", 0.6647, None)])
def test_bm25_matches_lucene_on_scifact(scifact, tmp_path, fields, ndcg, recall):
    r = Retriever.build(SCIFACT, tmp_path / fields, kind="bm25", fields=fields)
    run = r.search_batch(scifact.split_queries("test"), k=1000)
    m = evaluate(scifact.qrels("test"), run, ["ndcg@10", "recall@100"]).metrics
    assert m["ndcg@10"] == pytest.approx(ndcg, abs=0.002)
    if recall is not None:
        assert m["recall@100"] == pytest.approx(recall, abs=0.005)
