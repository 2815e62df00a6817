# Sketchsearch: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test browser venv clean-var

# The venv is rebuilt only when a requirements file changes (stamp files), so a second `make run` is quick.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime-stamp: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-stamp: requirements.txt requirements-dev.txt requirements-nodeps.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@ $(VENV)/.runtime-stamp

venv: $(VENV)/.runtime-stamp

# make run: install, migrate, load the demo collection (and, once built, its features and index), serve.
run: $(VENV)/.runtime-stamp
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py setup_demo
	@echo "Sketchsearch is serving on http://$(HOST):$(PORT)/  (admin: http://$(HOST):$(PORT)/admin/, Ctrl+C stops)"
	@echo "No admin account yet? In another terminal: $(PY) manage.py createsuperuser"
	SKETCHSEARCH_WARM_UP_ON_START=1 $(PY) manage.py runserver --noreload $(HOST):$(PORT)

# Debian's chromium for the real-browser test (Playwright drives it; `playwright install` cannot download here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "chromium could not be installed: the browser test will be skipped"; }

# make test: lint, format check, type check, then the whole pytest suite.
test: $(VENV)/.dev-stamp browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/pytest

clean-var:
	rm -rf var/
