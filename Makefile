# hookd: every target sets up what it needs, starting from Python 3.11 and make alone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run` serves the dashboard here; HOOKD_HTTP_LISTEN=... make run moves it.
HOOKD_HTTP_LISTEN ?= 127.0.0.1:8080

.PHONY: setup system-packages run cluster test lint proto proto-check bench bench-full clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e clients/python -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Regenerate the protobuf code committed under clients/python/hookd/v1.
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

## Start the service on its embedded SQLite default (var/hookd.db): gRPC on 127.0.0.1:50051, the
## dashboard and the HTTP API on http://127.0.0.1:8080.
run: proto
	$(BIN)/hookd serve --http-listen $(HOOKD_HTTP_LISTEN) $(ARGS)

## A throwaway local PostgreSQL and three nodes on 127.0.0.1:50051-50053; Ctrl-C stops them.
cluster: $(STAMP) system-packages
	$(BIN)/python scripts/cluster.py $(ARGS)

## Debian packages the tests need (PostgreSQL's binaries, Chromium), installed when missing.
system-packages:
	bash scripts/system-packages.sh

## Two worker processes, a test file each at a time: most of the suite's time is spent waiting
## on servers, receivers and leases, so two cores finish it in about half the time.
PYTEST_ARGS ?= -n 2 --dist loadfile
test: $(STAMP) system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy server/hookd engine/hookd clients/python/hookd/client tests scripts bench

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
