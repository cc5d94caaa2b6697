"""`retriever datasets`: benchmark datasets by name (ir_datasets, materialised once)."""

from __future__ import annotations

import click

from retriever.cli.main import main


@main.group()
def datasets() -> None:
    """Datasets by name: beir/NAME, beir/cqadupstack/FORUM, msmarco-passage/dev/small, irds:ID.

    Any command that takes a dataset directory also takes a name; the first use downloads it
    through ir_datasets (pip extra 'datasets') into $RETRIEVER_HOME/datasets (default
    ~/.cache/retriever/datasets) in BEIR layout.
    """


@datasets.command("list")
def datasets_list():
    """Known names, which are cached, and their size."""
    from eval.datasets import listing

    for row in listing():
        state = (f"{row['bytes'] / 1e6:9.1f} MB  {row['path']}" if row["cached"]
                 else "      not pulled" if row["public"] else "      not public: put BEIR files in " + row["path"])
        click.echo(f"{row['name']:<30} {state}")


@datasets.command("pull")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Materialise again even if cached.")
def datasets_pull(names, force):
    """Download (through ir_datasets) and materialise each NAME; print where it is."""
    from eval.datasets import pull

    for name in names:
        click.echo(f"{name}: {pull(name, force=force)}")
