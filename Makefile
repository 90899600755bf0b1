# Two commands on a fresh machine:  `make run` (start the shop)  and  `make test` (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-sqlite faults bench install clean lock

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

run: $(STAMP)
	$(BIN)/storefront run

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not faults"

faults: $(STAMP)
	$(BIN)/python -m pytest -q -m faults

test-sqlite: $(STAMP)
	STOREFRONT_TEST_BACKENDS=sqlite $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) storefront.db storefront.db-*
