# Two commands on a fresh machine:
#   make run   - set up .venv if needed, then run every notebook in order through papermill
#   make test  - set up .venv if needed, then the whole test suite (unit tests + every notebook under nbval)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Notebooks under `make test` run with a smaller budget (each notebook reads CAGNET_BUDGET).
TEST_BUDGET ?= smoke

.PHONY: run test setup unit unit-other-kernels notebooks-test clean-runs

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
	$(BIN)/python -m pytest -q --durations=10 tests

# The tests with float tolerances, once more on other kernels than this CPU's best (MKL, oneDNN
# and ATen restricted to SSE4): other code paths round differently, as other users' CPUs do
# (AVX2, AVX-512, AMX), so a tolerance that holds on one machine only fails here, not there.
NUMERIC_TESTS := tests/test_losses.py tests/test_metrics.py tests/test_train_optim.py tests/test_transforms.py \
	tests/test_train_steps.py tests/test_analysis.py tests/test_original_equivalence.py \
	tests/test_original_v2_equivalence.py tests/test_patches.py tests/test_convert.py tests/test_evaluate.py \
	tests/test_diagnostics.py tests/test_premise.py
OTHER_KERNELS := MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default

unit-other-kernels: $(STAMP)
	$(OTHER_KERNELS) $(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" -k "not perturbed_architecture" $(NUMERIC_TESTS)

notebooks-test: $(STAMP)
	CAGNET_BUDGET=$(TEST_BUDGET) $(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider notebooks

test: unit unit-other-kernels notebooks-test

clean-runs:
	rm -rf runs
