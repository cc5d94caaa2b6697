"""Default training recipes of ``retriever train dense|splade``: one set of flags per encoder kind,
measured to transfer (docs/BENCHMARKS.md, "Training recipes on a second domain").

The same flags, with no per-dataset tuning, were run on SciFact (test) and NFCorpus (official dev)
after ``retriever mine BM25 --depth 100 --skip-top 3``. What they share: more queries per step with
one hard negative each (group 2) beat fewer queries with several (same passages per step), 128
passage tokens, five epochs with model selection on the trainer's dev carve of train. Flags a
command is given on its line override these; the trainer's own ``TrainConfig`` defaults are the
library's and stay as they are.
"""

from __future__ import annotations

SHARED = {"batch_size": 32, "group_size": 2, "max_length": 128, "epochs": 5.0}

RECIPES: dict[str, dict] = {
    "dense": {**SHARED, "lr": 3e-5},
    # the contrastive temperature learned from the start model's best (SPLADE dot products have no
    # fixed scale: at a fixed temperature 1 the documents collapsed on NFCorpus), FLOPS 1e-3 both sides
    "splade": {**SHARED, "lr": 1e-4, "learn_temperature": True, "lambda_q": 1e-3, "lambda_d": 1e-3,
               "flops_warmup": 40},
}


# ``retriever train query``: per kind of index, for the flags a command does not set. Dense (ADORE):
# each query's 31 best-ranked non-positives as the index returns them for the model as it is now,
# plus in-batch negatives, and a learned temperature calibrated on the start model, ten epochs: beat
# static BM25 negatives with the same flags on SciFact (dev and test, three seeds) and NFCorpus dev
# (docs/BENCHMARKS.md, "Live against static negatives"). Without in-batch negatives, or at the
# fixed 0.05, NFCorpus collapsed. Sparse (inference-free query weights): the trainer's defaults and
# the learning rate chosen on a SciFact dev carve.
QUERY_RECIPES: dict[str, dict] = {
    "dense": {"group_size": 32, "depth": 32, "in_batch": True, "epochs": 10.0, "lr": 2e-5, "temperature": 0.05,
              "learn_temperature": True},
    "sparse": {"group_size": 8, "depth": 100, "in_batch": True, "epochs": 1.0, "lr": 0.1, "temperature": 1.0,
               "learn_temperature": False},
}


def _copy(table: dict[str, dict], kind: str, what: str) -> dict:
    try:
        return dict(table[kind])
    except KeyError:
        raise ValueError(f"no {what} for {kind!r}; known: {', '.join(table)}") from None


def query_recipe(kind: str) -> dict:
    """The default flags of ``retriever train query`` on an index of this kind (a copy)."""
    return _copy(QUERY_RECIPES, kind, "query-training recipe")


def recipe(kind: str) -> dict:
    """The default flags of ``retriever train KIND`` (a copy)."""
    return _copy(RECIPES, kind, "training recipe")
