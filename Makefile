# The two commands the README promises: `make run` and `make test`. Each does
# all of its own set-up on a machine that has only Python 3.11+ and make.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/ingestd.yaml
# Most tests wait on sockets and subprocesses, so three workers pay off on two cores.
PYTEST_WORKERS ?= 3

.PHONY: all install run migrate test lint typecheck pytest services clean lock bench

all: test

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ingestd --config $(CONFIG) migrate
	exec $(BIN)/ingestd --config $(CONFIG) run

migrate: $(STAMP)
	$(BIN)/ingestd --config $(CONFIG) migrate

services:
	@scripts/ensure-postgres.sh
	@scripts/ensure-dovecot.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) services
	$(BIN)/pytest -n $(PYTEST_WORKERS)

test: lint typecheck pytest

# The benchmarks (a few minutes): figures and ratios printed, results in bench/results-*.json.
bench: $(STAMP) services
	$(BIN)/python -m bench.rules --profile never
	$(BIN)/python -m bench.sla

# Refresh the pinned versions after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^ingestd' > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
