import json
from pathlib import Path

import pytest

DOCS = [
    {"_id": "d1", "title": "Vitamin D and fractures", "text": "Vitamin D supplements reduce hip fractures in older adults."},
    {"_id": "d2", "title": "Sunlight", "text": "The skin makes vitamin D when exposed to sunlight."},
    {"_id": "d3", "title": "Coffee", "text": "Caffeine in coffee blocks adenosine receptors and keeps people awake."},
    {"_id": "d4", "title": "Sleep", "text": "Adults need seven to nine hours of sleep; caffeine late in the day harms sleep."},
    {"_id": "d5", "title": "Search engines", "text": "An inverted index maps each term to the documents that contain it."},
    {"_id": "q1", "title": "Same id as a query", "text": "Vitamin D fractures vitamin D fractures."},
]
QUERIES = [
    {"_id": "q1", "text": "does vitamin D prevent fractures"},
    {"_id": "q2", "text": "why does coffee keep you awake"},
    {"_id": "q3", "text": "how does an inverted index work"},
]


def write_beir(root: Path, docs=DOCS, queries=QUERIES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td3\t1\r\nq3\td5\t1\r\n", encoding="utf-8")
    return root


@pytest.fixture
def beir_dir(tmp_path) -> Path:
    return write_beir(tmp_path / "toy")
