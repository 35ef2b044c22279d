# alert-router: `make run` serves routes.yaml in --dry-run; `make test` runs checks and the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.installed-run-stamp

.PHONY: help install run test image-test check fmt golden bench deps clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV) || { rm -rf $(VENV); echo 'Debian/Ubuntu: apt-get install python3-venv' >&2; exit 1; }
	$(VENV)/bin/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml setup.py | $(PY)
	$(VENV)/bin/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml setup.py | $(PY)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

install: $(RUN_STAMP) ## install the package (editable, without the test tools) into .venv

run: $(RUN_STAMP) ## install the package, then serve routes.yaml on SQLite in --dry-run (notifications go to the log)
	$(VENV)/bin/alert-router serve --config routes.yaml --dry-run

test: check ## install, run the checks, then the whole test suite (its temp files in one folder, removed after)
	@tmp=$$(mktemp -d -t alert-router-tests.XXXXXX) && TMPDIR=$$tmp $(PY) -m pytest -p no:cacheprovider; \
	rc=$$?; rm -rf "$$tmp"; exit $$rc

image-test: $(STAMP) ## build the image from the Dockerfile and run it with podman (root; apt-get install podman buildah mmdebstrap runc; ~3 min)
	$(PY) -m pytest -m image tests/test_package.py

check: $(STAMP) ## ruff format --check, ruff check, mypy --strict
	$(VENV)/bin/ruff format --check router tests setup.py
	$(VENV)/bin/ruff check router tests setup.py
	$(VENV)/bin/mypy

fmt: $(STAMP) ## format and autofix
	$(VENV)/bin/ruff format router tests setup.py
	$(VENV)/bin/ruff check --fix router tests setup.py

golden: $(STAMP) ## rewrite tests/golden/ from the current templates (review the diff like code)
	UPDATE_GOLDEN=1 $(PY) -m pytest tests/test_render.py -q

bench: $(STAMP) ## run the benchmark (a few minutes; prints its figures)
	$(PY) bench/bench.py

deps: ## install the Debian packages the suite uses (Alertmanager + amtool, Prometheus + promtool, docker-compose, PostgreSQL, kubectl unless one is on PATH); needs root
	apt-get update -q && apt-get install -y -q --no-install-recommends prometheus-alertmanager prometheus docker-compose \
	  postgresql $$(command -v kubectl >/dev/null || echo kubernetes-client)
	@# The tests start a PostgreSQL server of their own (tests/postgres.py): stop the cluster Debian made.
	pg_lsclusters --no-header 2>/dev/null | awk '$$4 == "online" {print $$1, $$2}' | \
	  while read -r version cluster; do pg_ctlcluster --force "$$version" "$$cluster" stop; done

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
