# Each target bootstraps .venv on first use (Python 3.11+ as $(PYTHON)).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test lint typecheck unit sdl bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)  ## run the embedded default on http://127.0.0.1:8000/v1/graphql
	$(BIN)/jobql serve

test: lint typecheck  ## everything CI runs
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check jobql tests bench migrations scripts examples
	$(BIN)/ruff format --check jobql tests bench migrations scripts examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

sdl: $(STAMP)  ## rewrite the checked-in v1 SDL after a deliberate, non-breaking change
	$(BIN)/python scripts/export_sdl.py

bench: $(STAMP)
	$(BIN)/python bench/run.py --write

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
