"""`retriever mine`: hard negatives from any index."""

from __future__ import annotations

from pathlib import Path

import click

from retriever.cli.main import AT_LEAST_0, AT_LEAST_1, DATASET, FINITE, _output_file, _split_guard, main


@main.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, type=DATASET, help="BEIR directory or dataset name.")
@click.option("--split", default="train", show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="negatives.jsonl to write.")
@click.option("--depth", type=AT_LEAST_1, default=200, show_default=True, help="Candidates retrieved per query.")
@click.option("--skip-top", type=AT_LEAST_0, default=0, show_default=True, help="Skip the N best non-positive candidates.")
@click.option("--max-negatives", type=AT_LEAST_1, default=32, show_default=True)
@click.option("--teacher", default=None, help="Dense model that scores query, positive and candidates.")
@click.option("--margin", type=FINITE, default=0.95, show_default=True,
              help="Drop a candidate whose teacher score exceeds margin x the positive's.")
@click.option("--device", default="auto", show_default=True, help="Teacher device.")
def mine(index_dir, dataset, split, out, depth, skip_top, max_negatives, teacher, margin, device):
    """Mine hard negatives for a split's queries from any index."""
    from eval.beir import BeirDataset
    from retriever.api import Retriever
    from training.mining import mine as mine_negatives
    from training.mining import write_negatives

    _split_guard(split, "mining negatives from the test split would leak it into training")
    _output_file(out, "--out")
    ds = BeirDataset(dataset)
    qrels = ds.qrels(split)
    queries = ds.split_queries(split)
    r = Retriever.load(index_dir)
    run = r.search_batch(queries, k=depth)
    teacher_model = None
    if teacher:
        from retriever.encoders.dense import DenseEncoder

        teacher_model = DenseEncoder(teacher, device=device)
    records, report = mine_negatives(run, qrels, skip_top=skip_top, max_negatives=max_negatives,
                                     teacher=teacher_model, margin=margin, queries=queries,
                                     corpus=ds.corpus_path)
    write_negatives(records, out)
    click.echo(f"{report}; wrote {out}")
    if report.examples_too_few:
        click.echo(f"e.g. queries with too few negatives: {', '.join(report.examples_too_few)}", err=True)
