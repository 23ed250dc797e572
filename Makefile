# Two commands for a newcomer: `make demo` runs the main job, `make test` runs the tests.
# Each creates (or reuses) a virtual environment in .venv and installs what it needs into it:
# the package with its core (inference), train (torch, to export backbones) and dev extras.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
OUT ?= out/demo

.PHONY: demo test lint colcon clean help

help:
	@echo "make demo   run the main job (evaluation of the models on the real datasets)"
	@echo "make test   run the test suite"
	@echo "make lint   ruff over src/ tests/ benchmarks/"

$(STAMP): setup.py setup.cfg
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[core,train,dev]"
	@touch $@

demo: $(STAMP)
	$(BIN)/vad-inspection demo --data-root $(DATA) --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) out build install log .pytest_cache src/*.egg-info
