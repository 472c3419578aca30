# UAR Report Node — developer entry points. `make demo` and `make test` set up what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: setup system-deps test test-fast lint demo viewer bench train-default package clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian tools the tests drive as real peers (dcmtk, Orthanc, dciodvfy) and Java for METEOR.
system-deps:
	bash scripts/install-system-deps.sh

test: setup system-deps
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: setup system-deps
	$(BIN)/python -m plugin.demo

# Orthanc + the node + OHIF on loopback with a demo study routed through the node (docs/viewer.md).
# VIEWER_ARGS, e.g. "--screenshot viewer.png" or "--port 8080".
viewer: setup system-deps
	$(BIN)/python -m plugin.viewer $(VIEWER_ARGS)

bench: setup system-deps
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/app_overhead.py
	$(BIN)/python benchmarks/node_ingest.py

train-default: setup
	bash scripts/train-default.sh

package: setup
	bash scripts/package-map.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
