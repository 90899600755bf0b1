# Two commands on a fresh machine:  `make run` (start the shop)  and  `make test` (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The suite runs on several xdist workers, each with its own databases (tests/conftest.py). Most tests
# wait on sockets, subprocesses and PostgreSQL, so more workers than cores pays; `make test TEST_WORKERS=0`
# runs it in one process. worksteal: an idle worker takes tests from a busy one's queue.
TEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

.PHONY: run test test-fast test-sqlite faults lint bench install clean lock

# Installs exactly what was tested: every package pinned with its hashes in requirements.lock
# (regenerate with `make lock` after changing dependencies in pyproject.toml), then the shop itself.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

lock:
	$(PY) -m venv .lock-venv && .lock-venv/bin/pip install --quiet pip-tools
	.lock-venv/bin/pip-compile --quiet --generate-hashes --extra dev --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements.lock pyproject.toml
	rm -rf .lock-venv

install: $(STAMP)

# Without BOT_TOKEN (environment or .env) this opens the console: chat with the shop in the terminal.
run: $(STAMP)
	$(BIN)/storefront run --console-if-no-token

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not faults"

faults: $(STAMP)
	$(PYTEST) -m faults

test-sqlite: $(STAMP)
	STOREFRONT_TEST_BACKENDS=sqlite $(PYTEST)

# The checks configured in pyproject.toml ([tool.ruff], [tool.mypy]). All three run, and the target
# fails if any of them found something, so one run shows everything there is to fix.
lint: $(STAMP)
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/ruff format --check . || status=1; \
	$(BIN)/mypy || status=1; \
	exit $$status

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) storefront.db storefront.db-*
