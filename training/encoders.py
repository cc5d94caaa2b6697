"""Training-only parts of the encoders: what the shared trainer needs beyond the model itself.

The models are the inference ones (``retriever.encoders``): ``DenseModel`` and ``SpladeModel``
tokenize, encode, score, save and describe themselves. The trainer also asks its encoder for
- ``regularizer(q, d, step)`` -> (loss, {name: value}) added to the ranking loss,
- ``stats(q, d)`` -> {name: value} for the log,
and tokenises with training lengths, which may be shorter than the inference lengths a saved
model declares. ``DenseTrainEncoder`` and ``SpladeTrainEncoder`` are those models with these
additions; ``SpladeRegularizer`` is SPLADE's sparsity loss (FLOPS / L1 / IDF-aware FLOPS with
a quadratic warm-up). ``build_missing_mlm_head`` and ``corpus_idf`` prepare a SPLADE run.
"""

from __future__ import annotations

import torch
from torch import nn

from retriever.encoders.dense import DenseModel, DenseSettings
from retriever.encoders.models import resolve_model
from retriever.encoders.splade import SpladeModel, SpladeSettings
from training.losses import FLOPSLoss, L1Loss, idf_penalty_weights, quadratic_warmup

QUERY_REGULARIZERS = ("flops", "l1")


class DenseTrainEncoder(DenseModel):
    """``DenseModel`` tokenising at training lengths, with no regulariser.

    ``max_length`` (passages) and ``query_max_length`` cap the model's lengths; the settings the
    saved model declares stay the source model's (or ``settings`` / ``overrides``).
    """

    def __init__(self, model: str, *, max_length: int = 256, query_max_length: int = 64,
                 settings: DenseSettings | None = None, **overrides) -> None:
        super().__init__(model, settings=settings, **overrides)
        self.doc_max_length = min(max_length, self.settings.doc_max_length)
        self.query_max_length = min(query_max_length, self.settings.query_max_length)

    def regularizer(self, q: torch.Tensor, d: torch.Tensor, step: int):
        return q.new_zeros(()), {}

    def stats(self, q: torch.Tensor, d: torch.Tensor) -> dict:
        return {}


class SpladeRegularizer(nn.Module):
    """SPLADE sparsity: FLOPS on documents (IDF-aware with ``idf_flops``: common tokens pay more)
    and FLOPS or L1 on queries (none for inference-free queries), weighted ``lambda_d`` /
    ``lambda_q`` times a quadratic warm-up over ``flops_warmup`` steps.

    ``forward(q, d, step)`` -> (total, parts): each active term by name and ``reg_factor``.
    """

    def __init__(self, *, lambda_q: float = 0.0, lambda_d: float = 0.0, flops_warmup: int = 0,
                 query_regularizer: str = "flops", idf_flops: bool = False, inference_free: bool = False,
                 idf: torch.Tensor | None = None) -> None:
        super().__init__()
        if query_regularizer not in QUERY_REGULARIZERS:
            raise ValueError(f"query regulariser must be flops or l1, not {query_regularizer!r}")
        if idf_flops and idf is None:
            raise ValueError("IDF-aware FLOPS needs the corpus IDF")
        self.lambda_q, self.lambda_d, self.flops_warmup = lambda_q, lambda_d, flops_warmup
        self.query_regularizer, self.idf_flops, self.inference_free = query_regularizer, idf_flops, inference_free
        self.doc_flops = FLOPSLoss(idf_penalty_weights(idf) if idf_flops else None)
        self.query_reg = FLOPSLoss() if query_regularizer == "flops" else L1Loss()

    def forward(self, q: torch.Tensor, d: torch.Tensor, step: int):
        factor = quadratic_warmup(step, self.flops_warmup)
        parts = {}
        total = q.new_zeros(())
        if self.lambda_d:
            parts["flops_d"] = self.doc_flops(d)
            total = total + self.lambda_d * factor * parts["flops_d"]
        if self.lambda_q and not self.inference_free:
            parts[f"{self.query_regularizer}_q"] = self.query_reg(q)
            total = total + self.lambda_q * factor * parts[f"{self.query_regularizer}_q"]
        if parts:
            parts["reg_factor"] = factor
        return total, parts

    def config(self) -> dict:
        return {"lambda_q": self.lambda_q, "lambda_d": self.lambda_d, "flops_warmup": self.flops_warmup,
                "query_regularizer": self.query_regularizer, "idf_flops": self.idf_flops}


class SpladeTrainEncoder(SpladeModel):
    """``SpladeModel`` tokenising at training lengths, with ``SpladeRegularizer`` and nnz stats.

    A plain encoder without an MLM head gets one (``build_missing_mlm_head``). ``idf`` (corpus
    IDF, ``corpus_idf``) is needed for ``idf_flops`` and ``inference_free``.
    """

    def __init__(self, model: str, *, max_length: int = 256, query_max_length: int = 64,
                 lambda_q: float = 0.0, lambda_d: float = 0.0, flops_warmup: int = 0,
                 query_regularizer: str = "flops", idf_flops: bool = False, inference_free: bool = False,
                 query_weighting: str = "learned", idf: torch.Tensor | None = None) -> None:
        sparsity = SpladeRegularizer(lambda_q=lambda_q, lambda_d=lambda_d, flops_warmup=flops_warmup,
                                     query_regularizer=query_regularizer, idf_flops=idf_flops,
                                     inference_free=inference_free, idf=idf)
        super().__init__(model, settings=SpladeSettings(doc_max_length=max_length, query_max_length=query_max_length),
                         inference_free=inference_free, query_weighting=query_weighting, idf=idf)
        self.built_head = build_missing_mlm_head(self.model, self.missing_keys)
        self.sparsity = sparsity

    def regularizer(self, q: torch.Tensor, d: torch.Tensor, step: int):
        return self.sparsity(q, d, step)

    def stats(self, q: torch.Tensor, d: torch.Tensor) -> dict:
        return {"nnz_q": float((q > 0).sum(dim=1).float().mean()), "nnz_d": float((d > 0).sum(dim=1).float().mean())}

    def config(self) -> dict:
        return {**super().config(), "built_mlm_head": self.built_head, **self.sparsity.config()}


def build_missing_mlm_head(model, missing_keys: list[str]) -> bool:
    """If the checkpoint had no MLM head, make the new one start sensibly: decoder tied to the
    input embeddings, square transform layers = identity, biases 0. Returns whether one was built."""
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    modules = dict(model.named_modules())
    head = {k.rsplit(".", 1)[0] for k in missing_keys if not k.startswith(model.base_model_prefix + ".")}
    if not head:
        return False
    model.config.tie_word_embeddings = True
    out_emb.weight = in_emb.weight
    with torch.no_grad():
        for name in head:
            module = modules.get(name)
            if isinstance(module, nn.Linear) and module is not out_emb and module.in_features == module.out_features:
                module.weight.copy_(torch.eye(module.in_features))
            if module is not None and getattr(module, "bias", None) is not None and module is not out_emb \
                    and not isinstance(module, nn.LayerNorm):
                module.bias.zero_()
        if getattr(out_emb, "bias", None) is not None:
            out_emb.bias.zero_()
    return True


def corpus_idf(model: str, dataset, max_length: int = 256) -> torch.Tensor:
    """IDF of each vocabulary token over a BEIR corpus, tokenised as documents are."""
    from transformers import AutoConfig, AutoTokenizer

    from eval.beir import BeirDataset

    from indexing.corpus import doc_text
    from retriever.encoders.splade import idf_weights, token_document_frequencies

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab_size = int(AutoConfig.from_pretrained(path).vocab_size)
    df, n = token_document_frequencies(tokenizer, (doc_text(d) for d in BeirDataset(dataset).iter_corpus()),
                                       vocab_size, max_length)
    return torch.from_numpy(idf_weights(df, n))
