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
from typing import Iterator

import numpy as np

from eval.beir import Doc, iter_corpus, iter_vector_collection
from indexing.impacts import build_impact_index, check_quantization
from indexing.inverted import InvertedIndex
from indexing.manifest import IndexFormatError, IndexWriter, load_array
from indexing.searcher import ImpactSearcher
from retriever.models import fingerprint, resolve_model
from retriever.splade import SpladeEncoder, SpladeSettings, TokenWeightQueryEncoder, idf_weights

QUERY_WEIGHTS = "query_weights.npy"
QUERY_MODES = ("model", "idf", "learned")


def doc_text(doc: Doc) -> str:
    return f"{doc.title} {doc.text}".strip() if doc.title else doc.text


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


def write_index(corpus, writer: IndexWriter, *, model: str | None = None, vectors: bool = False,
                doc_max_length: int = 256, query_max_length: int = 64, doc_top_k: int = 0,
                query_top_k: int = 0, quantize: str = "uint16", scale: float = 100.0,
                query_mode: str = "model", query_weights: str | None = None, batch_size: int = 32,
                device: str = "auto", on_doc=None) -> dict:
    """Encode (or read) sparse document vectors and write the impact index."""
    check_quantization(quantize, scale)
    if query_mode not in QUERY_MODES:
        raise ValueError(f"query_mode must be one of {', '.join(QUERY_MODES)}, not {query_mode!r}")
    if query_mode == "learned" and not query_weights:
        raise ValueError("query_mode 'learned' needs query_weights (a .npy or token->weight .json)")
    if not vectors and model is None:
        raise ValueError("a sparse index needs --model (or --vectors for precomputed vectors)")
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
            docs = iter_corpus(corpus)
            while block := list(islice(docs, 2048)):
                for doc, vec in zip(block, encoder.encode_documents([doc_text(d) for d in block])):
                    docids.append(doc.docid)
                    yield vec
                    if on_doc is not None:
                        on_doc(doc)

        terms = encoder.vocab
    index, stats = build_impact_index(stream(), writer, terms, quantize, scale)
    index.save(writer)
    writer.write_docids(docids)
    if query_mode != "model":
        if encoder is None:
            raise ValueError(f"query_mode {query_mode!r} needs --model for its tokenizer")
        if vectors:
            raise ValueError("inference-free query modes need an index built with --model")
        weights = (idf_weights(np.diff(index.offsets), len(docids)) if query_mode == "idf"
                   else _load_learned_weights(query_weights, encoder.vocab))
        writer.save_array(QUERY_WEIGHTS, weights)
    return {
        "kind": "sparse",
        "backend": "native",
        "doc_count": len(docids),
        "encoder": encoder.config() if encoder else None,
        "vocabulary": "collection" if vectors else "model",
        "query": {"mode": query_mode if encoder else "none", "max_length": query_max_length},
        "impacts": stats,
    }


def open_index(root, manifest: dict, docids: list[str], model: str | None = None) -> ImpactSearcher:
    """Load the impact index and the query encoder its manifest describes."""
    stats = manifest["impacts"]
    index = InvertedIndex.load(root, num_docs=len(docids), scale=stats["scale"])
    enc = manifest.get("encoder")
    mode = manifest["query"]["mode"]
    if enc is None or mode == "none":
        if model is not None:
            raise ValueError("this index was built from vectors without a model; it takes no query model")
        return ImpactSearcher(index, docids, None)
    path = model or enc["model"]
    try:
        resolved = resolve_model(path)
    except ValueError as e:
        raise IndexFormatError(f"{root}: the model this index was built with is not available ({e}); "
                               "pass the model's location: Retriever.load(INDEX, model=PATH)") from None
    if enc.get("fingerprint") and fingerprint(resolved) != enc["fingerprint"]:
        raise IndexFormatError(f"{root}: query model {resolved} does not match the model the index "
                               f"was built with (fingerprint differs); the scores would be wrong")
    settings = SpladeSettings(**{k: enc[k] for k in SpladeSettings.__dataclass_fields__})
    if mode == "model":
        encoder = SpladeEncoder(resolved, settings=settings)
        if manifest["vocabulary"] == "model":
            return ImpactSearcher(index, docids, encoder.encode_queries)
        vocab = encoder.vocab

        def encode(texts):
            return [{vocab[i]: float(w) for i, w in zip(*v)} for v in encoder.encode_queries(texts)]

        return ImpactSearcher(index, docids, encode)
    from transformers import AutoTokenizer

    weights = load_array(root, QUERY_WEIGHTS, mmap=False)
    qenc = TokenWeightQueryEncoder(AutoTokenizer.from_pretrained(resolved), weights, settings.query_max_length)
    return ImpactSearcher(index, docids, qenc.encode_queries)
