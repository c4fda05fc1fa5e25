# nodepint: `make run` and `make test` create the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nodepint-installed
ARGS ?=

.PHONY: install run test test-slow lint format clean bench bench-quick

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job with its defaults; pass overrides as ARGS="problem=lorenz pint=random1d".
run: $(STAMP)
	$(BIN)/nodepint-run $(ARGS)

# The default suite: CPU only, smoke configs, no test marked slow.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -n 2 --dist load --durations=10

# Trains real models; tens of minutes on a 2-core CPU.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Benchmarks (scripts/bench.py): write bench.json and the generated section of BENCHMARKS.md.
# The full run takes tens of minutes on a 2-core CPU; bench-quick stays under 5 minutes.
bench: $(STAMP)
	PYTHONPATH=$(CURDIR)/src $(BIN)/python scripts/bench.py

bench-quick: $(STAMP)
	PYTHONPATH=$(CURDIR)/src $(BIN)/python scripts/bench.py --quick

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: $(STAMP)
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

clean:
	rm -rf $(VENV) runs multiruns .pytest_cache
