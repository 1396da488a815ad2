# One entry point for developers and CI. `make dev` starts the local stack; `make test` runs
# every check CI runs. The virtual environment is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev down test lint check-generated unit setup

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

dev: $(STAMP)
	$(BIN)/steward dev up

down: $(STAMP)
	$(BIN)/steward dev down

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/lint-imports

check-generated: $(STAMP)
	$(BIN)/steward crds --check
	$(BIN)/steward validate

unit: $(STAMP)
	$(BIN)/pytest -m "not kube and not rucio"

test: lint check-generated
	$(BIN)/python -m steward.testing.k8sbuild
	$(BIN)/pytest
