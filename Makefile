# Every target bootstraps what it needs: a fresh clone needs only `make run` or `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV  := .venv
STAMP := $(VENV)/.installed
PY    := $(VENV)/bin/python

.PHONY: help run test bench check clean

help:
	@echo "make run    start the server on the local embedded default (http://localhost:8000)"
	@echo "make test   run the whole test suite (installs Chromium for the browser tests)"
	@echo "make bench  run the latency and capacity benchmarks (prints a table, writes bench/results/)"
	@echo "make check  ruff (lint and format) + mypy"

$(STAMP): pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/ai-operator serve $(ARGS)

test: $(STAMP)
	scripts/ensure-browser.sh
	$(PY) -m pytest -ra $(ARGS)

bench: $(STAMP)
	$(PY) -m bench $(ARGS)

check: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build src/*.egg-info
