"""The trainer shared by dense and SPLADE training.

One optimisation step: the global batch of the step (``training.data.BatchPlan``), this process's
slice of it tokenised, representations computed (with gradient caching in chunks, or at once),
gathered over processes, scored query x passage, and the loss composed from
``training.losses``: contrastive over in-batch and hard negatives (decoupled softmax for other
positives), optional distillation (MarginMSE or KL) from teacher scores, plus the encoder's
regulariser; with Matryoshka dims the ranking losses are computed on each prefix of the
representations and summed with their weights (``MatryoshkaLoss``). AdamW with linear warm-up
and linear decay, gradient accumulation, clipping, bf16 autocast on GPUs. Checkpoints hold
everything a resumed run needs to continue exactly as an uninterrupted one; a dev evaluation every N steps keeps the best model in the output directory.

Checkpoints execute no code when read: ``state.pt`` holds only tensors and plain containers and
is read with ``torch.load(..., weights_only=True)``; each process's RNG states are JSON
(``rng-RANK.json``). A checkpoint of the older, pickled format is refused on ``--resume``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle  # only for pickle.UnpicklingError, raised by torch.load(weights_only=True) on refusal
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from eval.beir import is_test_split
from indexing.io import atomic_write_json, atomic_write_text, saving
from indexing.manifest import replace_dir
from retriever.encoders.model_dir import replace_model
from training import distributed
from training.data import BatchPlan, Group, TrainingData
from training.dev_eval import dev_metrics, embed
from training.losses import (
    ContrastiveLoss,
    KLDistillationLoss,
    MarginMSELoss,
    MatryoshkaLoss,
    check_matryoshka,
    group_targets,
)
from training.model_card import CARD, write_model_card

log = logging.getLogger("retriever")
DISTILL = ("none", "margin-mse", "kl")
TEMPERATURE_LR = 1e-2  # Adam's steps are ~lr: the log of a learned temperature moves ~1 in 100 steps
# settings a resumed run must share with the run it continues
_RESUME_KEYS = ("model", "batch_size", "group_size", "lr", "temperature", "learn_temperature", "seed", "max_length",
                "query_max_length", "accumulation", "distill", "in_batch", "topic_batches",
                "matryoshka_dims", "matryoshka_weights", "pca_init")


@dataclass
class TrainConfig:
    model: str
    dataset: str
    negatives: str
    out: str
    epochs: float = 1.0
    max_steps: int | None = None          # optimiser steps; overrides epochs
    max_minutes: float | None = None      # wall-clock budget: the schedule shrinks to the steps that fit
    batch_size: int = 32                  # queries per process per micro-batch
    group_size: int = 8                   # passages per query: 1 positive + group_size-1 negatives
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int | None = None       # default: 10% of the steps
    temperature: float = 0.05
    learn_temperature: bool = False       # the contrastive temperature trains too (from `temperature`)
    max_length: int = 256                 # passage tokens during training
    query_max_length: int = 64
    seed: int = 42
    device: str = "auto"
    accumulation: int = 1
    grad_cache_chunk: int = 0             # 0: no gradient caching; else texts per forward chunk
    max_grad_norm: float = 1.0
    in_batch: bool = True                 # other queries' passages as negatives
    distill: str = "none"                 # none | margin-mse | kl (needs teacher scores)
    distill_weight: float = 1.0
    distill_rescale: bool = False         # margin-mse: teacher margins rescaled to the student's spread
    contrastive_weight: float = 1.0
    kl_temperature: float = 1.0
    topic_batches: bool = False
    topic_clusters: int | None = None     # default: training queries / (4 x global batch)
    dev_fraction: float = 0.2
    dev_split: str | None = None
    dev_docs: int = 10_000
    dev_every: int = 0                    # steps between dev evaluations; 0: once per epoch
    eval_batch_size: int = 64
    save_every: int | None = None         # steps between checkpoints; default: dev_every
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = False
    bf16: bool = True
    extra: dict = field(default_factory=dict)  # the encoder's own settings (recorded only)
    matryoshka_dims: list[int] | None = None      # ranking losses on these prefixes too (descending)
    matryoshka_weights: list[float] | None = None  # one per dim; default all 1
    pca_init: bool = False                # dense: rotate the output onto its principal axes first

    def __post_init__(self) -> None:
        if self.matryoshka_dims is not None:
            dims, weights = check_matryoshka(self.matryoshka_dims, self.matryoshka_weights)
            self.matryoshka_dims, self.matryoshka_weights = list(dims), list(weights)
        elif self.matryoshka_weights is not None:
            raise ValueError("matryoshka weights need matryoshka dims")
        if self.distill not in DISTILL:
            raise ValueError(f"distill must be one of {', '.join(DISTILL)}, not {self.distill!r}")
        for name in ("epochs", "lr", "weight_decay", "temperature", "max_grad_norm", "distill_weight",
                     "contrastive_weight", "kl_temperature", "dev_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name.replace('_', '-')} must be a finite number, got {value!r}")
        for name in ("weight_decay", "max_grad_norm", "distill_weight", "contrastive_weight", "grad_cache_chunk",
                     "dev_docs", "dev_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0")
        if not 0 <= self.dev_fraction < 1:
            raise ValueError(f"dev-fraction must be in [0, 1), got {self.dev_fraction}")
        for name in ("batch_size", "group_size", "accumulation", "max_length", "query_max_length", "log_every",
                     "eval_batch_size", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        if not self.lr > 0 or not self.temperature > 0:
            raise ValueError("lr and temperature must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max-steps must be at least 1")
        if self.max_minutes is not None and (isinstance(self.max_minutes, bool) or not isinstance(
                self.max_minutes, (int, float)) or not math.isfinite(self.max_minutes) or self.max_minutes <= 0):
            raise ValueError(f"max-minutes must be a positive number, got {self.max_minutes!r}")
        if self.dev_split is not None and is_test_split(self.dev_split):
            raise ValueError("--dev-split test would select the model on the test queries; carve dev from "
                             "train (--dev-fraction) or name a dev split")
        if self.max_steps is None and not self.epochs > 0:
            raise ValueError("epochs must be positive")


class Trainer:
    def __init__(self, config: TrainConfig, make_encoder: Callable[[], torch.nn.Module],
                 on_step: Callable[[int], None] | None = None) -> None:
        from retriever.encoders.device import resolve_device

        self.config = c = config
        check_out(c.out)
        device = resolve_device(c.device)
        self.dist = distributed.setup(device)
        if self.dist.enabled and device.startswith("cuda"):
            device = f"cuda:{self.dist.local_rank}"
            torch.cuda.set_device(device)
        self.device = device
        self.on_step = on_step  # called after every optimiser step (tests interrupt runs here)
        _seed_everything(c.seed)
        self.model = make_encoder().to(device)
        self.model.train()
        self.matryoshka = self._matryoshka() if c.matryoshka_dims else None
        self.out = Path(c.out)
        self.data = self.load_data()
        if c.pca_init:
            self._rotate_to_principal_axes()
        self.global_batch = c.batch_size * self.dist.world
        clusters = self._topic_clusters() if c.topic_batches else None
        self.plan = BatchPlan(self.data, self.global_batch, self.plan_group_size(), c.seed, clusters,
                              source=c.negatives)
        micro_per_epoch = self.plan.steps_per_epoch
        self.total_steps = c.max_steps or max(1, math.ceil(c.epochs * micro_per_epoch / c.accumulation))
        self.planned_steps = self.total_steps  # what epochs / max-steps ask; a time budget may shorten it
        self.warmup = c.warmup_steps if c.warmup_steps is not None else int(0.1 * self.total_steps)
        self.spent_s = 0.0  # training seconds of earlier runs of a resumed schedule
        self._started = time.perf_counter()  # this run's start (train() sets it)
        self.dev_every = c.dev_every or max(1, micro_per_epoch // c.accumulation)
        self.save_every = c.save_every or self.dev_every
        self.positives = {e.qid: set(e.pos) for e in self.data.train}
        self.contrastive = ContrastiveLoss(c.temperature, learnable=c.learn_temperature).to(device)
        self.start_temperature: float | None = None  # a learned one's calibrated start (not known on resume)
        self.margin_mse, self.kl = MarginMSELoss(c.distill_rescale), KLDistillationLoss(c.kl_temperature)
        groups = self.param_groups()
        if c.learn_temperature:  # one number, with a rate of its own: the model's lr would take ~1,000s of steps
            groups.append({"params": [self.contrastive.log_scale], "weight_decay": 0.0, "lr": TEMPERATURE_LR})
        self.optimizer = torch.optim.AdamW(groups, lr=c.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: self._lr_factor(s))
        self.step = 0
        self.best: tuple[float, int] | None = None  # (dev nDCG@10, step)
        self.history: list[dict] = []

    # -- what a specialised trainer (training.query_trainer) replaces ----------------------
    def load_data(self) -> TrainingData:
        """Training and dev examples with the texts they need (from the negatives file)."""
        c = self.config
        data = TrainingData.load(c.dataset, c.negatives, dev_fraction=c.dev_fraction,
                                 dev_split=c.dev_split, dev_docs=c.dev_docs, seed=c.seed)
        if c.distill != "none" and not data.has_teacher:
            raise ValueError(f"--distill {c.distill} needs teacher scores in {c.negatives} "
                             "(mine with --teacher MODEL)")
        return data

    def plan_group_size(self) -> int:
        """Passages per query the batch plan draws (the positive and the file's negatives)."""
        return self.config.group_size

    def param_groups(self) -> list[dict]:
        """The optimiser's parameter groups (weight decay on matrices only)."""
        return _param_groups(self.model, self.config.weight_decay)

    def dev_metrics(self) -> dict:
        """Dev nDCG@10 (the selection metric) and whatever else is worth logging."""
        return dev_metrics(self.model, self.data, batch_size=self.config.eval_batch_size, device=self.device)

    # -- schedule -------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup))

    # -- one micro-batch ------------------------------------------------------------------
    def local_slice(self, groups: list[Group]) -> list[Group]:
        b = self.config.batch_size
        return groups[self.dist.rank * b:(self.dist.rank + 1) * b]

    def micro_step(self, groups: list[Group], scale: float = 1.0) -> dict:
        """Forward and backward for the global batch ``groups`` (this process encodes its slice);
        gradients accumulate in the parameters, scaled by ``scale``. Returns the loss parts."""
        local = self.local_slice(groups)
        qb = self._to_device(self.model.tokenize([g.query for g in local], "query"))
        db = self._to_device(self.model.tokenize([self.data.docs[d] for g in local for d in g.doc_ids], "doc"))
        chunk = self.config.grad_cache_chunk
        if chunk:
            q, q_states = self._encode_no_grad(qb, "query", chunk)
            d, d_states = self._encode_no_grad(db, "doc", chunk)
            q.requires_grad_(True)
            d.requires_grad_(True)
            loss, parts = self.loss(q, d, groups)
            (loss * scale).backward()
            self._replay(qb, "query", chunk, q_states, q.grad)
            self._replay(db, "doc", chunk, d_states, d.grad)
        else:
            q, d = self._encode(qb, "query"), self._encode(db, "doc")
            loss, parts = self.loss(q, d, groups)
            (loss * scale).backward()
        return parts

    def batch_vectors(self, groups: list[Group]) -> tuple[torch.Tensor, torch.Tensor, list[Group]]:
        """The vectors of a whole batch's queries and passages in this process, and its groups (an
        index-aware trainer adds the negatives it retrieves): what calibration scores."""
        q = self._encode(self._to_device(self.model.tokenize([g.query for g in groups], "query")), "query")
        d = self._encode(self._to_device(self.model.tokenize([self.data.docs[i] for g in groups for i in g.doc_ids],
                                                             "doc")), "doc")
        return q, d, groups

    def loss(self, q_local: torch.Tensor, d_local: torch.Tensor, groups: list[Group]):
        """The global loss from this process's representations and the global batch."""
        c = self.config
        q = distributed.gather(q_local, self.dist)
        d = distributed.gather(d_local, self.dist)
        exclude = self._exclude(groups, q.device)
        if self.matryoshka is None:
            total, parts = self._ranking(q, d, groups, exclude)
        else:
            by_dim = {}

            def ranking(qp, dp):
                loss, by_dim[qp.shape[-1]] = self._ranking(qp, dp, groups, exclude)
                return loss

            total, _ = self.matryoshka(q, d, ranking)
            parts = {f"{name}@{dim}": v for dim, named in by_dim.items() for name, v in named.items()}
        reg, reg_parts = self.model.regularizer(q, d, self.step)
        total = total + reg
        parts.update(reg_parts)
        parts = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in parts.items()}
        parts.update({k: float(v) for k, v in self.model.stats(q.detach(), d.detach()).items()})
        parts["loss"] = float(total.detach())
        if self.contrastive.learnable:
            parts["temperature"] = self.contrastive.temperature
        return total, parts

    def _exclude(self, groups: list[Group], device) -> torch.Tensor:
        """Decoupled softmax: each query's other known positives leave its denominator."""
        ids = [doc for grp in groups for doc in grp.doc_ids]
        n = len(groups)
        exclude = torch.zeros((n, len(ids) if self.config.in_batch else len(groups[0].doc_ids)), dtype=torch.bool,
                              device=device)
        for i, grp in enumerate(groups):
            pos = self.positives.get(grp.qid, {grp.doc_ids[0]})
            cols = ids if self.config.in_batch else grp.doc_ids
            for j, doc in enumerate(cols):
                if doc in pos:
                    exclude[i, j] = True
        return exclude

    def _scores(self, q: torch.Tensor, d: torch.Tensor, n: int, g: int):
        """(scores the contrastive loss sees, their targets, each query's own group of scores)."""
        full = self.model.score(q, d)                                        # (n, n*g)
        own = full.reshape(n, n, g)[torch.arange(n), torch.arange(n)]       # (n, g): each query's group
        if self.config.in_batch:
            return full, group_targets(n, g, device=q.device), own
        return own, torch.zeros(n, dtype=torch.long, device=q.device), own

    def _ranking(self, q: torch.Tensor, d: torch.Tensor, groups: list[Group], exclude: torch.Tensor):
        """Contrastive (+ distillation) loss of global representations ``q``, ``d``: (total, parts)."""
        c = self.config
        scores, targets, own = self._scores(q, d, len(groups), len(groups[0].doc_ids))
        parts = {}
        total = q.new_zeros(())
        if c.contrastive_weight:
            parts["contrastive"] = self.contrastive(scores, targets, exclude)
            total = total + c.contrastive_weight * parts["contrastive"]
        if c.distill != "none":
            # queries mined without a negative train on random ones, which no teacher scored:
            # distillation covers the queries that have teacher scores
            name = "margin_mse" if c.distill == "margin-mse" else "kl"
            rows = [i for i, grp in enumerate(groups) if grp.teacher is not None]
            if not rows:
                parts[name] = own.new_zeros(())
            else:
                mine = own if len(rows) == len(groups) else own[torch.tensor(rows, device=own.device)]
                teacher = torch.tensor([groups[i].teacher for i in rows], dtype=own.dtype, device=own.device)
                if c.distill == "margin-mse":
                    parts[name] = self.margin_mse(mine[:, 0], mine[:, 1:], teacher[:, 0], teacher[:, 1:])
                else:
                    parts[name] = self.kl(mine, teacher)
            total = total + c.distill_weight * parts[name]
        return total, parts

    CALIBRATION_BATCHES = 8  # batches of the plan whose scores set a learned temperature's start

    def calibrate_temperature(self) -> float:
        """A learned temperature starts where the starting model's contrastive loss is lowest: the
        scores of the first ``CALIBRATION_BATCHES`` batches (no dropout, no gradient), and the
        inverse temperature that minimises their mean loss (the loss is convex in it; golden-section
        search over its log). Without this the model calibrates its softmax itself before the one
        parameter meant for it has moved: SPLADE-tiny on NFCorpus dropped from 181 to 50 document
        terms in 30 steps at temperature 1, the learned one having moved 1.0 -> 1.07."""
        batches = []
        self.model.eval()
        try:
            with torch.no_grad():
                for b in range(min(self.CALIBRATION_BATCHES, self.plan.steps_per_epoch)):
                    q, d, groups = self.batch_vectors(self.plan.batch(b))
                    scores, targets, _ = self._scores(q, d, len(groups), len(groups[0].doc_ids))
                    batches.append((scores.double(), targets, self._exclude(groups, q.device)))
        finally:
            self.model.train()

        start = best_temperature(batches)
        with torch.no_grad():
            self.contrastive.log_scale.fill_(-math.log(start))
        log.info("learned temperature starts at %.4g (contrastive loss %.4f there; %.4f at --temperature %.4g)",
                 start, contrastive_at(batches, start), contrastive_at(batches, self.config.temperature),
                 self.config.temperature)
        return start

    def _matryoshka(self) -> MatryoshkaLoss:
        """The prefix loss for the configured dims, checked against the model's size."""
        c = self.config
        width = getattr(self.model, "dim", None)
        if width is None or not hasattr(self.model, "settings") or not hasattr(self.model.settings, "normalize"):
            raise ValueError("--matryoshka trains dense models only")
        too_wide = [d for d in c.matryoshka_dims if d > width]
        if too_wide:
            raise ValueError(f"--matryoshka {','.join(map(str, c.matryoshka_dims))}: "
                             f"{', '.join(map(str, too_wide))} > the model's dimension {width}")
        return MatryoshkaLoss(c.matryoshka_dims, c.matryoshka_weights, normalize=self.model.settings.normalize)

    PCA_DOCS = 4096  # documents whose vectors estimate the principal axes

    def _rotate_to_principal_axes(self) -> None:
        """``--pca-init``: an orthogonal map ``R`` after pooling, whose rows are the principal axes
        (eigenvectors of the uncentred second moment, largest first) of the starting model's
        vectors of up to ``PCA_DOCS`` training-set documents. Dot products and norms are unchanged,
        so the full-size model scores exactly as before (up to float rounding), while every prefix
        now starts as the best linear projection of its size: what Matryoshka training then refines.
        Composed with a Dense module the model already has (identity activation only)."""
        from retriever.encoders.dense import Projection

        model = self.model
        if not hasattr(model, "projection"):
            raise ValueError("--pca-init rotates dense models only")
        old = model.projection
        if old is not None and old.activation is not None:
            raise ValueError("--pca-init: the model's Dense module has a tanh activation; a rotation after it "
                             "cannot be folded in")
        ids = sorted(self.data.docs)
        if len(ids) > self.PCA_DOCS:
            rng = np.random.default_rng(self.config.seed)
            ids = [ids[i] for i in sorted(rng.choice(len(ids), self.PCA_DOCS, replace=False))]
        x = embed(model, [self.data.docs[i] for i in ids], "doc", self.config.eval_batch_size, self.device)
        x = x.double().cpu()
        values, vectors = torch.linalg.eigh(x.T @ x / len(x))
        order = torch.argsort(values, descending=True)
        rotation = vectors[:, order].T  # rows: principal axes, largest second moment first
        dim = rotation.shape[0]
        linear = torch.nn.Linear(old.linear.in_features if old else dim, dim, bias=bool(old and old.linear.bias is not None))
        with torch.no_grad():
            w = old.linear.weight.double().cpu() if old else torch.eye(dim, dtype=torch.float64)
            linear.weight.copy_((rotation @ w).float())
            if linear.bias is not None:
                linear.bias.copy_((rotation @ old.linear.bias.double().cpu()).float())
        model.projection = Projection(linear).to(self.device)
        share = torch.cumsum(values[order], 0) / values.sum()
        dims = self.config.matryoshka_dims or [dim]
        log.info("--pca-init: %d documents; share of the second moment in the first %s dimensions: %s", len(ids),
                 "/".join(map(str, dims)), " / ".join(f"{float(share[d - 1]):.3f}" for d in dims))

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16,
                              enabled=self.device.startswith("cuda") and self.config.bf16)

    def _encode(self, batch: dict, kind: str) -> torch.Tensor:
        with self._autocast():
            return self.model.encode(batch, kind).float()

    def _encode_no_grad(self, batch: dict, kind: str, chunk: int):
        """Gradient caching, pass 1: representations without a graph; the RNG state before each
        chunk is kept so pass 2 sees the same dropout masks."""
        reps, states = [], []
        with torch.no_grad():
            for sub in _chunks(batch, chunk):
                states.append(_rng_state(self.device))
                reps.append(self._encode(sub, kind))
        return torch.cat(reps), states

    def _replay(self, batch: dict, kind: str, chunk: int, states, grad: torch.Tensor) -> None:
        """Gradient caching, pass 2: each chunk again with its graph, backpropagating the cached
        gradient of the loss with respect to its representations."""
        start = 0
        for sub, state in zip(_chunks(batch, chunk), states):
            with _restored_rng(self.device, state):
                reps = self._encode(sub, kind)
            reps.backward(grad[start:start + len(reps)])
            start += len(reps)

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) for k, v in batch.items()}

    # -- the loop ------------------------------------------------------------------------
    def train(self) -> dict:
        c = self.config
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        distributed.barrier(self.dist)
        checkpoints = self.out / "checkpoints"
        if self.dist.main and checkpoints.is_dir():  # a checkpoint whose save failed or was killed
            for partial in checkpoints.glob(".step-*.partial"):  # (a full disk): never one to resume
                shutil.rmtree(partial, ignore_errors=True)
        if c.resume:
            self._resume()
        elif self.dist.main and (self.out / "training_summary.json").is_file():
            if not (self.out / CARD).is_file():  # the run failed after its summary (a full disk)
                raise FileExistsError(f"{self.out} holds a training run that failed as it finished (no {CARD}): "
                                      "--resume finishes it, or choose another --out (nothing there was changed)")
            raise FileExistsError(f"{self.out} holds a finished training run; choose another --out "
                                  "(nothing there was changed)")
        elif self.dist.main and checkpoints.is_dir() and any(p.name.startswith("step-") for p in checkpoints.iterdir()):
            raise FileExistsError(f"{self.out} holds checkpoints of an earlier run; pass --resume to "
                                  "continue it, or choose another --out")
        log_file = self.out / "train_log.jsonl"
        if self.dist.main:
            if not c.resume and log_file.is_file():  # a run stopped before its first checkpoint: start afresh,
                os.replace(log_file, self.out / "train_log.interrupted.jsonl")  # its rows kept aside
            atomic_write_json(self.out / "training_config.json", self.resolved_config())
        started, window = time.perf_counter(), []
        self._started = started
        budget = _Budget(self, started) if c.max_minutes is not None else None
        if c.learn_temperature and self.step == 0:
            self.start_temperature = self.calibrate_temperature()
        if self.data.dev and self.step == 0:  # the starting model: the curve's origin and the bar to beat
            self._dev_eval(log_file, 0.0)
            if budget is not None:
                budget.dev_s = time.perf_counter() - started
        t0 = time.perf_counter()
        while self.step < self.total_steps:
            step_started = time.perf_counter()
            parts_sum: dict[str, float] = {}
            for a in range(c.accumulation):
                groups = self.plan.batch(self.step * c.accumulation + a)
                parts = self.micro_step(groups, 1.0 / c.accumulation)
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v / c.accumulation
            distributed.sum_gradients(self.model, self.dist)
            if c.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            window.append(parts_sum)
            if budget is not None:
                budget.after_step(time.perf_counter() - step_started)
            if self.dist.main and (self.step % c.log_every == 0 or self.step == self.total_steps):
                elapsed = time.perf_counter() - t0
                examples = len(window) * c.accumulation * self.global_batch
                row = {"step": self.step, "lr": self.scheduler.get_last_lr()[0],
                       **{k: float(np.mean([w[k] for w in window])) for k in window[0]},
                       "examples_per_s": examples / elapsed,
                       "passages_per_s": examples * c.group_size / elapsed,
                       "elapsed_s": time.perf_counter() - started}
                _append_json(log_file, row)
                log.info("step %d/%d %s", self.step, self.total_steps,
                         " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))
                window, t0 = [], time.perf_counter()
            if self.data.dev and (self.step % self.dev_every == 0 or self.step == self.total_steps):
                dev_started = time.perf_counter()
                self._dev_eval(log_file, time.perf_counter() - started)
                if budget is not None:
                    budget.dev_s = time.perf_counter() - dev_started
                t0 = time.perf_counter()  # the evaluation is not training throughput
            if self.step % self.save_every == 0 and self.step < self.total_steps:
                self._checkpoint()
            if self.on_step is not None:
                self.on_step(self.step)
        if self.dist.main:
            if not self.data.dev:
                self._save_model_atomically()
            self._save_model_atomically(self.out / "last")
            summary = {"steps": self.step, "best": self.best, "history": self.history,
                       "train_seconds": time.perf_counter() - started, "planned_steps": self.planned_steps,
                       "max_minutes": c.max_minutes}
            if c.learn_temperature:
                summary["temperature"] = {"start": self.start_temperature, "end": self.contrastive.temperature}
            atomic_write_json(self.out / "training_summary.json", summary)
            write_model_card(self.out, device=self.device)
        distributed.barrier(self.dist)
        return {"steps": self.step, "best": self.best, "history": self.history}

    def _dev_eval(self, log_file: Path, elapsed: float) -> None:
        if self.dist.main:
            m = self.dev_metrics()
            row = {"step": self.step, "elapsed_s": elapsed, **{f"dev_{k}": v for k, v in m.items()}}
            self.history.append(row)
            _append_json(log_file, row)
            log.info("dev at step %d: %s", self.step, " ".join(f"{k}={v:.4f}" for k, v in m.items()))
            if self.best is None or m["ndcg@10"] > self.best[0]:
                self.best = (m["ndcg@10"], self.step)
                self._save_model_atomically()
        distributed.barrier(self.dist)

    def _save_model_atomically(self, target: Path | None = None) -> None:
        """Save the model into OUT (``target`` None) or the directory ``target``, never writing a
        file in place. ``target`` is written whole beside itself and swapped in as one directory;
        OUT holds the run's other files too, so its model files are replaced by
        ``model_dir.replace_model``: written whole, committed, then renamed in, a move that readers
        wait for and that whoever opens OUT next finishes if this process is killed in it."""
        if target is None:
            replace_model(self.out, self.model.save)
            return
        tmp = self.out / f".{target.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        with saving(tmp, partial=tmp):
            self.model.save(tmp)
        replace_dir(tmp, target)

    # -- checkpoints ---------------------------------------------------------------------
    def _checkpoint(self) -> None:
        root = self.out / "checkpoints"
        final = root / f"step-{self.step:08d}"
        tmp = root / f".step-{self.step:08d}.partial"
        if self.dist.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            with saving(tmp / "state.pt", partial=tmp):
                torch.save(self._state(), tmp / "state.pt")
        distributed.barrier(self.dist)
        with saving(tmp / f"rng-{self.dist.rank}.json", partial=tmp if self.dist.main else None):
            _save_rng(tmp / f"rng-{self.dist.rank}.json", self.device)
        distributed.barrier(self.dist)
        if self.dist.main:
            os.replace(tmp, final)
            kept = sorted(p for p in root.iterdir() if p.name.startswith("step-"))
            for old in kept[: max(0, len(kept) - self.config.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
        distributed.barrier(self.dist)

    def _state(self) -> dict:
        """What ``state.pt`` holds: state dicts (tensors and plain values), and the step, best,
        history and resolved config as plain Python values, so that ``weights_only=True`` reads it."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "contrastive": self.contrastive.state_dict(),
                "scheduler": _scheduler_state(self.scheduler), "step": int(self.step),
                "best": _plain(self.best), "history": _plain(self.history),
                "total_steps": int(self.total_steps), "warmup": int(self.warmup),
                "spent_s": float(self.spent_s + time.perf_counter() - self._started),
                "config": _plain(self.resolved_config())}

    def _resume(self) -> None:
        root = self.out / "checkpoints"
        found = sorted(p for p in root.iterdir() if p.name.startswith("step-")) if root.is_dir() else []
        if not found:
            raise FileNotFoundError(f"--resume: no checkpoint under {root}")
        ckpt = found[-1]
        state = _load_state(ckpt, self.device)
        saved, now = state["config"], _plain(self.resolved_config())
        defaults = {f.name: f.default for f in fields(TrainConfig)}
        was = {k: saved.get(k, defaults.get(k)) for k in _RESUME_KEYS}  # a key the checkpoint predates: its default
        differ = [k for k in _RESUME_KEYS if was[k] != now.get(k)]
        if differ:
            raise ValueError(f"--resume: {ckpt} was trained with other settings: " + ", ".join(
                f"{k} {was[k]!r} (now {now.get(k)!r})" for k in differ))
        self.model.load_state_dict(state["model"])
        self.contrastive.load_state_dict(state.get("contrastive", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.history = state["step"], state["history"]
        if "total_steps" in state:  # a time budget may have shortened the schedule: keep it
            self.total_steps, self.warmup = int(state["total_steps"]), int(state["warmup"])
            self.spent_s = float(state["spent_s"])
        self.best = tuple(state["best"]) if state["best"] is not None else None
        log_file = self.out / "train_log.jsonl"
        if self.dist.main and log_file.is_file():  # rows the interrupted run wrote after this checkpoint go
            atomic_write_text(log_file, "".join(json.dumps(r) + "\n" for r in _log_rows(log_file) if r["step"] <= self.step))
        rng = ckpt / f"rng-{self.dist.rank}.json"
        if rng.is_file():
            _set_rng_state(self.device, _load_rng(rng))
        log.info("resumed from %s (step %d of %d)", ckpt, self.step, self.total_steps)

    def resolved_config(self) -> dict:
        c = asdict(self.config)
        c.update(total_steps=self.total_steps, warmup_steps=self.warmup, dev_every=self.dev_every,
                 save_every=self.save_every, world_size=self.dist.world, global_batch=self.global_batch,
                 train_queries=len(self.data.train), dev_queries=len(self.data.dev),
                 dev_pool=len(self.data.dev_pool), has_teacher_scores=self.data.has_teacher,
                 device=self.device, encoder=self.model.config())
        c.pop("resume")
        return c

    # -- topic-aware batches ---------------------------------------------------------------
    def _topic_clusters(self) -> np.ndarray:
        """k-means over the starting model's query representations, computed once."""
        import faiss

        texts = [self.data.queries[e.qid] for e in self.data.train]
        x = embed(self.model, texts, "query", self.config.eval_batch_size, self.device).cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        k = self.config.topic_clusters or max(1, len(texts) // (4 * self.config.batch_size * self.dist.world))
        k = min(k, len(texts))
        km = faiss.Kmeans(x.shape[1], k, niter=20, seed=self.config.seed, verbose=False,
                          min_points_per_centroid=1)
        km.train(x)
        return km.index.search(x, 1)[1][:, 0]


class _Budget:
    """``--max-minutes``: the schedule (linear decay, warm-up) is fitted to the steps that fit in
    the wall-clock budget, from the seconds a step has taken so far and the last dev evaluation's
    (one is kept for the final evaluation); fitted after the first ``PROBE`` steps and again after
    every step, never beyond the planned steps (epochs or max-steps); the dev evaluations due are
    counted where they fall. A step that ends past the budget is the last one. A resumed run
    spends what the budget has left."""

    PROBE = 3

    def __init__(self, trainer: Trainer, started: float) -> None:
        self.t, self.started = trainer, started
        self.seconds = trainer.config.max_minutes * 60.0
        self.dev_s = 0.0
        self.steps, self.step_s = 0, 0.0

    def left(self) -> float:
        return self.seconds - self.t.spent_s - (time.perf_counter() - self.started)

    def after_step(self, seconds: float) -> None:
        t = self.t
        self.steps += 1
        self.step_s += seconds
        left = self.left()
        if left <= 0:
            t.total_steps = t.step
            return
        if self.steps < self.PROBE:
            return
        per_step = self.step_s / self.steps
        lo, hi = 0, max(0, t.planned_steps - t.step)  # the most further steps whose cost fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.cost(mid, per_step) <= left:
                lo = mid
            else:
                hi = mid - 1
        first = self.steps == self.PROBE
        t.total_steps = t.step + lo
        if first and t.config.warmup_steps is None and not t.spent_s:  # a resumed run keeps its warm-up
            t.warmup = int(0.1 * t.total_steps)
        if first:
            log.info("time budget %.1f min: %d of %d planned steps fit (%.2f s a step, %.1f s a dev "
                     "evaluation)", self.seconds / 60, t.total_steps, t.planned_steps, per_step, self.dev_s)

    def cost(self, n: int, per_step: float) -> float:
        """Seconds of ``n`` more steps and the dev evaluations due from this step to the last (each
        multiple of dev-every, and the last step)."""
        t = self.t
        if not t.data.dev:
            return n * per_step
        end, every = t.step + n, t.dev_every
        evals = end // every - (t.step - 1) // every + (end % every != 0)
        return n * per_step + evals * self.dev_s


# -- the output directory --------------------------------------------------------------------
def check_out(out: str | os.PathLike) -> None:
    """Refuse a training output that is not a directory, or is (or is inside) an index directory: a
    rebuild of the index (``retriever index --overwrite``) would delete the model with it."""
    from indexing.manifest import MANIFEST

    path = Path(out).absolute()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another --out")
    for d in (path, *path.parents):
        if (d / MANIFEST).is_file() and (d == path or _is_index_manifest(d / MANIFEST)):
            where = "is an index directory" if d == path else f"is inside the index directory {d}"
            raise ValueError(f"--out {out} {where}; rebuilding that index would delete the trained model: "
                             "choose an --out outside any index")


def _is_index_manifest(path: Path) -> bool:
    """Whether ``path`` reads as a retriever index manifest (a JSON object with a format version)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and "format_version" in obj


# -- checkpoint files: nothing in them runs code when read -----------------------------------
def _legacy_checkpoint(ckpt: Path) -> ValueError:
    return ValueError(f"--resume: {ckpt} was written by an older version of the trainer (pickled "
                      "checkpoint) and cannot be resumed safely; start a new run (another --out)")


def _load_state(ckpt: Path, device: str) -> dict:
    """``ckpt/state.pt`` read with ``weights_only=True``: tensors and plain containers only, no code
    runs. A checkpoint of the older pickled format (``rng-*.pt`` files, or a ``state.pt`` the
    restricted reader refuses) raises a one-line ValueError naming ``ckpt``; nothing of it is read."""
    if any(ckpt.glob("rng-*.pt")):
        raise _legacy_checkpoint(ckpt)
    try:
        return torch.load(ckpt / "state.pt", map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise _legacy_checkpoint(ckpt) from None


def _scheduler_state(scheduler) -> dict:
    """The scheduler's state dict (plain numbers and lists). LambdaLR stores None for a plain
    function, like ours, but the ``__dict__`` of a callable object, which could hold anything: refused."""
    state = scheduler.state_dict()
    if any(fn is not None for fn in state.get("lr_lambdas", [])):
        raise TypeError("the learning-rate schedule must be a plain function to be checkpointed")
    return state


def _plain(obj):
    """``obj`` as plain Python values: dicts (str keys), lists and tuples of str, int, float, bool,
    None (tuples stay tuples, tensors stay tensors); numpy scalars and arrays become Python numbers
    and lists, anything else (a Path, say) its ``str``, as in training_config.json."""
    if isinstance(obj, (np.generic, np.ndarray)):  # before float: np.float64 is a float subclass
        return obj.tolist()
    if obj is None or torch.is_tensor(obj):
        return obj
    for kind in (bool, int, float, str):  # subclasses (enums, numpy) as the base type
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return str(obj)


def _rng_to_json(state: dict) -> dict:
    """A full ``_rng_state`` as JSON values: byte tensors as lists of ints; numpy's legacy state
    ``[name, keys, pos, has_gauss, cached_gaussian]``; Python's ``[version, internal, gauss_next]``."""
    name, keys, pos, has_gauss, cached = state["numpy"]
    version, internal, gauss_next = state["python"]
    out = {"torch": state["torch"].tolist(),
           "numpy": [str(name), keys.tolist(), int(pos), int(has_gauss), float(cached)],
           "python": [version, list(internal), gauss_next]}
    if "cuda" in state:
        out["cuda"] = state["cuda"].tolist()
    return out


def _rng_from_json(obj: dict) -> dict:
    """The inverse of ``_rng_to_json``: a state ``_set_rng_state`` restores exactly."""
    name, keys, pos, has_gauss, cached = obj["numpy"]
    version, internal, gauss_next = obj["python"]
    state = {"torch": _byte_tensor(obj["torch"]),
             "numpy": (str(name), np.array(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)),
             "python": (int(version), tuple(int(x) for x in internal),
                        None if gauss_next is None else float(gauss_next))}
    if "cuda" in obj:
        state["cuda"] = _byte_tensor(obj["cuda"])
    return state


def _byte_tensor(values: list) -> torch.Tensor:
    if not all(isinstance(v, int) and 0 <= v < 256 for v in values):
        raise ValueError("an RNG state must be a list of bytes")
    return torch.tensor(values, dtype=torch.uint8)


def _save_rng(path: Path, device: str) -> None:
    """This process's torch (and CUDA), numpy and Python RNG states as JSON in ``path``."""
    path.write_text(json.dumps(_rng_to_json(_rng_state(device, full=True))) + "\n", encoding="utf-8")


def _load_rng(path: Path) -> dict:
    """The RNG states ``_save_rng`` wrote; a ValueError naming ``path`` if it is not such a file."""
    try:
        return _rng_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"--resume: {path} is not a valid RNG state file ({e})") from None


def contrastive_at(batches, temperature: float) -> float:
    """Mean contrastive loss of ``(scores, targets, exclude)`` batches at a fixed temperature."""
    fixed = ContrastiveLoss(temperature)
    return float(np.mean([float(fixed(s, t, e)) for s, t, e in batches]))


def best_temperature(batches, lo: float = 1e-4, hi: float = 1e4, iterations: int = 60) -> float:
    """The temperature in [lo, hi] with the lowest ``contrastive_at``: golden-section search over its
    log (cross-entropy is convex in the inverse temperature, so the search finds the minimum)."""
    a_end, b_end = math.log(lo), math.log(hi)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = b_end - ratio * (b_end - a_end), a_end + ratio * (b_end - a_end)
    fa, fb = contrastive_at(batches, math.exp(a)), contrastive_at(batches, math.exp(b))
    for _ in range(iterations):
        if fa < fb:
            b_end, b, fb = b, a, fa
            a = b_end - ratio * (b_end - a_end)
            fa = contrastive_at(batches, math.exp(a))
        else:
            a_end, a, fa = a, b, fb
            b = a_end + ratio * (b_end - a_end)
            fb = contrastive_at(batches, math.exp(b))
    return math.exp((a_end + b_end) / 2)


def _param_groups(model: torch.nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _chunks(batch: dict, size: int):
    n = next(iter(batch.values())).shape[0]
    for start in range(0, n, size):
        yield {k: v[start:start + size] for k, v in batch.items()}


def _rng_state(device: str, full: bool = False) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    if full:
        state["numpy"] = np.random.get_state()
        state["python"] = random.getstate()
    return state


def _set_rng_state(device: str, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], device)
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(state["python"])


class _restored_rng:
    """Run a block from a saved RNG state, then put the current state back."""

    def __init__(self, device: str, state: dict) -> None:
        self.device, self.state = device, state

    def __enter__(self):
        self.saved = _rng_state(self.device)
        _set_rng_state(self.device, self.state)

    def __exit__(self, *exc):
        _set_rng_state(self.device, self.saved)
        return False


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log_rows(path: Path) -> list[dict]:
    """The rows of a training log; a last row cut short (the run killed, or the disk full, as it
    was written) is dropped with a warning, a damaged row before it is a DataError naming its line."""
    from indexing.errors import DataError

    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a row of this log")
        except ValueError as e:
            if lineno == len(lines):  # no newline after it: the write was cut
                log.warning("%s: line %d was cut short as it was written; dropped", path, lineno)
                break
            raise DataError(f"malformed row ({e}); move the file aside to resume", path=path, line=lineno) from None
        rows.append(row)
    return rows


def _append_json(path: Path, obj) -> None:
    with saving(path), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
