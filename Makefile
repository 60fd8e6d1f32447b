# Switchboard: `make run` to serve locally, `make test` to run the whole suite on SQLite and PostgreSQL.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/switchboard_test
export TEST_DATABASE_URL

.PHONY: run serve serve-deps test test-sqlite test-postgres lint install install-dev db-upgrade clean bench bench-deps e2e-deps load

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Set up and serve on http://127.0.0.1:5000 with SQLite at instance/switchboard.db.
run: install
	SWITCHBOARD_ENV=development SESSION_COOKIE_SECURE=false $(BIN)/flask --app wsgi db upgrade
	SWITCHBOARD_ENV=development SESSION_COOKIE_SECURE=false $(BIN)/flask --app wsgi run --host 127.0.0.1 --port 5000

## The production recipe, locally: nginx (Debian's) buffering in front of gunicorn's sync workers, on
## http://127.0.0.1:${PORT:-8000}; the same environment as production (SECRET_KEY, ENCRYPTION_KEYS,
## DATABASE_URL ...: it refuses to start without them). Migrate first: flask --app wsgi db upgrade.
serve: install serve-deps
	$(BIN)/python deploy/serve.py

serve-deps:
	@test -x /usr/sbin/nginx || command -v nginx >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)

## The whole suite, twice: SQLite, then PostgreSQL. Never skips PostgreSQL silently.
test: install-dev e2e-deps serve-deps
	$(BIN)/python tests/support/check_postgres.py
	@echo "=== pytest on SQLite ==="
	TEST_DATABASE_URL=sqlite $(BIN)/python -m pytest $(PYTEST_ARGS)
	@echo "=== pytest on PostgreSQL ($(TEST_DATABASE_URL)) ==="
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-sqlite: install-dev
	TEST_DATABASE_URL=sqlite $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: install-dev e2e-deps serve-deps
	$(BIN)/python tests/support/check_postgres.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Browser tests (tests/e2e, PostgreSQL half): Debian's chromium and axe-core, installed only when missing.
E2E_AXE := tests/e2e/node_modules/axe-core/axe.min.js
e2e-deps: $(E2E_AXE)
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

$(E2E_AXE): tests/e2e/package.json tests/e2e/package-lock.json
	cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: install-dev
	$(BIN)/ruff check .

## HTTP benchmarks (wrk, gunicorn, PostgreSQL) into bench/results.md; not part of `make test`.
bench-deps:
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk)

bench: install bench-deps
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## Load test: Locust (its own venv, bench/requirements.txt) against gunicorn with 4 workers on
## PostgreSQL for 2 minutes; prints req/s, p50/p95/p99 and the error rate. Not part of `make test`.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements.txt
	touch $@

load: install $(BENCH_VENV)/.installed
	$(BIN)/python bench/locustfile.py --locust $(BENCH_VENV)/bin/locust $(LOAD_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
