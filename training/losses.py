"""Ranking and distillation losses: small modules over scores that compose.

Scores, not embeddings, are their input, so the same losses serve dense and SPLADE training and
gradient caching (which computes scores from cached embeddings). Layout used throughout: each
query has a group of ``G`` passages (its positive first, then its hard negatives); passages of
all queries are flattened to ``B * G`` rows, so with in-batch negatives query ``i``'s target is
column ``i * G``. ``MatryoshkaLoss`` is the one that sees representations: it cuts them into
nested prefixes and applies any of the score losses to each.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def group_targets(batch: int, group: int, device=None) -> torch.Tensor:
    """Column of each query's own positive among the flattened ``batch * group`` passages."""
    return torch.arange(batch, device=device) * group


class ContrastiveLoss(nn.Module):
    """Cross-entropy over scores / temperature (InfoNCE), in-batch and hard negatives alike.

    ``exclude`` (bool, same shape as scores) removes entries from the softmax denominator: the
    decoupled softmax for queries with several positives passes their *other* positives here, so
    a second relevant passage is not pushed down as if it were a negative.

    ``learnable``: the temperature starts at ``temperature`` and is trained with the model (as
    ``log_scale``, the log of its inverse). A model whose scores have no fixed scale (SPLADE's dot
    products) can then calibrate its softmax through this one number; with a fixed temperature the
    only way to soften an over-confident softmax is to shrink the representations, which for
    SPLADE means dropping terms (measured on NFCorpus: documents 181 -> 63 terms in 40 steps).
    """

    def __init__(self, temperature: float = 0.05, learnable: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.learnable = learnable
        if learnable:
            self.log_scale = nn.Parameter(torch.tensor(-math.log(temperature), dtype=torch.float32))
        else:
            self._temperature = float(temperature)

    @property
    def temperature(self) -> float:
        return math.exp(-float(self.log_scale.detach())) if self.learnable else self._temperature

    def forward(self, scores: torch.Tensor, targets: torch.Tensor,
                exclude: torch.Tensor | None = None) -> torch.Tensor:
        if self.learnable:
            logits = scores * self.log_scale.exp().to(scores.dtype)
        else:
            logits = scores / self._temperature
        if exclude is not None:
            keep_target = F.one_hot(targets, logits.shape[1]).bool()
            logits = logits.masked_fill(exclude & ~keep_target, float("-inf"))
        return F.cross_entropy(logits, targets)


class MarginMSELoss(nn.Module):
    """MSE between the student's and the teacher's positive-minus-negative score margins.

    ``rescale``: the student's margins are first multiplied by ``std(teacher) / std(student)``
    over the batch (a constant for the gradient). Teacher scores normalised per query (min-max,
    z-score) live on a scale of about 1, a SPLADE dot product on one of tens: matched as they are,
    the student can only shrink its margins, and does so by emptying its vectors (measured:
    SPLADE-tiny went to ~5 terms per document in 30 steps). Rescaled, the loss asks for the
    teacher's order and relative gaps at whatever scale the student has, with gradients on the
    teacher's scale (the other way round, teacher margins brought to the student's spread, the
    loss grew with the student and its vectors grew without end: measured, 179 -> 7,000 terms
    per document in 50 steps)."""

    def __init__(self, rescale: bool = False) -> None:
        super().__init__()
        self.rescale = rescale

    def forward(self, student_pos: torch.Tensor, student_neg: torch.Tensor,
                teacher_pos: torch.Tensor, teacher_neg: torch.Tensor) -> torch.Tensor:
        student = student_pos.unsqueeze(-1) - student_neg
        teacher = teacher_pos.unsqueeze(-1) - teacher_neg
        if self.rescale and teacher.numel() > 1:
            spread = student.detach().float().std()
            if spread > 0:
                student = student * (teacher.detach().float().std() / spread).to(student.dtype)
        return F.mse_loss(student, teacher)


class KLDistillationLoss(nn.Module):
    """KL(teacher || student) over each query's group, with a shared temperature (scaled by T^2)."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                        reduction="batchmean", log_target=True) * t * t


# -- Matryoshka representation learning -------------------------------------------------------
def check_matryoshka(dims, weights=None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Matryoshka prefix sizes and their loss weights, validated: ``dims`` distinct integers >= 1,
    returned in descending order (``weights`` follow their dims); ``weights`` (default all 1) as
    many as ``dims``, finite, >= 0, not all 0. ValueError naming the problem otherwise."""
    dims = list(dims)
    if not dims:
        raise ValueError("matryoshka needs at least one dimension")
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"matryoshka dimensions must be integers >= 1, got {dims}")
    repeated = sorted({d for d in dims if dims.count(d) > 1})
    if repeated:
        raise ValueError(f"matryoshka dimensions must be distinct; repeated: {', '.join(map(str, repeated))}")
    weights = [1.0] * len(dims) if weights is None else list(weights)
    if len(weights) != len(dims):
        raise ValueError(f"matryoshka weights: {len(weights)} given for {len(dims)} dimensions")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"matryoshka weights must be finite numbers >= 0, got {weights}")
    if not any(weights):
        raise ValueError("matryoshka weights are all 0: nothing would be trained")
    order = sorted(range(len(dims)), key=lambda i: -dims[i])
    return tuple(dims[i] for i in order), tuple(float(weights[i]) for i in order)


class MatryoshkaLoss(nn.Module):
    """A loss over (queries, passages) representations computed on nested prefixes and summed
    with weights (Matryoshka representation learning, Kusupati et al. 2022): the first ``D``
    components of both sides, re-normalised when the model's vectors are normalised (``normalize``),
    for every ``D`` in ``dims``. A prefix as wide as the representations is used as it is.

    ``forward(q, d, loss_fn)`` -> (total, {D: loss_fn(q_D, d_D)}); ``loss_fn`` is whatever ranking
    loss the trainer composes from scores of those prefixes (contrastive, distillation), so every
    prefix sees the same targets and temperature.
    """

    def __init__(self, dims, weights=None, normalize: bool = False) -> None:
        super().__init__()
        self.dims, self.weights = check_matryoshka(dims, weights)
        self.normalize = normalize

    def prefix(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        if dim > x.shape[-1]:
            raise ValueError(f"matryoshka dimension {dim} is larger than the representations ({x.shape[-1]})")
        if dim == x.shape[-1]:
            return x
        out = x[..., :dim]
        return F.normalize(out, p=2, dim=-1) if self.normalize else out

    def forward(self, q: torch.Tensor, d: torch.Tensor, loss_fn):
        total, parts = q.new_zeros(()), {}
        for dim, weight in zip(self.dims, self.weights):
            parts[dim] = loss_fn(self.prefix(q, dim), self.prefix(d, dim))
            if weight:
                total = total + weight * parts[dim]
        return total, parts


# -- sparsity regularisers (SPLADE) -----------------------------------------------------------
class FLOPSLoss(nn.Module):
    """Sum over the vocabulary of the squared mean activation over the batch (Paria et al. 2020):
    a smooth stand-in for the expected number of multiplications of a query-document product.

    ``token_weights`` (one per vocabulary entry) weights each term's penalty; the IDF-aware
    variant passes ``idf_penalty_weights``.
    """

    def __init__(self, token_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("token_weights", token_weights, persistent=False)

    def forward(self, reps: torch.Tensor) -> torch.Tensor:
        per_term = reps.abs().mean(dim=0).pow(2)
        if self.token_weights is not None:
            per_term = per_term * self.token_weights
        return per_term.sum()


class L1Loss(nn.Module):
    """Mean over the batch of each representation's L1 norm (an alternative for queries)."""

    def forward(self, reps: torch.Tensor) -> torch.Tensor:
        return reps.abs().sum(dim=1).mean()


def idf_penalty_weights(idf: torch.Tensor, max_weight: float = 100.0) -> torch.Tensor:
    """Per-term FLOPS weights for IDF-aware regularisation: ``(mean_idf / idf_v)^2``.

    A term's penalty falls with the square of its IDF, so rare, discriminating terms are kept and
    common ones are pruned first (the aim of IDF-aware FLOPS in inference-free learned sparse
    retrieval, Geng et al. 2024). Terms never seen in the corpus (IDF 0) get the largest IDF's
    weight; weights are capped at ``max_weight``. The mean is over terms seen in the corpus.
    """
    idf = idf.float()
    seen = idf > 0
    if not bool(seen.any()):
        return torch.ones_like(idf)
    filled = torch.where(seen, idf, idf[seen].max())
    return (idf[seen].mean() / filled).pow(2).clamp(max=max_weight)


def quadratic_warmup(step: int, warmup_steps: int) -> float:
    """Regularisation weight factor: (step / warmup)^2 up to the warm-up's end, then 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps) ** 2
