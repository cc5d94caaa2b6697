"""How real queries meet their corpus: per query, the share of the corpus's documents holding each
of its terms, analysed as the bm25 kind analyses them (Lucene's English stop words, Porter).
``scripts/synthetic.py``'s ``profiled_text_queries`` copies these shares onto pseudo-words, so a
synthetic BM25 benchmark at 1M documents can ask queries with the term-frequency profile of a real
query set (the train split: the profile is a benchmark's input, never tuned on).

    python scripts/query_profile.py [--dataset ../shared/data/beir/scifact] [--split train]

The benchmarks find the datasets by name under $RETRIEVER_BEIR (default ../shared/data/beir).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BEIR = Path(os.environ.get("RETRIEVER_BEIR", ROOT.parent / "shared" / "data" / "beir"))  # BEIR datasets, by name


@lru_cache(maxsize=None)
def query_profile(dataset: Path, split: str = "train") -> tuple[tuple[float, ...], ...]:
    """Per query of ``split`` (queries order), its terms' document shares in ``dataset``'s corpus;
    terms the corpus lacks dropped (they score nothing), queries left without a term dropped."""
    from eval.beir import BeirDataset
    from indexing.analysis import Analyzer
    from indexing.corpus import doc_text

    if not (Path(dataset) / "corpus.jsonl").is_file():
        raise FileNotFoundError(f"{dataset}: no BEIR corpus.jsonl here (the query profile needs a BEIR dataset)")
    ds, analyse = BeirDataset(dataset), Analyzer()
    df: Counter = Counter()
    docs = 0
    for doc in ds.iter_corpus():
        df.update(set(analyse(doc_text(doc))))
        docs += 1
    out = []
    for text in ds.split_queries(split).values():
        shares = tuple(df[t] / docs for t in analyse(text) if df[t])
        if shares:
            out.append(shares)
    return tuple(out)


def summary(profile) -> dict:
    """Terms a query and the spread of the shares (what a benchmark's queries look like)."""
    lengths = np.array([len(q) for q in profile])
    shares = np.concatenate([np.asarray(q) for q in profile])
    top = np.array([max(q) for q in profile])
    pct = lambda a: [round(float(x), 4) for x in np.percentile(a, [10, 50, 90])]  # noqa: E731
    return {"queries": len(profile), "terms_per_query_mean": round(float(lengths.mean()), 2),
            "terms_per_query_p10_p50_p90": pct(lengths), "term_share_p10_p50_p90": pct(shares),
            "largest_share_per_query_p10_p50_p90": pct(top)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=BEIR / "scifact")
    ap.add_argument("--split", default="train")
    args = ap.parse_args()
    from indexing.errors import DataError

    try:
        profile = query_profile(args.dataset, args.split)
    except (DataError, FileNotFoundError) as e:
        print(f"query_profile: {e}", file=sys.stderr)
        return 2
    print(summary(profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
