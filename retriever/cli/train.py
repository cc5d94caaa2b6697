"""``retriever train dense|splade``: one set of trainer flags, each command adds its encoder's."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from retriever.cli.main import DATASET, _floats


def _opt(*decls, **attrs):
    return decls, attrs


_TRAINER_OPTIONS = [
    _opt("--model", required=True, help="Starting model (directory, pulled pack name, or hub id)."),
    _opt("--dataset", required=True, type=DATASET,
         help="BEIR dataset directory (texts of queries and documents)."),
    _opt("--negatives", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
         help="negatives.jsonl from `retriever mine`."),
    _opt("--out", required=True, type=click.Path(path_type=Path),
         help="Output directory: the best model (loadable with --model OUT), checkpoints, logs."),
    _opt("--epochs", type=float, default=1.0, show_default=True),
    _opt("--max-steps", type=int, default=None, help="Optimiser steps (overrides --epochs)."),
    _opt("--max-minutes", type=float, default=None,
         help="Wall-clock budget (dev evaluations included): the schedule shrinks to the steps that fit."),
    _opt("--batch-size", type=int, default=32, show_default=True, help="Queries per process per micro-batch."),
    _opt("--group-size", type=int, default=8, show_default=True,
         help="Passages per query: 1 positive + N-1 hard negatives."),
    _opt("--lr", type=float, default=2e-5, show_default=True),
    _opt("--weight-decay", type=float, default=0.01, show_default=True),
    _opt("--warmup-steps", type=int, default=None, help="Linear warm-up steps (default 10%)."),
    _opt("--temperature", type=float, default=None,
         help="Softmax temperature (default: dense 0.05 for cosine scores, splade 1.0)."),
    _opt("--learn-temperature/--fixed-temperature", default=False, show_default=True,
         help="Train the softmax temperature with the model, starting from --temperature."),
    _opt("--max-length", type=int, default=256, show_default=True, help="Passage tokens in training."),
    _opt("--query-max-length", type=int, default=64, show_default=True),
    _opt("--seed", type=int, default=42, show_default=True),
    _opt("--device", default="auto", show_default=True, help="auto | cpu | cuda (torchrun: one GPU per process)."),
    _opt("--accumulation", type=int, default=1, show_default=True, help="Micro-batches per optimiser step."),
    _opt("--grad-cache", "grad_cache_chunk", type=int, default=0, show_default=True,
         help="Gradient caching: encode N texts per chunk (0: off)."),
    _opt("--in-batch/--no-in-batch", default=True, show_default=True,
         help="Other queries' passages as negatives too (--no-in-batch: each query's own group only)."),
    _opt("--distill", type=click.Choice(["none", "margin-mse", "kl"]), default="none", show_default=True,
         help="Distil from teacher scores in the negatives file (mine with --teacher)."),
    _opt("--distill-weight", type=float, default=1.0, show_default=True),
    _opt("--distill-rescale/--no-distill-rescale", default=None,
         help="margin-mse: teacher margins rescaled to the student's spread in each batch (default: "
              "splade yes, its dot products have no fixed scale; dense no, cosine scores live near the "
              "normalised teachers' 0-1)."),
    _opt("--contrastive-weight", type=float, default=1.0, show_default=True),
    _opt("--topic-batches", is_flag=True, help="Draw each batch from one cluster of similar queries."),
    _opt("--topic-clusters", type=int, default=None, help="Query clusters (default: queries / 4 batches)."),
    _opt("--dev-fraction", type=float, default=0.2, show_default=True,
         help="Queries of the negatives file carved out for dev evaluation (0: none)."),
    _opt("--dev-split", default=None, help="Use this qrels split as dev instead of carving one."),
    _opt("--dev-docs", type=int, default=10_000, show_default=True,
         help="Dev pool: dev positives and negatives plus random documents up to N (0: whole corpus)."),
    _opt("--dev-every", type=int, default=0, show_default=True, help="Steps between dev evaluations (0: each epoch)."),
    _opt("--save-every", type=int, default=None, help="Steps between checkpoints (default: --dev-every)."),
    _opt("--log-every", type=int, default=10, show_default=True),
    _opt("--resume", is_flag=True, help="Continue from the latest checkpoint in OUT."),
    _opt("--no-bf16", "bf16", flag_value=False, default=True, help="No bf16 autocast on GPUs."),
]


def _flag(decls) -> str:
    """An option's name: its first flag (``--a/--no-a``: ``--a``)."""
    return decls[0].split("/", 1)[0]


def trainer_options(f=None, *, skip: tuple[str, ...] = (), recipe: str | None = None):
    """The shared trainer flags on a command (``skip``: the ones it does not take, by name;
    ``recipe``: a kind in ``training.recipes.RECIPES`` whose values become the flags' defaults)."""
    defaults = {}
    if recipe is not None:
        from training.recipes import recipe as recipe_of

        # the recipe's values for the shared flags (a command's own flags read theirs with recipe_default)
        defaults = {"--" + k.replace("_", "-"): v for k, v in recipe_of(recipe).items()}

    def apply(f):
        for decls, attrs in reversed(_TRAINER_OPTIONS):
            if _flag(decls) not in skip:
                if _flag(decls) in defaults:
                    attrs = {**attrs, "default": defaults[_flag(decls)], "show_default": True}
                f = click.option(*decls, **attrs)(f)
        return f

    return apply if f is None else apply(f)


def recipe_default(kind: str, name: str, fallback):
    """A command's own flag's default: its recipe's value, else ``fallback``."""
    from training.recipes import recipe

    return recipe(kind).get(name, fallback)


@click.group()
def train() -> None:
    """Fine-tune a dense or SPLADE encoder on mined hard negatives."""


def _matryoshka_dims(ctx, param, value):
    """``--matryoshka 384,256,128,64``: distinct positive integers, in the order given (the weights
    follow it; the trainer orders both largest first)."""
    if value is None:
        return None
    try:
        dims = [int(x) for x in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers (e.g. 384,256,128,64), got {value!r}") from None
    from training.losses import check_matryoshka

    try:
        check_matryoshka(dims)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return dims


def _matryoshka_weights(ctx, param, value):
    if value is None:
        return None
    return _floats(value)


def _run_lock(out):
    """One training run per output directory: a second process on the same OUT stops at once
    (``OUT.lock``, dropped by the kernel if the holder dies). Under torchrun only rank 0 locks."""
    import os

    from indexing.manifest import WriterLock

    if int(os.environ.get("RANK", "0")) != 0:
        return None
    Path(out).absolute().parent.mkdir(parents=True, exist_ok=True)
    return WriterLock(Path(out).absolute(), what="training output directory")


def run_training(make_encoder, flags: dict, extra: dict) -> None:
    from training.trainer import TrainConfig, Trainer, check_out

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("retriever").setLevel(logging.INFO)
    config = TrainConfig(**{k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items()}, extra=extra)
    check_out(config.out)  # before the lock: nothing is created beside an OUT that is refused
    lock = _run_lock(config.out)
    try:
        trainer = Trainer(config, make_encoder)
        result = trainer.train()
    finally:
        if lock is not None:
            lock.release()
    if trainer.dist.main:
        best = result["best"]
        where = f"best dev nDCG@10 {best[0]:.4f} at step {best[1]}" if best else "no dev split: last model"
        click.echo(f"{result['steps']} steps; {where}; model in {config.out}")


@train.command("dense")
@trainer_options(recipe="dense")
@click.option("--pooling", type=click.Choice(["cls", "mean", "last"]), default=None,
              help="Default: the model's sentence-transformers config, else mean.")
@click.option("--normalize/--no-normalize", default=None)
@click.option("--query-prefix", default=None)
@click.option("--doc-prefix", default=None)
@click.option("--matryoshka", "matryoshka_dims", default=None, callback=_matryoshka_dims, metavar="D1,D2,...",
              help="Matryoshka: compute the losses on each of these prefixes of the vectors (e.g. 384,256,128,64; "
                   "each <= the model's dimension; list the full one to train it too) and sum them with "
                   "--matryoshka-weights; index a prefix with `retriever index --dim D`.")
@click.option("--matryoshka-weights", default=None, callback=_matryoshka_weights, metavar="W1,W2,...",
              help="Weight of each --matryoshka dimension's loss, in the same order (default: all 1).")
@click.option("--pca-init/--no-pca-init", default=None,
              help="Before training, rotate the vectors onto the principal axes of the starting model's "
                   "document vectors (an orthogonal map saved as a Dense module: full-size scores unchanged, "
                   "each prefix the best projection of its size). Default: on with --matryoshka.")
def train_dense(pooling, normalize, query_prefix, doc_prefix, matryoshka_dims, matryoshka_weights, pca_init, **flags):
    """Dual encoder: contrastive loss over in-batch and hard negatives (+ distillation)."""
    from training.encoders import DenseTrainEncoder

    if matryoshka_weights is not None and matryoshka_dims is None:
        raise click.UsageError("--matryoshka-weights needs --matryoshka")
    if matryoshka_dims is not None:
        from training.losses import check_matryoshka

        try:  # descending, each weight with its dim
            matryoshka_dims, matryoshka_weights = map(list, check_matryoshka(matryoshka_dims, matryoshka_weights))
        except ValueError as e:
            raise click.UsageError(f"--matryoshka-weights: {e}") from None
    extra = {"pooling": pooling, "normalize": normalize, "query_prefix": query_prefix, "doc_prefix": doc_prefix}
    flags["temperature"] = flags["temperature"] or 0.05
    flags["distill_rescale"] = bool(flags["distill_rescale"])
    flags.update(matryoshka_dims=matryoshka_dims, matryoshka_weights=matryoshka_weights,
                 pca_init=matryoshka_dims is not None if pca_init is None else pca_init)

    def make():
        return DenseTrainEncoder(flags["model"], max_length=flags["max_length"],
                                 query_max_length=flags["query_max_length"], **extra)

    run_training(make, flags, extra)


@train.command("splade")
@trainer_options(recipe="splade")
@click.option("--lambda-q", type=float, default=recipe_default("splade", "lambda_q", 0.0), show_default=True,
              help="Query regularisation weight.")
@click.option("--lambda-d", type=float, default=recipe_default("splade", "lambda_d", 0.0), show_default=True,
              help="Document FLOPS weight.")
@click.option("--flops-warmup", type=int, default=recipe_default("splade", "flops_warmup", 0), show_default=True,
              help="Steps of quadratic warm-up of both regularisation weights.")
@click.option("--query-regularizer", type=click.Choice(["flops", "l1"]), default="flops", show_default=True)
@click.option("--idf-flops", is_flag=True, help="IDF-aware FLOPS on documents (common terms pay more).")
@click.option("--inference-free", is_flag=True, help="Queries are tokenised and weighted, not encoded.")
@click.option("--query-weighting", type=click.Choice(["learned", "idf"]), default="learned", show_default=True,
              help="--inference-free: per-token query weights learned (from IDF) or fixed IDF.")
def train_splade(lambda_q, lambda_d, flops_warmup, query_regularizer, idf_flops, inference_free,
                 query_weighting, **flags):
    """SPLADE: ranking loss (+ distillation) with FLOPS / L1 sparsity; optionally inference-free."""
    from training.encoders import SpladeTrainEncoder, corpus_idf

    extra = {"lambda_q": lambda_q, "lambda_d": lambda_d, "flops_warmup": flops_warmup,
             "query_regularizer": query_regularizer, "idf_flops": idf_flops, "inference_free": inference_free,
             "query_weighting": query_weighting}
    flags["temperature"] = flags["temperature"] or 1.0
    flags["distill_rescale"] = flags["distill_rescale"] is not False

    def make():
        idf = corpus_idf(flags["model"], flags["dataset"], flags["max_length"]) if idf_flops or inference_free else None
        return SpladeTrainEncoder(flags["model"], max_length=flags["max_length"],
                                  query_max_length=flags["query_max_length"], idf=idf, **extra)

    run_training(make, flags, extra)


def _by_kind() -> str:
    from training.recipes import QUERY_RECIPES

    return "Default by index kind (training.recipes): " + "; ".join(
        f"{kind} " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in r.items()) for kind, r in QUERY_RECIPES.items())


_BY_KIND = "Default: by index kind (below)."


@train.command("query", epilog=_by_kind())
@click.option("--index", "index", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A dense index (Flat, IVF, HNSW or IVF-PQ): its documents stay fixed.")
@click.option("--negatives", default="live", show_default=True,
              help="live: retrieved from the index with the model being trained (ADORE); or a negatives.jsonl "
                   "from `retriever mine` (static).")
@click.option("--refresh", type=int, default=1, show_default=True,
              help="Live negatives: search each batch's queries every step (1), or all training queries every N steps.")
@click.option("--depth", type=int, default=None,
              help="Live negatives are drawn from this many top results (positives excluded). " + _BY_KIND)
@click.option("--skip-top", type=int, default=0, show_default=True,
              help="Live negatives: leave out the first N non-positive results (likely unjudged positives).")
@click.option("--centroid-lr", type=float, default=1e-4, show_default=True,
              help="IVF-PQ: learning rate of the coarse and PQ centroids, trained against the fixed codes (JPQ).")
@click.option("--no-train-centroids", "train_centroids", flag_value=False, default=True,
              help="IVF-PQ: keep the centroids; train the query encoder only.")
@click.option("--split", default="train", show_default=True, help="Qrels split of the training queries (live negatives).")
@click.option("--overwrite", is_flag=True, help="Replace an existing index at OUT (and a finished run in OUT.train).")
@trainer_options(skip=("--model", "--negatives", "--out", "--max-length", "--grad-cache", "--distill",
                       "--distill-weight", "--distill-rescale", "--contrastive-weight", "--dev-docs", "--lr",
                       "--learn-temperature", "--group-size", "--epochs", "--in-batch", "--temperature"))
@click.option("--learn-temperature/--fixed-temperature", default=None,
              help="Train the softmax temperature with the query side, starting from the one that fits the "
                   "start model best. " + _BY_KIND)
@click.option("--group-size", type=int, default=None, help="Passages per query: 1 positive + N-1 negatives. " + _BY_KIND)
@click.option("--epochs", type=float, default=None, help="Passes over the training queries. " + _BY_KIND)
@click.option("--in-batch/--no-in-batch", default=None,
              help="Other queries' passages as negatives too. " + _BY_KIND)
@click.option("--lr", type=float, default=None, help="Learning rate. " + _BY_KIND)
@click.option("--temperature", type=float, default=None, help="Softmax temperature. " + _BY_KIND)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The new index: same documents and codes, trained centroids and query encoder, no refine. "
                   "Checkpoints and logs go to OUT.train/.")
def train_query(index, negatives, refresh, depth, skip_top, centroid_lr, train_centroids, split, overwrite, out, **flags):
    """Train the query side against a fixed index: a dense index's query encoder and IVF-PQ centroids
    (ADORE / JPQ), or an inference-free sparse index's per-token query weights."""
    import json

    from training.query_trainer import LIVE, write_index

    if negatives != LIVE and not Path(negatives).is_file():
        raise click.BadParameter(f"{negatives!r} is neither 'live' nor a negatives file", param_hint="--negatives")
    if Path(out).absolute() == Path(index).absolute():
        raise click.BadParameter("the trained index must go to a new directory, not over its source",
                                 param_hint="--out")
    if Path(out).exists() and not overwrite:
        raise click.UsageError(f"{out} already exists (use --overwrite to replace it)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("retriever").setLevel(logging.INFO)
    work = Path(out).with_name(Path(out).name + ".train")
    lock = _run_lock(work)
    try:
        if overwrite and not flags["resume"] and work.is_dir():
            import shutil

            shutil.rmtree(work)  # the run that made the index being replaced
        elif not flags["resume"] and (work / "training_summary.json").is_file() and not Path(out).exists():
            raise click.UsageError(f"{work} holds a finished training run whose index was never written "
                                   f"({out} is missing: a failure at its end); --resume writes it, "
                                   "--overwrite trains afresh")
        record = _train_query(index, negatives, refresh, depth, skip_top, centroid_lr, train_centroids, split,
                              work, flags)
        write_index(index, record.pop("_trained"), out, overwrite=overwrite, record=record)
    finally:
        lock.release()
    click.echo(json.dumps(record))
    click.echo(f"index with the trained query encoder in {out} (training logs in {work})")


def _train_query(index, negatives, refresh, depth, skip_top, centroid_lr, train_centroids, split, work, flags):
    from indexing.manifest import read_manifest
    from training.query_trainer import LIVE, QueryTrainer
    from training.recipes import query_recipe
    from training.trainer import TrainConfig

    manifest = read_manifest(index)
    # the flags not on the line: the recipe of the index's kind (which kinds train: QueryTrainer checks)
    defaults = query_recipe("dense" if manifest.get("kind") == "dense" else "sparse")
    recipe_depth = defaults.pop("depth")  # the live negatives' depth is the command's, not the trainer's
    depth = recipe_depth if depth is None else depth
    flags.update({k: v for k, v in defaults.items() if flags.get(k) is None})
    model = (manifest.get("encoder") or {}).get("model", "")
    config = TrainConfig(model=str(model), negatives=str(negatives), out=str(work),
                         **{k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items()})
    trainer = QueryTrainer(config, index, refresh=refresh, depth=depth, skip_top=skip_top, centroid_lr=centroid_lr,
                           train_centroids=train_centroids, split=split)
    result = trainer.train()
    best = result["best"]
    record = {"_trained": work if best else work / "last",
              "negatives": negatives if negatives == LIVE else str(Path(negatives).absolute()),
              "refresh": refresh, "depth": depth, "skip_top": skip_top, "steps": result["steps"],
              "centroids_trained": trainer.model.docs.trainable,
              "best_dev_ndcg@10": best[0] if best else None, "best_step": best[1] if best else None,
              "start_dev_ndcg@10": result["history"][0]["dev_ndcg@10"] if result["history"] else None}
    return record
