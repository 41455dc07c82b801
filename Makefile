# Riposte: `make run` starts the local stack, `make test` runs the tests. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-quota bench-replay scale-test chaos lint typecheck check clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Riposte needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/riposte up

# The browser tests drive Debian's headless Chromium: installed first when absent (see the script).
test: $(STAMP)
	@sh tests/install-chromium.sh
	$(BIN)/python -m pytest

# The local stack's latency and burst against a raw baseline, then a storm under the vendors'
# documented quotas (bench-quota alone: about 15 minutes on 2 cores), then the replay of 10,000
# alerts.
bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/quota.py
	$(BIN)/python bench/replay.py

# The simulated replay of 10,000 alerts (riposte replay): about a minute.
bench-replay: $(STAMP)
	$(BIN)/python bench/replay.py

bench-quota: $(STAMP)
	$(BIN)/python bench/quota.py

# PostgreSQL, Redis, two Prefect API servers, two intakes; 500 alerts with one worker, 500 with
# two, then 1,000 with two of which one is killed mid-burst (about 7 minutes on 2 cores).
scale-test: $(STAMP)
	$(BIN)/python scale/run.py

# Failure scenarios (ITSM down, Prefect restart, chat down, write-back refused, SIGKILL, retry).
chaos: $(STAMP)
	$(BIN)/python chaos/run.py

lint: $(STAMP)
	$(BIN)/ruff check riposte tests bench scale chaos
	$(BIN)/ruff format --check riposte tests bench scale chaos

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .riposte .pytest_cache .mypy_cache .ruff_cache
