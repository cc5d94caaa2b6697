#!/usr/bin/env bash
# Ensemble teacher (BM25 + MiniLM + SPLADE-tiny, each min-max per query, 1/3 each) against the
# single MiniLM teacher (min-max), margin-MSE, the same 82 steps: dense student MiniLM, and
# sparse student SPLADE-tiny (bench_train.py's SPLADE flags, lambda 1e-3) (issue 17). Results: docs/bench_distill.json, docs/BENCHMARKS.md.
#   bash scripts/bench_distill.sh [DATASET_DIR] [WORK_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
R="$PY -m retriever.cli"
DS=${1:-$ROOT/../shared/data/beir/scifact}
W=${2:-${RETRIEVER_BENCH_WORK:-/tmp/retriever-bench}/distill}
mkdir -p "$W"
B=$W/bm25
[ -f "$B/manifest.json" ] || $R index "$DS" "$B" --quiet --overwrite
[ -f "$W/minilm/manifest.json" ] || $R index "$DS" "$W/minilm" --kind dense --model minilm --faiss Flat --quiet --overwrite
[ -f "$W/splade/manifest.json" ] || $R index "$DS" "$W/splade" --kind sparse --model splade-tiny --quiet --overwrite
M=(--dataset "$DS" --split train --depth 200 --skip-top 3 --max-negatives 32 --teacher-norm minmax)
[ -f "$W/neg-single.jsonl" ] || $R mine "$B" "${M[@]}" --out "$W/neg-single.jsonl" --teacher "$W/minilm"
[ -f "$W/neg-ens.jsonl" ] || $R mine "$B" "${M[@]}" --out "$W/neg-ens.jsonl" --teacher "$B" --teacher "$W/minilm" \
    --teacher "$W/splade"
FLAGS=(--model minilm --batch-size 16 --group-size 4 --max-length 128 --epochs 2 --lr 3e-5 --dev-every 41
       --dev-docs 1500 --log-every 5 --distill margin-mse)
for T in single ens; do
  [ -f "$W/dense-$T/training_summary.json" ] || \
    $R train dense --dataset "$DS" --negatives "$W/neg-$T.jsonl" --out "$W/dense-$T" "${FLAGS[@]}"
  [ -f "$W/idx-dense-$T/manifest.json" ] || \
    $R index "$DS" "$W/idx-dense-$T" --kind dense --model "$W/dense-$T" --faiss Flat --quiet --overwrite
  $R eval --index "$W/idx-dense-$T" --dataset "$DS" --split test --json "$W/eval-dense-$T.json"
done
SFLAGS=(--model splade-tiny --batch-size 16 --group-size 4 --max-length 128 --epochs 2 --lr 1e-4 --dev-every 41
        --dev-docs 1500 --log-every 10 --flops-warmup 40 --lambda-d 1e-3 --lambda-q 1e-3 --distill margin-mse)
for T in single ens; do
  [ -f "$W/splade-$T/training_summary.json" ] || \
    $R train splade --dataset "$DS" --negatives "$W/neg-$T.jsonl" --out "$W/splade-$T" "${SFLAGS[@]}"
  [ -f "$W/idx-splade-$T/manifest.json" ] || \
    $R index "$DS" "$W/idx-splade-$T" --kind sparse --model "$W/splade-$T" --quiet --overwrite
  $R eval --index "$W/idx-splade-$T" --dataset "$DS" --split test --json "$W/eval-splade-$T.json"
done
