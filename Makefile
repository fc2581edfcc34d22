# ASM Console: `make run` serves the console, `make test` runs the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# The test settings for PostgreSQL and Redis on this machine (what CI uses).
PG_URL ?= postgres://postgres@127.0.0.1:5432/asm_console
REDIS_URL ?= redis://127.0.0.1:6379/1

.PHONY: run test test-postgres lint browser clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

## run: the console on its embedded default (SQLite, in-process worker) at http://127.0.0.1:8000
run: $(STAMP)
	$(BIN)/python manage.py serve

## browser: Debian's chromium for the browser tests
browser:
	scripts/install-chromium

## test: the whole test suite, browser tests included
test: $(STAMP) browser
	$(BIN)/pytest

## test-postgres: the whole suite against PostgreSQL and Redis on 127.0.0.1
test-postgres: $(STAMP) browser
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) ASM_HTTPS=false \
	SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(64))') \
	$(BIN)/pytest

## lint: ruff (with its security rules), formatting, mypy, migrations in sync
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/python manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache staticfiles
