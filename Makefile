# Each target bootstraps .venv on first use (Python 3.11+ as $(PYTHON)).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

CLIENTS := tests/clients
CLIENTS_STAMP := $(CLIENTS)/node_modules/.package-lock.json

.PHONY: serve test lint typecheck unit sdl bench clean clients

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)  ## run the embedded default on http://127.0.0.1:8000/v1/graphql
	$(BIN)/jobql serve

test: lint typecheck clients  ## everything CI runs
	$(BIN)/pytest

# The JavaScript client tests' packages (npm ci from the checked-in lockfile); without npm
# those tests skip and say why (with CI=true they fail).
clients:
	@if [ ! -f $(CLIENTS)/package-lock.json ]; then :; \
	elif ! command -v npm >/dev/null; then echo "make: npm not found; the JavaScript client tests will skip"; \
	elif [ ! -f $(CLIENTS_STAMP) ] || [ $(CLIENTS)/package-lock.json -nt $(CLIENTS_STAMP) ]; then \
	  cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error; fi

lint: $(STAMP)
	$(BIN)/ruff check jobql tests bench migrations scripts examples
	$(BIN)/ruff format --check jobql tests bench migrations scripts examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

sdl: $(STAMP)  ## rewrite the checked-in v1 SDL and possible-types.json after a deliberate, non-breaking change
	$(BIN)/python scripts/export_sdl.py

bench: $(STAMP)
	$(BIN)/python bench/run.py --write

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(CLIENTS)/node_modules
