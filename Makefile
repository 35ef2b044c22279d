# alert-router: `make run` serves routes.yaml in --dry-run; `make test` runs checks and the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: help run test check fmt golden bench deps clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP) ## install, then serve routes.yaml on SQLite in --dry-run (notifications go to the log)
	$(VENV)/bin/alert-router serve --config routes.yaml --dry-run

test: check ## install, run the checks, then the whole test suite
	$(PY) -m pytest

check: $(STAMP) ## ruff format --check, ruff check, mypy --strict
	$(VENV)/bin/ruff format --check router tests
	$(VENV)/bin/ruff check router tests
	$(VENV)/bin/mypy

fmt: $(STAMP) ## format and autofix
	$(VENV)/bin/ruff format router tests
	$(VENV)/bin/ruff check --fix router tests

golden: $(STAMP) ## rewrite tests/golden/ from the current templates (review the diff like code)
	UPDATE_GOLDEN=1 $(PY) -m pytest tests/test_render.py -q

bench: $(STAMP) ## run the benchmark (a few minutes; prints its figures)
	$(PY) bench/bench.py

deps: ## install the Debian packages the suite uses (Alertmanager + amtool, promtool); needs root
	apt-get update -q && apt-get install -y -q --no-install-recommends prometheus-alertmanager prometheus

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
