"""The ``sparse`` index kind: SPLADE-style vectors (from a model, or precomputed) in an impact index.

With a model, the index vocabulary is the model's (term id == token id) and queries are encoded
by the same model — or, in the inference-free modes, only tokenised and weighted by IDF over the
indexed documents (``idf``) or by learned per-token weights (``learned``). Every setting that
changes the vectors is in the manifest, with the model's fingerprint; a query encoder that does
not match is refused.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from indexing.corpus import Doc, doc_text, iter_corpus, iter_vector_collection
from indexing.impacts import build_impact_index, check_quantization
from indexing.inverted import InvertedIndex
from indexing.manifest import IndexWriter, load_array
from indexing.searcher import ImpactSearcher
from retriever.encoders.models import matching_model
from retriever.encoders.splade import (SparseVector, SpladeEncoder, SpladeSettings, TokenWeightQueryEncoder,
                              idf_weights)

QUERY_WEIGHTS = "query_weights.npy"
QUERY_MODES = ("model", "idf", "learned")



def _load_learned_weights(path: str, vocab: list[str]) -> np.ndarray:
    p = Path(path)
    if p.suffix == ".npy":
        w = np.load(p, allow_pickle=False).astype(np.float32)
        if w.shape != (len(vocab),):
            raise ValueError(f"{p}: expected {len(vocab)} weights (one per token), got shape {w.shape}")
        return w
    table = json.loads(p.read_text(encoding="utf-8"))
    index = {t: i for i, t in enumerate(vocab)}
    w = np.zeros(len(vocab), dtype=np.float32)
    unknown = [t for t in table if t not in index]
    if unknown:
        raise ValueError(f"{p}: {len(unknown)} tokens not in the model vocabulary, e.g. {unknown[:3]}")
    for t, v in table.items():
        w[index[t]] = float(v)
    return w


def check_options(model: str | None, vectors: bool, quantize: str, scale: float, query_mode: str,
                  query_weights: str | None) -> None:
    """Refuse settings no sparse index can be built with (shared by the native and Lucene backends)."""
    check_quantization(quantize, scale)
    if query_mode not in QUERY_MODES:
        raise ValueError(f"query_mode must be one of {', '.join(QUERY_MODES)}, not {query_mode!r}")
    if query_mode == "learned" and not query_weights:
        raise ValueError("query_mode 'learned' needs query_weights (a .npy or token->weight .json)")
    if not vectors and model is None:
        raise ValueError("a sparse index needs --model (or --vectors for precomputed vectors)")


def encode_corpus(corpus, encoder: SpladeEncoder, block: int = 2048) -> Iterator[tuple[Doc, SparseVector]]:
    """(doc, its SPLADE vector) for every document of a corpus, in corpus order, encoded in blocks."""
    docs = iter_corpus(corpus)
    while chunk := list(islice(docs, block)):
        yield from zip(chunk, encoder.encode_documents([doc_text(d) for d in chunk]))


def query_weight_table(query_mode: str, query_weights: str | None, encoder: SpladeEncoder | None,
                       vectors: bool, df: np.ndarray, num_docs: int) -> np.ndarray:
    """Per-token query weights of an inference-free mode: IDF over the indexed documents (``df``:
    documents per token id) or the learned table in ``query_weights``."""
    if encoder is None:
        raise ValueError(f"query_mode {query_mode!r} needs --model for its tokenizer")
    if vectors:
        raise ValueError("inference-free query modes need an index built with --model")
    if query_mode == "idf":
        return idf_weights(df, num_docs)
    return _load_learned_weights(query_weights, encoder.vocab)


def manifest_entries(backend: str, num_docs: int, encoder: SpladeEncoder | None, vectors: bool,
                     query_mode: str, query_max_length: int, impacts: dict) -> dict:
    return {
        "kind": "sparse",
        "backend": backend,
        "doc_count": num_docs,
        "encoder": encoder.config() if encoder else None,
        "vocabulary": "collection" if vectors else "model",
        "query": {"mode": query_mode if encoder else "none", "max_length": query_max_length},
        "impacts": impacts,
    }


MODEL_SPARSE_CONFIG = "retriever_sparse.json"


def declared_query_mode(model: str | None, query_mode: str | None, query_weights: str | None):
    """(query_mode, query_weights): the given ones, else the model directory's declaration."""
    if query_mode is not None or model is None:
        return query_mode or "model", query_weights
    from retriever.encoders.models import resolve_model

    try:
        root = Path(resolve_model(model))
    except ValueError:
        return "model", query_weights
    declared = root / MODEL_SPARSE_CONFIG
    if not declared.is_file():
        return "model", query_weights
    cfg = json.loads(declared.read_text(encoding="utf-8"))
    mode = cfg.get("query_mode", "model")
    if mode == "learned" and query_weights is None:
        query_weights = str(root / cfg["query_weights"])
    return mode, query_weights


def write_index(corpus, writer: IndexWriter, *, model: str | None = None, vectors: bool = False,
                doc_max_length: int = 256, query_max_length: int = 64, doc_top_k: int = 0,
                query_top_k: int = 0, quantize: str = "uint16", scale: float = 100.0,
                query_mode: str | None = None, query_weights: str | None = None, batch_size: int = 32,
                device: str = "auto", on_doc=None) -> dict:
    """Encode (or read) sparse document vectors and write the impact index.

    ``query_mode`` None: what the model directory declares (an inference-free model trained by
    ``retriever train splade --inference-free`` names its learned query weights), else "model".
    """
    query_mode, query_weights = declared_query_mode(model, query_mode, query_weights)
    check_options(model, vectors, quantize, scale, query_mode, query_weights)
    settings = SpladeSettings(doc_max_length, query_max_length, doc_top_k, query_top_k)
    encoder = SpladeEncoder(model, settings=settings, batch_size=batch_size, device=device) if model else None
    docids: list[str] = []

    if vectors:
        vocab: dict[str, int] = {}

        def stream() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for doc, vec in iter_vector_collection(corpus):
                docids.append(doc.docid)
                ids = np.fromiter((vocab.setdefault(t, len(vocab)) for t in vec), dtype=np.int32, count=len(vec))
                yield ids, np.fromiter(vec.values(), dtype=np.float64, count=len(vec))
                if on_doc is not None:
                    on_doc(doc)

        terms = lambda: list(vocab)  # noqa: E731 - the vocabulary is known after the stream
    else:
        def stream() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for doc, vec in encode_corpus(corpus, encoder):
                docids.append(doc.docid)
                yield vec
                if on_doc is not None:
                    on_doc(doc)

        terms = encoder.vocab
    index, stats = build_impact_index(stream(), writer, terms, quantize, scale)
    index.save(writer)
    writer.write_docids(docids)
    if query_mode != "model":
        writer.save_array(QUERY_WEIGHTS, query_weight_table(query_mode, query_weights, encoder, vectors,
                                                            np.diff(index.offsets), len(docids)))
    return manifest_entries("native", len(docids), encoder, vectors, query_mode, query_max_length, stats)


def query_encoder(root, manifest: dict, model: str | None = None
                  ) -> tuple[Callable[[list[str]], list[SparseVector]], list[str]] | None:
    """The query encoder a sparse index's manifest describes, and the token of each id it returns.

    The model must match the fingerprint recorded at build time. None for an index built from
    vectors without a model (it takes only ``search_weights``).
    """
    enc = manifest.get("encoder")
    mode = manifest["query"]["mode"]
    if enc is None or mode == "none":
        if model is not None:
            raise ValueError("this index was built from vectors without a model; it takes no query model")
        return None
    resolved = matching_model(root, enc, model)
    settings = SpladeSettings(**{k: enc[k] for k in SpladeSettings.__dataclass_fields__})
    if mode == "model":
        encoder = SpladeEncoder(resolved, settings=settings)
        return encoder.encode_queries, encoder.vocab
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolved)
    weights = load_array(root, QUERY_WEIGHTS, mmap=False)
    qenc = TokenWeightQueryEncoder(tokenizer, weights, settings.query_max_length)
    return qenc.encode_queries, tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def open_index(root, manifest: dict, docids: list[str], model: str | None = None) -> ImpactSearcher:
    """Load the impact index and the query encoder its manifest describes."""
    stats = manifest["impacts"]
    index = InvertedIndex.load(root, num_docs=len(docids), scale=stats["scale"])
    found = query_encoder(root, manifest, model)
    if found is None:
        return ImpactSearcher(index, docids, None)
    encode, vocab = found
    if manifest["vocabulary"] == "model":
        return ImpactSearcher(index, docids, encode)

    def encode_terms(texts):
        return [{vocab[i]: float(w) for i, w in zip(*v)} for v in encode(texts)]

    return ImpactSearcher(index, docids, encode_terms)
