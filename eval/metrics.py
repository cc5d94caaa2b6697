"""IR metrics through pytrec_eval (trec_eval's own code), BEIR conventions."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from eval.trec import adjust_ties

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")

# our name -> (trec_eval measure, result key); "{k}" is the cutoff. mrr@k is recip_rank on a top-k run.
_MEASURES = {
    "ndcg": ("ndcg_cut.{k}", "ndcg_cut_{k}"),
    "recall": ("recall.{k}", "recall_{k}"),
    "map": ("map_cut.{k}", "map_cut_{k}"),
    "p": ("P.{k}", "P_{k}"),
    "mrr": ("recip_rank", "recip_rank"),
}
_NAME = re.compile(r"(ndcg|recall|mrr|map|p)@([1-9][0-9]*)")
# Largest cutoff: trec_eval keeps cutoffs as C longs and saturates larger ones (a cutoff of 2**63
# was computed as 2**63 - 1 under another result key, and two such cutoffs abort the process).
MAX_CUTOFF = 2**31 - 1
SUPPORTED = f"ndcg@k, recall@k, mrr@k, map@k, p@k (k an integer from 1 to {MAX_CUTOFF})"


@dataclass(frozen=True, slots=True)
class Metric:
    family: str  # ndcg | recall | mrr | map | p
    k: int

    @property
    def name(self) -> str:
        return f"{self.family}@{self.k}"

    @property
    def measure(self) -> str:
        return _MEASURES[self.family][0].format(k=self.k)

    @property
    def key(self) -> str:
        return _MEASURES[self.family][1].format(k=self.k)


def parse_metric(name: str) -> Metric:
    """Parse e.g. "nDCG@10" into Metric("ndcg", 10); ValueError lists the supported forms."""
    m = _NAME.fullmatch(name.strip().lower())
    if m is None:
        raise ValueError(f"unknown metric {name!r}; supported: {SUPPORTED}")
    digits = m.group(2)
    if len(digits) > len(str(MAX_CUTOFF)) or int(digits) > MAX_CUTOFF:
        shown = digits if len(digits) <= 20 else f"{digits[:12]}... ({len(digits)} digits)"
        raise ValueError(f"metric {m.group(1)}@{shown}: the cutoff must be at most {MAX_CUTOFF}")
    return Metric(m.group(1), int(digits))


@dataclass(frozen=True, slots=True)
class Result:
    """metrics: {name: mean}; num_queries: queries averaged over; per_query: {qid: {name: value}} or None."""

    metrics: dict[str, float]
    num_queries: int
    per_query: dict[str, dict[str, float]] | None = None


def _trec_order(hits: dict[str, float]) -> list[tuple[str, float]]:
    """trec_eval's ranking: score descending, ties by docid descending (strcmp)."""
    return sorted(hits.items(), key=lambda h: (h[1], h[0]), reverse=True)


def evaluate(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
             metrics: Iterable[str] = DEFAULT_METRICS, *, ignore_identical_ids: bool = True,
             per_query: bool = False, ties: str = "anserini") -> Result:
    """Score `run` against `qrels`; returns a Result.

    Averages over every qrels query with a judgement > 0; such a query missing from the run (or
    left with no hits) scores 0. With `ignore_identical_ids`, hits whose docid equals the qid are
    dropped first (BEIR convention). Run queries absent from the qrels are ignored. ``ties``:
    the tie rule of ``eval.trec`` ("anserini": the order the engine returned, as Pyserini
    evaluates; "trec": trec_eval's own re-sort of tied scores).
    """
    parsed = list(dict.fromkeys(parse_metric(m) for m in metrics))
    if not parsed:
        raise ValueError("no metrics requested")
    judged = {q: {d: int(r) for d, r in docs.items()}
              for q, docs in qrels.items() if any(r > 0 for r in docs.values())}
    if not judged:
        raise ValueError("qrels have no query with a relevant (> 0) judgement")

    clean: dict[str, dict[str, float]] = {}
    for qid in judged:
        hits = {str(d): float(s) for d, s in run.get(qid, {}).items()}
        bad = next((d for d, s in hits.items() if math.isnan(s)), None)
        if bad is not None:
            raise ValueError(f"query {qid!r}, doc {bad!r}: score is NaN")
        if ties != "trec":
            hits = adjust_ties({qid: hits}, ties)[qid]
        if ignore_identical_ids:
            hits.pop(qid, None)
        bad = next((d for d, s in hits.items() if math.isnan(s)), None)
        if bad is not None:
            raise ValueError(f"query {qid!r}, doc {bad!r}: score is NaN")
        if hits:
            clean[qid] = hits

    import pytrec_eval  # on use: the CLI imports this module for its defaults

    evaluator = pytrec_eval.RelevanceEvaluator(judged, {m.measure for m in parsed})
    full = evaluator.evaluate(clean) if clean else {}
    by_metric: dict[Metric, dict[str, dict[str, float]]] = {}
    for m in parsed:
        if m.family != "mrr":
            by_metric[m] = full
        else:  # recip_rank over each query's top k, cut in trec_eval's order
            top = {q: dict(_trec_order(h)[: m.k]) for q, h in clean.items()}
            by_metric[m] = evaluator.evaluate(top) if top else {}

    for m in parsed:  # a query in the run has every measure; a missing key is no score of 0
        missing = next((q for q in clean if m.key not in by_metric[m].get(q, {})), None)
        if missing is not None:
            raise ValueError(f"pytrec_eval returned no {m.key} ({m.name}) for query {missing!r}")
    table = {q: {m.name: float(by_metric[m][q][m.key]) if q in clean else 0.0 for m in parsed} for q in judged}
    n = len(table)
    means = {m.name: math.fsum(v[m.name] for v in table.values()) / n for m in parsed}
    return Result(means, n, table if per_query else None)
