"""`retriever info`: describe and verify an index."""

from __future__ import annotations

import json
from pathlib import Path

import click

from retriever.cli.main import main


@main.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.option("--verify", is_flag=True, help="Recompute every file checksum.")
def info(index_dir, as_json, verify):
    """Describe an index: kind, documents, settings, size; --verify checks every byte."""
    from indexing.manifest import is_locked, leftovers, read_manifest

    m = read_manifest(index_dir, verify=False)
    checked = []
    if verify:
        from retriever.api import verify_index

        checked = verify_index(index_dir)
    if as_json:
        click.echo(json.dumps(m, indent=2, ensure_ascii=False))
        return
    size = sum(f["bytes"] for f in m.get("files", {}).values())
    click.echo(f"index      {index_dir}")
    click.echo(f"kind       {m['kind']} ({m.get('backend', 'native')}), format {m['format_version']}")
    click.echo(f"documents  {m['doc_count']}")
    for part in m.get("components", []):
        click.echo(f"component  {part['name']}: {part['kind']} at {part['path']}")
    if m.get("shards"):
        from indexing.io import dir_size

        counts = [e["doc_count"] for e in m["shards"]]
        size = dir_size(index_dir)
        shared = ", ".join(k for k in m.get("shared", {}) if k != "path") or "nothing"
        click.echo(f"shards     {len(counts)} under shards/ ({min(counts)}-{max(counts)} documents each); "
                   f"shared: {shared}")
    for key in ("bm25", "analyzer", "postings", "impacts", "encoder", "query", "faiss", "fusion"):
        if key in m:
            if m[key]:
                click.echo(f"{key:<10} " + ", ".join(f"{k}={v}" for k, v in m[key].items()))
    click.echo(f"size       {size / 1e6:.2f} MB in {len(m.get('files', {}))} files")
    if (index_dir / "heads" / "manifest.json").is_file():
        from indexing.heads import parent_checksum

        h = read_manifest(index_dir / "heads", verify=False)
        stale = "" if h.get("of") == parent_checksum(index_dir) else " (stale: derived from another version)"
        click.echo(f"heads      cap={h.get('cap')}, {h.get('build', {}).get('heads', 0):,} postings, "
                   f"{sum(f['bytes'] for f in h['files'].values()) / 1e6:.2f} MB{stale}")
    click.echo(f"corpus     {m.get('corpus', {}).get('path')}")
    click.echo(f"created    {m.get('created')}")
    for what, target, again in (("index", index_dir, "build of it"), ("heads", index_dir / "heads", "`retriever heads`")):
        if is_locked(target):
            click.echo(f"writer     a build of this {what} is running now")
        elif stale := leftovers(target):
            click.echo(f"leftovers  {len(stale)} directories of interrupted {what} builds "
                       f"({', '.join(p.name for p in stale[:3])}); the next {again} removes them")
    partial = index_dir.with_name(index_dir.name + ".partial")
    if partial.is_dir() and not is_locked(index_dir):
        click.echo(f"leftovers  {partial.name}: an interrupted sharded build; `retriever index ... --shards N "
                   "--resume` continues it (delete it otherwise)")
    for line in checked:
        click.echo(f"verified   {line}")
    if verify:
        click.echo("checksums  ok")
