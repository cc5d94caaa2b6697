"""Index-aware query training (``retriever train query``): ADORE and JPQ on the shared trainer.

The documents stay as the index holds them. For a dense index (its vectors, or its IVF-PQ
codes) the query encoder trains (ADORE, Zhan et al. SIGIR 2021), and for IVF-PQ the coarse and
PQ centroids train with it against the fixed codes (JPQ, Zhan et al. CIKM 2021), so the loss
sees the scores the compressed index will return. For an inference-free sparse index the
per-token query weights train against the fixed impacts (``TokenWeightModel``). Each index kind
is a "side" (``_DenseSide``, ``_SparseSide``): the model it trains, its documents as tensors,
and a search with the model as it is now. Negatives come from the index itself:

- ``live`` (the default): each step, the batch's queries as the model encodes them now are
  searched in the index and ``group_size - 1`` negatives
  are drawn from the top ``depth`` that are not positives; ``refresh`` N > 1 searches all
  training queries every N steps instead and draws from those lists until the next refresh.
  For IVF-PQ the searched faiss index receives the trained centroids at each dev evaluation and
  each refresh (``sync_index``), so between those its negatives come from the centroids of the
  last one (the loss always scores with the current centroids);
- a negatives file (``retriever mine``): static negatives, for comparison.

Everything else is the shared trainer's (``training.trainer``): the contrastive loss over
in-batch and hard negatives with the decoupled softmax, the schedule, checkpoints and resume,
and dev selection — here by searching the whole index with the dev queries.

``write_index`` turns the best model into a new index directory: the same documents and codes,
the trained centroids, the query encoder under ``query_model/`` (named in the manifest's
``encoder.query_model`` with its fingerprint), and no float16 refine copy; or, for a sparse
index, the same postings with the trained ``query_weights.npy`` (query mode ``learned``).

A run that resumes with ``refresh`` > 1 searches all training queries again at the step it
resumes from (the lists in use when it stopped are not checkpointed), so its negatives may differ
from an uninterrupted run's until the next refresh; with ``refresh`` 1 a resumed run is exact.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eval.beir import BeirDataset
from eval.metrics import evaluate
from indexing.errors import DataError
from indexing.io import save_npy
from indexing.manifest import (QUERY_MODEL_VERSION, IndexFormatError, IndexWriter, read_docids, read_manifest,
                               safe_join)
from retriever.encoders.dense import DenseSettings, truncate
from retriever.encoders.models import fingerprint, index_query_model, matching_model
from training.data import Example, Group, TrainingData, read_negatives, split_dev
from training.dev_eval import embed
from training.encoders import DenseTrainEncoder
from training.index_documents import CENTROIDS, ImpactDocuments, IndexDocuments
from training.trainer import Trainer, TrainConfig, _param_groups

log = logging.getLogger("retriever")
QUERY_MODEL = "query_model"     # the trained query encoder inside a saved model or an index
QUERY_WEIGHTS = "query_weights.npy"  # inference-free sparse query weights (as retriever.kinds.sparse names them)
LIVE = "live"


class IndexQueryModel(nn.Module):
    """The query encoder of an index (trained) and its documents (fixed, or centroids trained).

    Looks like an encoder to the trainer: queries tokenise and encode (truncated to the index's
    dimension and rotated into its space), scores are inner products, documents come from
    ``docs`` by internal id. ``save(out)`` writes ``out/query_model`` and ``out/centroids.npz``.
    """

    def __init__(self, encoder: DenseTrainEncoder, docs: IndexDocuments, dim: int) -> None:
        super().__init__()
        self.encoder, self.docs, self.index_dim = encoder, docs, dim
        self.settings = encoder.settings

    @property
    def dim(self) -> int:
        return self.index_dim

    def tokenize(self, texts, kind: str) -> dict:
        if kind != "query":
            raise ValueError("index-aware training encodes queries only: documents come from the index")
        return self.encoder.tokenize(texts, "query")

    def encode(self, batch: dict, kind: str) -> torch.Tensor:
        q = self.encoder.encode(batch, "query")
        if self.index_dim < q.shape[-1]:
            q = truncate(q, self.index_dim, self.settings.normalize)
        return self.docs.query_space(q)

    def score(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return q @ d.t()

    def regularizer(self, q: torch.Tensor, d: torch.Tensor, step: int):
        return q.new_zeros(()), {}

    def stats(self, q: torch.Tensor, d: torch.Tensor) -> dict:
        return {}

    def save(self, out: str | Path) -> None:
        out = Path(out)
        self.encoder.save(out / QUERY_MODEL)
        arrays = self.docs.centroids()
        if arrays:
            with open(out / CENTROIDS, "wb") as f:
                np.savez(f, **arrays)

    def config(self) -> dict:
        return {**self.encoder.config(), "index_dim": self.index_dim, "quantized": self.docs.quantized}


class TokenWeightModel(nn.Module):
    """Inference-free sparse queries as a trainable model: a query is its distinct tokens (special
    tokens aside), each weighted by ``weights[token]`` (clamped at 0, as the index drops weights
    <= 0), exactly what ``retriever.encoders.splade.TokenWeightQueryEncoder`` does at search time.
    ``save(out)`` writes the weights as ``out/query_weights.npy``."""

    def __init__(self, tokenizer, weights: np.ndarray, max_length: int, docs) -> None:
        super().__init__()
        self.tokenizer, self.max_length, self.docs = tokenizer, max_length, docs
        self.weights = nn.Parameter(torch.as_tensor(np.array(weights, np.float32)))
        self._special = set(tokenizer.all_special_ids)
        self.settings = None

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def tokenize(self, texts, kind: str) -> dict:
        if kind != "query":
            raise ValueError("index-aware training encodes queries only: documents come from the index")
        rows, cols = [], []
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        for r, row in enumerate(ids):
            uniq = sorted({i for i in row if i not in self._special and i < self.dim})
            rows += [r] * len(uniq)
            cols += uniq
        return {"rows": torch.tensor(rows, dtype=torch.long), "cols": torch.tensor(cols, dtype=torch.long),
                "count": torch.tensor([len(ids)])}

    def encode(self, batch: dict, kind: str) -> torch.Tensor:
        q = self.weights.new_zeros((int(batch["count"][0]), self.dim))
        return q.index_put((batch["rows"], batch["cols"]), self.weights.clamp(min=0)[batch["cols"]])

    def score(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return q @ d.t()

    def regularizer(self, q: torch.Tensor, d: torch.Tensor, step: int):
        return q.new_zeros(()), {}

    def stats(self, q: torch.Tensor, d: torch.Tensor) -> dict:
        return {"query_terms": float((q > 0).sum(dim=1).float().mean())}

    def save(self, out: str | Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_npy(out / QUERY_WEIGHTS, self.weights.detach().clamp(min=0).cpu().numpy().astype(np.float32))

    def config(self) -> dict:
        return {"kind": "token-weights", "vocabulary": self.dim, "max_length": self.max_length}


class _DenseSide:
    """A dense index: faiss searches (centroids as of the last ``sync``), IVF-PQ centroids train."""

    def __init__(self, root: Path, manifest: dict, config: TrainConfig, train_centroids: bool) -> None:
        from indexing.faiss_index import DenseIndex

        faiss_settings = {**manifest["faiss"], "refine": False}  # the scores the codes give
        self.index = DenseIndex.load(root, faiss_settings, device="cpu", mmap=False)
        self.docs = IndexDocuments.read(self.index.index, train_centroids=train_centroids)
        enc = manifest["encoder"]
        model = index_query_model(root, enc)
        settings = DenseSettings(**{k: enc[k] for k in DenseSettings.__dataclass_fields__})
        dim = int(enc.get("dim") or manifest["faiss"]["dim"])

        def make():
            encoder = DenseTrainEncoder(model, max_length=config.max_length,
                                        query_max_length=config.query_max_length, settings=settings)
            return IndexQueryModel(encoder, self.docs, dim)

        self.make = make

    def search(self, q: torch.Tensor, k: int) -> np.ndarray:
        return self.index.search(q.detach().float().cpu().numpy(), k)[0]

    def sync(self) -> None:
        self.docs.write_to(self.index.index)


class _SparseSide:
    """An inference-free impact index: the kernel searches with the query weights as they are now."""

    def __init__(self, root: Path, manifest: dict, config: TrainConfig) -> None:
        from transformers import AutoTokenizer

        from indexing.inverted import InvertedIndex
        from indexing.manifest import load_array

        if manifest["query"]["mode"] not in ("idf", "learned") or manifest.get("vocabulary") != "model":
            raise IndexFormatError(f"{root}: train query on a sparse index trains inference-free query weights; "
                                   f"this index encodes queries with {manifest['query']['mode']!r} (build it with "
                                   "--query-mode idf)")
        stats = manifest["impacts"]
        docids = read_docids(root)
        self.index = InvertedIndex.load(root, num_docs=len(docids), scale=stats["scale"],
                                        layout=InvertedIndex.layout_of(manifest))
        self.docs = ImpactDocuments(self.index)
        tokenizer = AutoTokenizer.from_pretrained(matching_model(root, manifest["encoder"]))
        weights = load_array(root, QUERY_WEIGHTS, mmap=False)
        max_length = int(manifest["query"]["max_length"])
        self.make = lambda: TokenWeightModel(tokenizer, weights, max_length, self.docs)

    def search(self, q: torch.Tensor, k: int) -> np.ndarray:
        q = q.detach().float().cpu().numpy()
        queries = []
        for row in q:
            terms = np.flatnonzero(row > 0).astype(np.int32)
            queries.append((terms, row[terms]))
        found = self.index.search_many(queries, k)
        out = np.full((len(q), min(k, self.index.num_docs)), -1, dtype=np.int64)
        for i, (ids, _) in enumerate(found):
            out[i, :len(ids)] = ids
        return out

    def sync(self) -> None:
        pass


class QueryTrainer(Trainer):
    """The shared trainer with the documents of ``index`` (see the module docstring).

    ``negatives``: ``"live"`` or a negatives file; ``refresh``, ``depth``: live negatives;
    ``centroid_lr``: learning rate of the centroids (IVF-PQ), ``train_centroids``: whether
    they train; ``split``: the qrels split whose queries train (live negatives).
    """

    def __init__(self, config: TrainConfig, index: str | Path, *, refresh: int = 1, depth: int = 100,
                 skip_top: int = 0, centroid_lr: float = 1e-4, train_centroids: bool = True, split: str = "train",
                 on_step=None) -> None:
        for name, value in (("refresh", refresh), ("depth", depth)):
            if value < 1:
                raise ValueError(f"--{name} must be at least 1, got {value}")
        if not 0 <= skip_top < depth:
            raise ValueError("skip-top must be at least 0 and below depth")
        if not centroid_lr > 0:
            raise ValueError("centroid-lr must be positive")
        if config.distill != "none":
            raise ValueError("train query does not distil (no teacher scores for live negatives)")
        if config.matryoshka_dims:
            raise ValueError("train query trains the query side of one index dimension; --matryoshka does not apply")
        self.root = Path(index)
        self.manifest = manifest = read_manifest(self.root)
        kind = (manifest.get("kind"), manifest.get("backend"))
        if kind not in (("dense", "native"), ("sparse", "native")):
            raise IndexFormatError(f"{self.root}: train query needs a dense or an inference-free sparse index (this "
                                   f"one is {kind[0]}/{kind[1]}); for a sharded or hybrid index, train on an "
                                   "unsharded index of the same model")
        self.docids = read_docids(self.root)
        self.row = {d: i for i, d in enumerate(self.docids)}
        self.refresh, self.depth, self.skip_top, self.split = refresh, depth, skip_top, split
        self.centroid_lr = centroid_lr
        self.live = config.negatives == LIVE
        self.side = (_DenseSide(self.root, manifest, config, train_centroids) if kind[0] == "dense"
                     else _SparseSide(self.root, manifest, config))
        self._cache: dict[str, np.ndarray] = {}
        self._cache_step = -1
        super().__init__(config, self.side.make, on_step=on_step)
        if self.dist.world > 1:
            raise ValueError("train query runs in one process (one CPU or GPU)")

    # -- data ----------------------------------------------------------------------------------
    def load_data(self) -> TrainingData:
        """Training queries and positives from the qrels split (live) or the negatives file; the
        dev split carved from them as the shared trainer does (or ``dev_split``)."""
        c = self.config
        ds = BeirDataset(c.dataset)
        queries = ds.queries()
        if self.live:
            qrels = ds.qrels(self.split)
            source = ds.root / "qrels" / f"{self.split}.tsv"
            examples = [Example(q, sorted(d for d, r in j.items() if r > 0), []) for q, j in qrels.items()
                        if q in queries and any(r > 0 for r in j.values())]
        else:
            source = Path(c.negatives)
            examples, _ = read_negatives(source)
            missing = [e.qid for e in examples if e.qid not in queries]
            if missing:
                raise DataError(f"{len(missing)} queries of {source} are not in the dataset, e.g. {missing[0]!r}",
                                path=ds.queries_path)
        for e in examples:
            absent = [d for d in e.pos + e.neg if d not in self.row]
            if absent:
                raise DataError(f"query {e.qid!r} names document {absent[0]!r}, which is not in the index "
                                f"{self.root}", path=source)
        train, dev = split_dev(examples, ds, dev_split=c.dev_split, dev_fraction=c.dev_fraction,
                               keep=self.row.__contains__)
        if not train:
            raise DataError("no training queries (with a positive in the index)", path=source)
        # random negatives (a file's query without mined ones) are drawn from every document
        docs = {} if self.live else dict.fromkeys(self.docids, "")
        return TrainingData(train, dev, {e.qid: queries[e.qid] for e in train + dev}, docs, [], False)

    def plan_group_size(self) -> int:
        return 1 if self.live else self.config.group_size  # live negatives are added per step

    def param_groups(self) -> list[dict]:
        if isinstance(self.model, TokenWeightModel):
            return [{"params": [self.model.weights], "weight_decay": 0.0}]
        groups = _param_groups(self.model.encoder, self.config.weight_decay)
        centroids = [p for p in (getattr(self.model.docs, "coarse", None), getattr(self.model.docs, "pq", None))
                     if p is not None and p.requires_grad]
        if centroids:
            groups.append({"params": centroids, "weight_decay": 0.0, "lr": self.centroid_lr})
        return groups

    # -- one micro-batch -------------------------------------------------------------------------
    def micro_step(self, groups: list[Group], scale: float = 1.0) -> dict:
        q, d, groups = self.batch_vectors(groups)
        loss, parts = self.loss(q, d, groups)
        (loss * scale).backward()
        return parts

    def batch_vectors(self, groups: list[Group]) -> tuple[torch.Tensor, torch.Tensor, list[Group]]:
        """Queries encoded now; live negatives retrieved for them; passages from the index."""
        qb = self._to_device(self.model.tokenize([g.query for g in groups], "query"))
        q = self._encode(qb, "query")
        if self.live:
            groups = self._live_groups(groups, q.detach())
        rows = [self.row[d] for g in groups for d in g.doc_ids]
        return q, self.model.docs.vectors(torch.tensor(rows, device=q.device)), groups

    def _live_groups(self, groups: list[Group], q: torch.Tensor) -> list[Group]:
        """Each group's positive plus ``group_size - 1`` negatives drawn from the top ``depth`` the
        index returns for the query (encoded now, or at the last refresh), never a positive, and
        not among the first ``skip_top`` non-positives."""
        c = self.config
        if self.refresh == 1:
            found = dict(zip((g.qid for g in groups), self.side.search(q, self.depth)))
        else:
            if self._cache_step < 0 or self.step - self._cache_step >= self.refresh:
                self._refresh_cache()
            found = {g.qid: self._cache[g.qid] for g in groups}
        out = []
        for g in groups:
            pos = self.positives[g.qid]
            candidates = [self.docids[i] for i in found[g.qid] if i >= 0 and self.docids[i] not in pos]
            candidates = candidates[self.skip_top:]  # the very top: the likeliest unjudged positives
            rng = np.random.default_rng([c.seed, self.step, int(self.row[g.doc_ids[0]]), 11])
            want = c.group_size - 1
            if len(candidates) >= want:
                picks = [candidates[i] for i in sorted(rng.choice(len(candidates), size=want, replace=False))]
            else:  # fewer retrieved non-positives than needed: random documents fill the group
                picks = list(candidates)
                while len(picks) < want:
                    d = self.docids[int(rng.integers(len(self.docids)))]
                    if d not in pos:
                        picks.append(d)
            out.append(Group(g.qid, g.query, [g.doc_ids[0]] + picks, None))
        return out

    def _refresh_cache(self) -> None:
        self.sync_index()
        texts = [self.data.queries[e.qid] for e in self.data.train]
        vectors = embed(self.model, texts, "query", self.config.eval_batch_size, self.device)
        ids = self.side.search(vectors, self.depth)
        self._cache = {e.qid: row for e, row in zip(self.data.train, ids)}
        self._cache_step = self.step

    def sync_index(self) -> None:
        """The index searched for negatives and dev gets the centroids as they are now (called at each
        dev evaluation and refresh, not each step)."""
        self.side.sync()

    # -- dev: search the whole index --------------------------------------------------------
    def dev_metrics(self) -> dict:
        self.sync_index()
        texts = [self.data.queries[e.qid] for e in self.data.dev]
        vectors = embed(self.model, texts, "query", self.config.eval_batch_size, self.device)
        ids = self.side.search(vectors, 100)
        run = {e.qid: {self.docids[i]: float(100 - rank) for rank, i in enumerate(r) if i >= 0}
               for e, r in zip(self.data.dev, ids)}  # the index's order (its own ties) scored by rank
        qrels = {e.qid: {p: 1 for p in e.pos} for e in self.data.dev}
        return dict(evaluate(qrels, run, ["ndcg@10", "recall@100"]).metrics)

    def resolved_config(self) -> dict:
        out = super().resolved_config()
        out.update(index=str(self.root), negatives_mode=LIVE if self.live else "file", refresh=self.refresh,
                   depth=self.depth, skip_top=self.skip_top, centroid_lr=self.centroid_lr, split=self.split,
                   train_centroids=self.model.docs.trainable, index_kind=self.manifest["kind"])
        return out


def write_index(source: str | Path, trained: str | Path, out: str | Path, *, overwrite: bool = False,
                record: dict | None = None) -> Path:
    """A new index at ``out``: the documents of ``source`` with what the trained model saved into
    ``trained``. Dense: the same codes with the trained centroids (``IndexQueryModel.save``), the
    query model under ``query_model/`` named in the manifest, no refine copy. Inference-free
    sparse: the same postings with the trained ``query_weights.npy`` (query mode ``learned``).
    ``record`` goes into the manifest's ``query_training``."""
    source, trained = Path(source), Path(trained)
    manifest = read_manifest(source)
    body = {k: v for k, v in manifest.items() if k not in ("files", "created", "format_version", "manifest_sha256")}
    body["query_training"] = {"source_index": str(source.absolute()), **(record or {})}
    if manifest["kind"] == "sparse":
        weights = trained / QUERY_WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"no trained query weights in {weights}")
        with IndexWriter(out, overwrite=overwrite) as writer:
            _copy_files(source, manifest, writer, skip={QUERY_WEIGHTS})
            shutil.copyfile(weights, writer.path(QUERY_WEIGHTS))
            body["query"] = {**manifest["query"], "mode": "learned"}
            body["settings"] = {**manifest["settings"], "query_mode": "learned", "query_weights": QUERY_WEIGHTS}
            writer.finish(body)
        return Path(out)
    import faiss

    from indexing.faiss_index import INDEX_FILE, REFINE_FILE, write_faiss

    model_dir = trained / QUERY_MODEL
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no trained query model in {model_dir}")
    with IndexWriter(out, overwrite=overwrite) as writer:
        _copy_files(source, manifest, writer, skip={INDEX_FILE, REFINE_FILE}, skip_dirs={QUERY_MODEL})
        index = faiss.read_index(str(source / INDEX_FILE))
        if (trained / CENTROIDS).is_file():
            docs = IndexDocuments.read(index)
            with np.load(trained / CENTROIDS) as arrays:
                docs.load_centroids(arrays)
            docs.write_to(index)
        write_faiss(index, writer.path(INDEX_FILE))
        shutil.copytree(model_dir, writer.path(QUERY_MODEL))
        ntotal = manifest["faiss"]["ntotal"]
        body["faiss"] = {**manifest["faiss"], "refine": False, "refine_bytes_per_vector": 0,
                         "bytes_per_vector": round(writer.path(INDEX_FILE).stat().st_size / ntotal, 2)
                         if ntotal else None}
        body["encoder"] = {**manifest["encoder"], "query_model": QUERY_MODEL,
                           "query_fingerprint": fingerprint(str(writer.path(QUERY_MODEL)))}
        body["format_version"] = QUERY_MODEL_VERSION  # older readers refuse it instead of using the start model
        writer.finish(body)
    return Path(out)


def _copy_files(source: Path, manifest: dict, writer: IndexWriter, skip: set[str], skip_dirs: set[str] = frozenset()):
    """Copy the files the source manifest lists into the new index, but ``skip`` and ``skip_dirs``."""
    for name in manifest["files"]:
        if name in skip or name.split("/")[0] in skip_dirs:
            continue
        target = writer.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(safe_join(source, name), target)
