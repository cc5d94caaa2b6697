"""`retriever index`: a corpus into an index directory.

The kind flags are not written here: they come from each kind's Settings dataclass
(``retriever.kinds``), so a kind's defaults, types, bounds and help live in one place. The
command shows them grouped by kind (only the chosen kind's with ``--kind K --help``), and a flag
given for another kind is refused with the chosen kind's flags listed.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from click.core import ParameterSource

from indexing.io import dir_size
from retriever import kinds
from retriever.cli.main import CORPUS, _Finite, _floats, main

GENERAL = ("kind", "backend", "overwrite", "no_store_docs", "quiet", "shards", "workers", "ray", "gpus_per_worker",
           "resume")


class _KindChoice(click.Choice):
    """``--kind``: the kinds registered when the command runs."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self):
        return tuple(kinds.names())

    @choices.setter
    def choices(self, value) -> None:
        pass


def _kind_specs() -> dict[str, list[kinds.FieldSpec]]:
    """{kind name: its CLI settings}, over every backend of every kind (backends share Settings)."""
    out: dict[str, list] = {}
    for name in kinds.names():
        seen = {}
        for backend in kinds.backends(name):
            for spec in kinds.fields_of(kinds.get(name, backend).settings):
                if spec.cli:
                    seen.setdefault(spec.name, spec)
        out[name] = list(seen.values())
    return out


def _param_type(spec: kinds.FieldSpec):
    if spec.choices is not None:
        return click.Choice([str(c) for c in spec.choices])
    if spec.base is int:
        return click.IntRange(min=spec.min, max=spec.max, min_open=spec.min_open)
    if spec.base is float:
        return _Finite(spec.min, spec.max, open_low=spec.min_open)
    return str  # str, and list (comma-separated numbers, parsed in the command)


def _option(spec: kinds.FieldSpec) -> click.Option:
    decl = [spec.flag, spec.name]
    if spec.base is bool and spec.optional:
        decl = [f"{spec.flag}/--no-{spec.flag[2:]}", spec.name]
        return click.Option(decl, default=None, help=spec.help)
    if spec.base is bool:
        return click.Option(decl, is_flag=True, default=None, help=spec.help)
    return click.Option(decl, type=_param_type(spec), default=None, help=spec.help)


def _shown_default(spec: kinds.FieldSpec) -> str:
    if spec.default is None or spec.base is bool:
        return ""
    value = ",".join(f"{v:g}" for v in spec.default) if spec.base is list else spec.default
    return f"  [default: {value}]"


class IndexCommand(click.Command):
    """Adds the kinds' settings as flags when parsing, and groups them by kind in ``--help``."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        have = {p.name for p in params}
        for specs in _kind_specs().values():
            for spec in specs:
                if spec.name not in have:
                    params.insert(-1, _option(spec))  # before --help
                    have.add(spec.name)
        return params

    def parse_args(self, ctx, args):
        for i, arg in enumerate(args):  # which kind --help should show, before --help exits
            if arg == "--kind" and i + 1 < len(args):
                ctx.meta["index_kind"] = args[i + 1]
            elif arg.startswith("--kind="):
                ctx.meta["index_kind"] = arg.split("=", 1)[1]
        return super().parse_args(ctx, args)

    def format_options(self, ctx, formatter):
        general = [p.get_help_record(ctx) for p in super().get_params(ctx) if isinstance(p, click.Option)]
        with formatter.section("Options"):
            formatter.write_dl([r for r in general if r])
        shown = ctx.meta.get("index_kind")
        for name, specs in _kind_specs().items():
            if shown and name != shown:
                continue
            rows = []
            for spec in specs:
                opt = _option(spec)
                flags, _ = opt.get_help_record(ctx)
                rows.append((flags, spec.help + _shown_default(spec)))
            backends = kinds.backends(name)
            title = f"--kind {name} ({', '.join(backends)})" if len(backends) > 1 else f"--kind {name}"
            with formatter.section(title):
                if rows:
                    formatter.write_dl(rows)
                else:
                    formatter.write_text("(no settings)")


@main.command(cls=IndexCommand)
@click.argument("corpus", type=CORPUS)
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--kind", type=_KindChoice(), default="bm25", show_default=True,
              help="Index kind; `retriever index --kind K --help` shows its settings.")
@click.option("--backend", type=click.Choice(sorted({b for n in kinds.names() for b in kinds.backends(n)} - {"sharded"})),
              default="native", show_default=True,
              help="native: our in-process index; lucene: Lucene through pyserini (pip extra 'lucene').")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is an existing index.")
@click.option("--no-store-docs", is_flag=True, help="Do not keep document text in the index.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--shards", type=click.IntRange(min=1), default=None,
              help="Split the index in N shards (bm25, sparse, dense), searched as one.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="--shards: build with W local processes (or W Ray actors with --ray).  [default: 1]")
@click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS|local",
              help="--shards: build on a Ray cluster (pip extra 'ray'); OUT must be on a filesystem "
                   "every node shares. local: start one on this machine.")
@click.option("--gpus-per-worker", type=_Finite(0.0), default=None, help="--ray: GPUs each worker asks Ray for.")
@click.option("--resume", is_flag=True, help="--shards: keep the shards an interrupted build of the same "
                                            "settings finished; build only the rest.")
@click.pass_context
def index(ctx, corpus, out, kind, backend, overwrite, no_store_docs, quiet, shards, workers, ray_address,
          gpus_per_worker, resume, **given):
    """Index CORPUS (a BEIR directory or a JSONL file) into the directory OUT."""
    from retriever.api import Retriever

    if shards is None and (workers or ray_address or gpus_per_worker or resume):
        raise click.UsageError("--workers, --ray, --gpus-per-worker and --resume need --shards N")
    if gpus_per_worker and ray_address is None:
        raise click.UsageError("--gpus-per-worker needs --ray")
    sharding = {} if shards is None else {"shards": shards, "workers": workers or 1, "ray": ray_address,
                                          "gpus_per_worker": gpus_per_worker or 0.0, "resume": resume}

    k = kinds.get(kind, backend)
    accepted = {s.name: s for s in kinds.fields_of(k.settings) if s.cli}
    explicit = {name: value for name, value in given.items()
                if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    misplaced = [name for name in explicit if name not in accepted]
    if misplaced:
        flags = {s.name: s.flag for specs in _kind_specs().values() for s in specs}
        raise click.UsageError(
            f"{', '.join(flags[n] for n in misplaced)} do{'es' if len(misplaced) == 1 else ''} not apply to "
            f"--kind {kind}; it takes: {', '.join(s.flag for s in accepted.values()) or 'no settings'}")
    options = {}
    for name, value in explicit.items():
        options[name] = _floats(value) if accepted[name].base is list else value
    start = time.perf_counter()
    r = Retriever.build(corpus, out, kind=kind, backend=backend, overwrite=overwrite,
                        progress=not quiet, store_docs=not no_store_docs, **sharding, **options)
    took = time.perf_counter() - start
    where = f"{backend}" if shards is None else f"{backend}, {shards} shards"
    click.echo(f"indexed {len(r)} documents into {out} ({kind}, {where}) in {took:.1f}s, "
               f"{dir_size(r.path) / 1e6:.1f} MB")
