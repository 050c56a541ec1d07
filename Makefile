# The two commands of the README, plus the checks CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: quickstart test test-fast lint typecheck bench bench-full clean browser

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

# The browser tests drive Debian's chromium; install it where missing and apt-get may (root, or
# sudo without a password). Where it cannot be installed those tests skip and say why.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install \
	      -y -qq --no-install-recommends chromium >/dev/null) \
	  || echo "chromium could not be installed: the browser tests will skip"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy dmlopt

# Each benchmark prints one JSON line (train_loop: one per device): its figure, a baseline measured in the same run, the
# ratio. `make bench` takes a few minutes (--quick sizes); `make bench-full` the sizes the
# README quotes (about half an hour on 2 cores).
BENCHMARKS := retrieval_scores train_loop data_pipeline train_throughput search_efficiency \
              pruning_simulation workers_throughput

bench: $(STAMP)
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py --quick || exit 1; done

bench-full: $(STAMP)
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
