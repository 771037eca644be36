# loyalty-stream developer entry points. Everything runs from the project's own .venv.
#   make test   - unit + integration tests; the fixtures start an embedded broker / redis-server as needed
#   make run    - the worker against Kafka/Redis if they answer, else an embedded dev stack

SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ENGINE := $(VENV)/.engine-compiled
ENGINE_SOURCES := $(filter-out %/__init__.py,$(wildcard loyalty_stream/engine/*.py))
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)

.PHONY: venv engine test run lint schemas up bench clean catalogue

venv: $(STAMP) $(ENGINE)

# Re-installs whenever pyproject.toml is newer than the stamp (new or changed dependencies).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP) $(ENGINE)

# The install compiles the engine with mypyc (setup.py); an edited engine source is compiled again here. Until
# then the engine runs its sources (loyalty_stream/engine/__init__.py checks), so a failed build only costs speed.
engine: $(ENGINE)
$(ENGINE): $(ENGINE_SOURCES) setup.py | $(STAMP)
	$(BIN)/python setup.py --quiet build_ext --inplace
	@touch $(ENGINE)

test: venv
	$(BIN)/pytest -q

run: venv
	$(BIN)/loyalty-stream dev

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy loyalty_stream

schemas: venv
	$(BIN)/loyalty-stream schemas export

up:
	docker compose up

bench: venv
	$(BIN)/python -m bench

# topics/catalogue.yaml is the source of truth; the package ships a byte-identical copy (a test checks it).
catalogue:
	cp topics/catalogue.yaml loyalty_stream/stream/catalogue.yaml

clean:
	rm -f loyalty_stream/engine/compiled.json $(ENGINE)
	find loyalty_stream -name "*.so" -delete
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
