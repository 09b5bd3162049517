# eventkit developer tasks. GNU make; run `make` for the list.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# Only the source folders that exist yet (others are added as the project grows).
SRC_DIRS := $(wildcard eventkit tests benchmarks examples scripts)

.DEFAULT_GOAL := help
.PHONY: help venv lint typecheck test demo bench bench-quick bench-kafka bench-kafka-redis clean

help: ## List the targets
	@echo "eventkit make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

venv: $(STAMP) ## Create .venv and install eventkit with the dev extra

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { \
		rm -rf $(VENV); \
		echo "error: '$(PYTHON) -m venv' failed; on Debian install the python3-venv package (apt-get install python3-venv)" >&2; \
		exit 1; }
	$(BIN)/python -m pip install --upgrade pip

# Reinstall only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

lint: venv ## ruff check and ruff format --check
	$(BIN)/ruff check $(SRC_DIRS)
	$(BIN)/ruff format --check $(SRC_DIRS)

typecheck: venv ## mypy --strict over the files listed in pyproject.toml
	$(BIN)/mypy

test: venv lint typecheck ## lint, typecheck, then pytest with branch coverage; fails on any skip
	scripts/ensure_system_deps.sh
	@rm -f .test-results.xml
	$(BIN)/pytest --cov=eventkit --cov-branch --cov-report=term --junitxml=.test-results.xml
	$(BIN)/python scripts/check_no_skips.py .test-results.xml

demo: venv ## Run the example worker on an embedded Tansu broker and report what happened
	$(BIN)/python -m examples.demo

bench: venv ## Run the pipeline benchmark
	$(BIN)/python benchmarks/bench_pipeline.py

bench-quick: venv ## The in-memory chain benchmark; fails when over budget by more than 20%
	$(BIN)/python benchmarks/bench_pipeline.py --records 30000 --repeats 5 --check

bench-kafka: venv ## Consume 200k envelopes over Kafka (embedded Tansu): eventkit vs raw aiokafka
	$(BIN)/python benchmarks/bench_kafka.py

bench-kafka-redis: venv ## bench-kafka plus idempotency on an embedded Redis: eventkit+redis vs a hand-written claim loop, 5 repeats
	scripts/ensure_system_deps.sh
	$(BIN)/python benchmarks/bench_kafka.py --idempotency --repeats 5

clean: ## Remove the venv, caches, coverage and test reports
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis htmlcov build dist
	rm -f .coverage .coverage.* coverage.xml .test-results.xml
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -maxdepth 2 -name '*.egg-info' -type d -prune -exec rm -rf {} +
