# Two commands for a newcomer: `make demo` runs the main job, `make test` runs the tests.
# Each creates (or reuses) a virtual environment in .venv and installs what it needs into it:
# the package with its core (inference), train (torch, to export backbones) and dev extras.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
OUT ?= out/demo

.PHONY: demo eval test browser lint colcon clean help

help:
	@echo "make demo     run the main job: scenarios through the robot's graph, one HTML report"
	@echo "make eval     the evaluation job: every model under three settings on the real datasets"
	@echo "make test     run the test suite"
	@echo "make lint     ruff over src/ tests/ benchmarks/"
	@echo "make browser  headless Chromium for the report's browser tests (apt-get, as root)"

$(STAMP): setup.py setup.cfg
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[core,train,dev]"
	@touch $@

demo: $(STAMP)
	$(BIN)/vad-inspection demo --data-root $(DATA) --out $(OUT)

eval: $(STAMP)
	$(BIN)/vad-inspection eval --data-root $(DATA) --out out/eval

# The replay report's tests open the page in a real browser, headless Chromium, which is not on
# PyPI but Debian's `chromium` package: installed here when missing and we are root (a fresh CI
# box), about a minute. Anyone else gets a note; a failed install only warns. Either way those
# tests skip, saying why, and the rest of the suite runs.
CHROMIUM ?= /usr/bin/chromium

browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (Debian package) for the browser tests, about a minute"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null; } \
	  || echo "warning: installing chromium failed; the browser tests will be skipped"; \
	else \
	  echo "note: no $(CHROMIUM) (install Debian's chromium as root); the browser tests will be skipped"; \
	fi

test: $(STAMP) browser
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) out build install log .pytest_cache src/*.egg-info
