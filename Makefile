# The two commands of the README, plus the checks CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: quickstart test test-fast lint typecheck bench bench-full clean

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

# Each benchmark prints one JSON line: its figure, a baseline measured in the same run, the
# ratio. `make bench` takes a few minutes (--quick sizes); `make bench-full` the sizes the
# README quotes (about half an hour on 2 cores).
BENCHMARKS := retrieval_scores train_loop data_pipeline train_throughput search_efficiency

bench: $(STAMP)
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py --quick || exit 1; done

bench-full: $(STAMP)
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
