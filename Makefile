# Entry points, each self-contained on a fresh machine:
#   make demo         create .venv, install what the demo needs, write and read back the demo dataset
#   make test         create .venv, install the test tools, lint, type-check, run the whole test
#                     suite and build the docs
#   make docs         build the documentation site into site/ (mkdocs build --strict)
#   make test-newest  run the suite on Debian trixie's Python 3.13 with the newest releases
#                     (root and debootstrap; the Debian root is cached in ~/.cache/shardedstore-newest)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per set of extras, so `make demo` then `make test` installs only what is missing.
DEMO_STAMP := $(VENV)/.installed-demo
DOCS_STAMP := $(VENV)/.installed-docs
TEST_STAMP := $(VENV)/.installed-test
SITE := site

.PHONY: demo test lint typecheck pytest docs test-newest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[table]"
	touch $@

$(DOCS_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,spark]"
	touch $@ $(DOCS_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/shardedstore demo demo-output

lint: $(TEST_STAMP)
	$(BIN)/ruff check shardedstore tests benchmarks
	$(BIN)/ruff format --check shardedstore tests benchmarks
	$(BIN)/lint-imports

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

pytest: $(TEST_STAMP)
	$(BIN)/python -m pytest

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(SITE)

test: lint typecheck pytest docs

test-newest:
	bash ci/test-newest.sh

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/config_scale.py
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/remote.py

clean:
	rm -rf $(VENV) demo-output $(SITE) .pytest_cache .mypy_cache .ruff_cache .hypothesis
