# Template-level tasks. The generated project has its own Makefile.
#
#   make test   install the dev tools into .venv and run the template test suite
#   make run    bake the template with its defaults and run the demo service;
#               bakes again only when the template changed, keeping the demo's
#               virtualenv, instance/ (database, local broker) and .env
#   make lock   regenerate the generated project's lock files (scripts/lock.py);
#               LOCK_ARGS=--upgrade moves every pin to the newest allowed

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
RUN_DIR ?= build/demo
RUN_STAMP := $(RUN_DIR)/.baked
# Everything a bake reads: a change to any of them bakes the demo again.
TEMPLATE_SOURCES := cookiecutter.json template_answers.py $(wildcard hooks/*.py) \
	$(shell find '{{cookiecutter.project_slug}}' -type f -not -name '*.pyc')
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: test run lock venv system-packages

test: venv system-packages
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

run: $(RUN_STAMP)
	project="$$(find "$(RUN_DIR)" -mindepth 1 -maxdepth 1 -type d)"; \
	test -d "$$project" || { echo "no project baked in $(RUN_DIR)" >&2; exit 1; }; \
	$(MAKE) -C "$$project" run HOST="$(HOST)" PORT="$(PORT)"

# Bake beside the last demo, move its virtualenv, instance/ and .env into the
# new bake, then swap. Same path, so the virtualenv's scripts and editable
# install still point at the right place; a pyproject.toml or lock that did
# not change keeps its time, so the project's `make install` has nothing to do.
$(RUN_STAMP): $(TEMPLATE_SOURCES) | venv
	@case "$(RUN_DIR)" in ""|/|.|..) echo "refusing RUN_DIR='$(RUN_DIR)'" >&2; exit 1;; esac
	rm -rf -- "$(RUN_DIR).next"
	$(VENV)/bin/cookiecutter --no-input --default-config --output-dir "$(RUN_DIR).next" .
	@set -e; name="$$(ls "$(RUN_DIR).next")"; old="$(RUN_DIR)/$$name"; new="$(RUN_DIR).next/$$name"; \
	for kept in .venv instance .env; do \
		if [ -e "$$old/$$kept" ]; then mv -- "$$old/$$kept" "$$new/"; fi; \
	done; \
	for file in pyproject.toml requirements/requirements-dev.lock; do \
		if cmp -s "$$old/$$file" "$$new/$$file"; then touch -r "$$old/$$file" "$$new/$$file"; fi; \
	done; \
	rm -rf -- "$(RUN_DIR)"; mv -- "$(RUN_DIR).next" "$(RUN_DIR)"
	touch "$@"

lock: venv
	$(VENV_PYTHON) scripts/lock.py $(LOCK_ARGS)

# Helpers.

# The dev tools, and this repository's own tooling (template_tools/, which
# the tests, bench/ and scripts/lock.py import) installed editable.
venv:
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/uv || $(VENV)/bin/pip install --quiet uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV_PYTHON) -r requirements-dev.txt -e .

# Later tests drive nginx and Chromium (Debian's packages: a test tool's
# own browser download cannot work everywhere); install what is missing when
# we can, say so when we cannot.
system-packages:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends $$missing \
			|| { apt-get update && apt-get install -y --no-install-recommends $$missing; }; \
	else \
		echo "note:$$missing not installed and we are not root; skipping the install"; \
	fi
