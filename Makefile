# The two commands of the README, plus the checks CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: quickstart test test-fast lint typecheck bench clean

# The venv is rebuilt when the package's dependencies change.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The quickstart starts afresh each time: its test set may be scored only once per study.
quickstart: $(STAMP)
	rm -rf runs/quickstart
	$(BIN)/dmlopt run studies/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy dmlopt

bench: $(STAMP)
	$(BIN)/python benchmarks/retrieval_scores.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
