import json
import resource
from contextlib import contextmanager
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


# -- a tiny random masked LM, built locally once per session (no hub) --------------------------
TINY_WORDS = """
the a an and or of to in on for with by from at as is are was be it that this which when why how
what does do you we they people adults older young child children day days night hours hour week
vitamin d sunlight skin sun light supplement reduce reduces hip bone bones fracture risk health
coffee tea caffeine adenosine receptor block blocks awake sleep late keep keeps harm harms need
seven nine one two three ten many few more less high low good bad new old same different
search engine index inverted map maps term terms document documents contain contains query id
word words text book books read reads write retrieval model models vector vectors weight sparse
dense score scores rank ranking list table data set sets small large fast slow quick brown fox
dog cat jumps over lazy river water city house car road tree green blue red white black make makes
exposed prevent work study studies result results effect effects patient patients trial trials
""".split()
TINY_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", ";", "?"] + list(dict.fromkeys(TINY_WORDS))
              + ["##s", "##es", "##ed", "##ing", "##ly", "##er", "##ment", "##ments", "##ine", "##ure", "##ures"])


def make_tiny_mlm(root: Path, seed: int = 0) -> Path:
    """Save a random 2-layer BERT masked LM and its WordPiece tokenizer into ``root``."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    # transformers 5 ignores ``vocab_file=`` (a 5-token tokenizer, everything [UNK]); ``vocab=`` works
    tokenizer = BertTokenizerFast(vocab=str(vocab_file))
    assert len(tokenizer) == len(TINY_VOCAB), "the tiny tokenizer did not read vocab.txt"
    tokenizer.save_pretrained(root)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertForMaskedLM(config).eval().save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory) -> Path:
    """Directory of a tiny random masked LM (seed 0). Read-only: copy it before changing it."""
    return make_tiny_mlm(tmp_path_factory.mktemp("tiny-mlm"), seed=0)


@pytest.fixture(scope="session")
def tiny_mlm_other(tmp_path_factory) -> Path:
    """The same architecture and vocabulary as ``tiny_mlm``, other random weights (seed 1)."""
    return make_tiny_mlm(tmp_path_factory.mktemp("tiny-mlm-other"), seed=1)


@pytest.fixture
def one_torch_thread():
    """Run a test's tiny-model work on one CPU thread (thread start-up costs more than the math
    on a busy machine); the previous setting comes back afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextmanager
def writes_fail_past(nbytes: int):
    """Every write that takes a file past ``nbytes`` fails (EFBIG: RLIMIT_FSIZE, whose signal
    Python ignores) in this process while the block runs: how a library's writer meets a full
    disk, without one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
