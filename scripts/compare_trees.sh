#!/usr/bin/env bash
# Behaviour of two checkouts on the same commands (docs/BENCHMARKS.md, "One house"):
#   scripts/compare_trees.sh TREE OUT [extra `retriever eval` flags, e.g. --ties trec]
# builds BM25 flat / multifield, SPLADE-tiny and MiniLM Flat indexes of SciFact with TREE's code,
# evaluates each on test (saving the runs), composes a BM25+MiniLM hybrid, tunes its fusion on a
# dev carve of train and evaluates it. DATA (default ../shared/data/beir/scifact) and PY (this
# checkout's .venv python) can be overridden. Run it for two trees, one after the other.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
TREE=$(cd "$1" && pwd); OUT=$2; shift 2; EXTRA="$*"
D=${DATA:-$HERE/../shared/data/beir/scifact}
R="${PY:-$HERE/.venv/bin/python} -m retriever.cli"
mkdir -p "$OUT"
cd "$TREE"
for cfg in "bm25-flat:--kind bm25" "bm25-mf:--kind bm25 --fields multifield" \
           "splade-tiny:--kind sparse --model splade-tiny" "minilm:--kind dense --model minilm --faiss Flat"; do
  name=${cfg%%:*}; flags=${cfg#*:}
  echo "== $name"
  $R index "$D" "$OUT/$name" $flags --overwrite --quiet 2>&1 | tail -1
  $R eval --index "$OUT/$name" --dataset "$D" --split test --json "$OUT/$name.json" --save-run "$OUT/$name.trec" $EXTRA 2>&1 | tail -1
done
echo "== hybrid bm25+minilm tuned on a train carve"
$R hybrid "$OUT/bm25-flat" "$OUT/minilm" "$OUT/hybrid" --overwrite >/dev/null
$R tune-fusion "$OUT/hybrid" --dataset "$D" --split train --dev-fraction 0.2 2>&1 | tail -1
$R eval --index "$OUT/hybrid" --dataset "$D" --split test --json "$OUT/hybrid.json" $EXTRA 2>&1 | tail -1
