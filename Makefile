# Everything runs from .venv; `make setup` is idempotent and cheap the second time.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup run test lint bench train evaluate clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (idempotent)

run: setup  ## colorize the bundled sample archive, then report status and audit
	$(BIN)/colorize scan pipeline/samples -o manifests/demo.parquet --shard-size 4
	$(BIN)/colorize run jobs/demo.toml
	$(BIN)/colorize status out/demo
	$(BIN)/colorize audit out/demo

test: setup  ## run the test suite
	$(BIN)/pytest -q

lint: setup  ## ruff
	$(BIN)/ruff check pipeline tests

bench: setup  ## throughput benchmark; appends to BENCHMARKS.md
	$(BIN)/colorize bench --count 200 --width 1600 --height 1200 --append BENCHMARKS.md

clean:  ## remove outputs (keeps .venv)
	rm -rf out build *.egg-info
