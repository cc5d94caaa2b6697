"""The ``sparse`` index kind: SPLADE-style vectors (from a model, or precomputed) in an impact index.

With a model, the index vocabulary is the model's (term id == token id) and queries are encoded
by the same model — or, in the inference-free modes, only tokenised and weighted by IDF over the
indexed documents (``idf``) or by learned per-token weights (``learned``). Every setting that
changes the vectors is in the manifest, with the model's fingerprint; a query encoder that does
not match is refused. The Lucene backend (``retriever.kinds.lucene``) shares these Settings and
their resolution (:func:`prepare`), so a model's declared query mode is honoured by both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np

from indexing.corpus import Doc, doc_text, iter_corpus, iter_vector_collection
from indexing.impacts import build_impact_index, check_quantization
from indexing.inverted import InvertedIndex
from indexing.io import load_npy
from indexing.manifest import IndexWriter, load_array, read_docid_order
from indexing.searcher import ImpactSearcher
from retriever.encoders.models import matching_model
from retriever.encoders.splade import (SparseVector, SpladeEncoder, SpladeSettings, TokenWeightQueryEncoder,
                                       idf_weights)
from retriever.kinds import REORDER_HELP, Kind, check_settings, option, register, reorder

QUERY_WEIGHTS = "query_weights.npy"
QUERY_MODES = ("model", "idf", "learned")



def _load_learned_weights(path: str, vocab: list[str]) -> np.ndarray:
    p = Path(path)
    if p.suffix == ".npy":
        w = load_npy(p).astype(np.float32)
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


@dataclass(frozen=True)
class Settings:
    model: str | None = option(None, "SPLADE model: a directory, a pulled pack name, or a hub id")
    vectors: bool = option(False, "CORPUS is an Anserini JsonVectorCollection ({id, contents, vector}) "
                                  "of precomputed term weights")
    doc_max_length: int = option(SpladeSettings.doc_max_length, "tokens per document", min=2)
    query_max_length: int = option(SpladeSettings.query_max_length, "tokens per query", min=2)
    doc_top_k: int = option(SpladeSettings.doc_top_k, "keep the k heaviest terms per document (0: all)", min=0)
    query_top_k: int = option(SpladeSettings.query_top_k, "keep the k heaviest terms per query (0: all)", min=0)
    quantize: Literal["uint16", "uint8", "float"] = option("uint16", "impact storage")
    scale: float = option(100.0, "stored impact = round(weight x scale)", min=0, min_open=True)
    query_mode: Literal["model", "idf", "learned"] | None = option(
        None, "queries encoded by the model, or inference-free (idf / learned weights); "
              "default: what the model directory declares, else model")
    query_weights: str | None = option(None, "per-token weights (.npy or .json) for --query-mode learned")
    batch_size: int = option(32, "encoding batch size", min=1)
    encode_block: int = option(2048, "documents per encoding block (batches are length-sorted within a block; "
                                     "a sharded build cuts shards at whole blocks)", min=1)
    device: str = option("auto", "auto | cpu | cuda[:N]")
    reorder: Literal["auto", "none", "bp"] = option("auto", REORDER_HELP)

    def __post_init__(self) -> None:
        check_settings(self)
        check_quantization(self.quantize, self.scale)
        if self.query_mode == "learned" and not self.query_weights:
            raise ValueError("query_mode 'learned' needs query_weights (a .npy or token->weight .json)")
        if not self.vectors and self.model is None:
            raise ValueError("a sparse index needs --model (or --vectors for precomputed vectors)")
        if self.query_mode in ("idf", "learned") and self.model is None:
            raise ValueError(f"query_mode {self.query_mode!r} needs --model for its tokenizer")
        if self.query_mode in ("idf", "learned") and self.vectors:
            raise ValueError("inference-free query modes need an index built with --model")

    def encoder_settings(self) -> SpladeSettings:
        return SpladeSettings(self.doc_max_length, self.query_max_length, self.doc_top_k, self.query_top_k)


def prepare(settings: Settings) -> Settings:
    """The settings with the query mode resolved: the given one, else the model directory's
    declaration (a model trained with ``retriever train splade --inference-free`` names its learned
    query weights), else "model". Both backends build from these."""
    mode, weights = declared_query_mode(settings.model, settings.query_mode, settings.query_weights)
    if settings.vectors and settings.query_mode is None:
        mode = "model"
    return replace(settings, query_mode=mode, query_weights=weights)


def read(corpus, settings: Settings) -> Iterator[Doc]:
    """Documents, with their precomputed ``vector`` when the corpus is a vector collection."""
    if settings.vectors:
        return (replace(doc, vector=vector) for doc, vector in iter_vector_collection(corpus))
    return iter_corpus(corpus)


def encode_docs(docs: Iterator[Doc], encoder: SpladeEncoder, block: int = 2048
                ) -> Iterator[tuple[Doc, SparseVector]]:
    """(doc, its SPLADE vector) for every document, in order, encoded in blocks."""
    while chunk := list(islice(docs, block)):
        yield from zip(chunk, encoder.encode_documents([doc_text(d) for d in chunk]))


def query_weight_table(settings: Settings, encoder: SpladeEncoder, df: np.ndarray, num_docs: int) -> np.ndarray:
    """Per-token query weights of an inference-free mode: IDF over the indexed documents (``df``:
    documents per token id) or the learned table in ``query_weights``."""
    if settings.query_mode == "idf":
        return idf_weights(df, num_docs)
    return _load_learned_weights(settings.query_weights, encoder.vocab)


def manifest_entries(settings: Settings, encoder: SpladeEncoder | None, impacts: dict) -> dict:
    return {
        "encoder": encoder.config() if encoder else None,
        "vocabulary": "collection" if settings.vectors else "model",
        "query": {"mode": settings.query_mode if encoder else "none", "max_length": settings.query_max_length},
        "impacts": impacts,
    }


def make_encoder(settings: Settings) -> SpladeEncoder | None:
    if settings.model is None:
        return None
    return SpladeEncoder(settings.model, settings=settings.encoder_settings(), batch_size=settings.batch_size,
                         device=settings.device)


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


def write(docs: Iterator[Doc], writer: IndexWriter, settings: Settings, encoder: SpladeEncoder | None = None) -> dict:
    """Encode (or read) sparse document vectors and write the impact index (``encoder``: one
    already loaded for these settings, e.g. by a shard worker)."""
    encoder = encoder if encoder is not None else make_encoder(settings)
    if settings.vectors:
        vocab: dict[str, int] = {}

        def stream() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for doc in docs:
                vec = doc.vector
                ids = np.fromiter((vocab.setdefault(t, len(vocab)) for t in vec), dtype=np.int32, count=len(vec))
                yield ids, np.fromiter(vec.values(), dtype=np.float64, count=len(vec))

        terms = lambda: list(vocab)  # noqa: E731 - the vocabulary is known after the stream
    else:
        def stream() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for _, vec in encode_docs(docs, encoder, settings.encode_block):
                yield vec

        terms = encoder.vocab
    index, stats = build_impact_index(stream(), writer, terms, settings.quantize, settings.scale)
    index, entries = reorder(index, writer, settings.reorder)
    entries["postings"] = index.save(writer)
    if settings.query_mode != "model":
        writer.save_array(QUERY_WEIGHTS, query_weight_table(settings, encoder, index.doc_freqs(), index.num_docs))
    return {**entries, **manifest_entries(settings, encoder, stats)}


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


def open_index(root, manifest: dict, docids: list[str], model: str | None = None, strategy: str = "pruned",
               approx: float = 1.0, heads_depth: int | None = None, candidates: int | None = None,
               verify: bool = True) -> ImpactSearcher:
    """Load the impact index and the query encoder its manifest describes (``verify``: the
    heads' checksums are checked when they are first opened)."""
    stats = manifest["impacts"]
    index = InvertedIndex.load(root, num_docs=len(docids), scale=stats["scale"],
                               layout=InvertedIndex.layout_of(manifest))
    index.verify_heads = verify
    index.set_tie_order(read_docid_order(root, docids))
    found = query_encoder(root, manifest, model)
    if found is None:
        return ImpactSearcher(index, docids, None, strategy, approx, heads_depth, candidates)
    encode, vocab = found
    if manifest["vocabulary"] == "model":
        return ImpactSearcher(index, docids, encode, strategy, approx, heads_depth, candidates)

    def encode_terms(texts):
        return [{vocab[i]: float(w) for i, w in zip(*v)} for v in encode(texts)]

    return ImpactSearcher(index, docids, encode_terms, strategy, approx, heads_depth, candidates)


SCHEMA = (("impacts", "dict"), ("impacts.scale", "number|null"), ("query", "dict"), ("query.mode", "str"),
          ("query.max_length", "int"), ("vocabulary", "str"), ("encoder", "dict|null"))

KIND = register(Kind("sparse", "native", Settings, write, open_index, schema=SCHEMA, read=read, prepare=prepare,
                     help="SPLADE-style learned sparse vectors (from a model or precomputed) in our inverted index"))
