# One entry point for developers and CI. `make dev` starts the local stack; `make test` runs
# every check CI runs. The virtual environment is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test worker processes (pytest-xdist), each with its own servers: the suite mostly waits on
# servers, so three overlap those waits on two cores without starving each other.
TEST_WORKERS ?= 3

.PHONY: dev down test lint check-generated manifests unit setup

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

# Every site with deploy/values-SITE.yaml has its manifests/SITE/ checked for drift.
SITES := $(patsubst deploy/values-%.yaml,%,$(wildcard deploy/values-*.yaml))

check-generated: $(STAMP)
	$(BIN)/steward crds --check
	$(BIN)/steward validate
	for site in $(SITES); do $(BIN)/steward render --site $$site --check || exit 1; done

manifests: $(STAMP)
	for site in $(SITES); do $(BIN)/steward render --site $$site || exit 1; done

unit: $(STAMP)
	$(BIN)/pytest -m "not kube and not rucio"

test: lint check-generated
	$(BIN)/python -m steward.testing.k8sbuild
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25
