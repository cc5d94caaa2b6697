"""`retriever heads`: derive what the ``heads`` search strategy reads."""

from __future__ import annotations

from pathlib import Path

import click

from retriever.cli.main import AT_LEAST_1, main


@main.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--cap", type=AT_LEAST_1, default=4096, show_default=True,
              help="Postings kept per term: its highest impacts (the most --heads-depth can read).")
@click.option("--overwrite", is_flag=True, help="Replace heads derived before.")
def heads(index_dir, cap, overwrite):
    """Derive INDEX/heads for `--strategy heads`: each term's highest-impact postings and each
    document's forward list (bm25 and sparse indexes, each shard of a sharded one; about 4 bytes
    per posting)."""
    from indexing.heads import derive_index

    record = derive_index(index_dir, cap, overwrite)
    where = f"{record['shards']} shards' heads/" if "shards" in record else index_dir / "heads"
    click.echo(f"heads: {record['heads']:,} postings ({record['cap']} per term at most), forward lists: "
               f"{record['entries']:,} entries; {record['seconds']:.1f} s; wrote {where}")
