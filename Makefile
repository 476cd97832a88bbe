# Two commands on a fresh machine:
#   make run   - set up .venv if needed, then run every notebook in order through papermill
#   make test  - set up .venv if needed, then the whole test suite (unit tests + every notebook under nbval)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Notebooks under `make test` run with a smaller budget (each notebook reads CAGNET_BUDGET).
TEST_BUDGET ?= smoke

.PHONY: run test setup unit notebooks-test clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[notebooks,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	sh scripts/setup_browser.sh
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/run_notebooks.py --out runs/notebooks notebooks/*.ipynb

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests

notebooks-test: $(STAMP)
	CAGNET_BUDGET=$(TEST_BUDGET) $(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider notebooks

test: unit notebooks-test

clean-runs:
	rm -rf runs
