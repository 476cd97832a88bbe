# Two commands on a fresh machine:
#   make run   - set up .venv if needed, then run every notebook through papermill
#   make test  - set up .venv if needed, then run the whole test suite (unit tests + notebooks)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup unit notebooks-test benchmark clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[notebooks,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m cagnet.notebook_runner --out runs/notebooks notebooks/*.ipynb

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests

notebooks-test: $(STAMP)
	CAGNET_BUDGET=smoke MPLBACKEND=Agg $(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider notebooks

test: $(STAMP)
	$(BIN)/python -m pytest -q tests
	CAGNET_BUDGET=smoke MPLBACKEND=Agg $(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider notebooks

clean-runs:
	rm -rf runs
