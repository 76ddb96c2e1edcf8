# Template-level tasks. The generated project has its own Makefile.
#
#   make test   install the dev tools into .venv and run the template test suite
#   make run    bake the template with its defaults and run the demo service
#   make lock   regenerate the generated project's lock files (scripts/lock.py);
#               LOCK_ARGS=--upgrade moves every pin to the newest allowed

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
RUN_DIR ?= build/demo
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: test run lock venv nginx

test: venv nginx
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

run: venv
	@case "$(RUN_DIR)" in ""|/|.|..) echo "refusing RUN_DIR='$(RUN_DIR)'" >&2; exit 1;; esac
	rm -rf -- "$(RUN_DIR)"
	mkdir -p -- "$(RUN_DIR)"
	$(VENV)/bin/cookiecutter --no-input --default-config --output-dir "$(RUN_DIR)" .
	project="$$(find "$(RUN_DIR)" -mindepth 1 -maxdepth 1 -type d)"; \
	test -d "$$project" || { echo "no project baked in $(RUN_DIR)" >&2; exit 1; }; \
	$(MAKE) -C "$$project" run HOST="$(HOST)" PORT="$(PORT)"

lock: venv
	$(VENV_PYTHON) scripts/lock.py $(LOCK_ARGS)

# Helpers.

venv:
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/uv || $(VENV)/bin/pip install --quiet uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV_PYTHON) -r requirements-dev.txt

# Later tests drive nginx; install it when we can, say so when we cannot.
nginx:
	@if command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing nginx"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y nginx || { apt-get update && apt-get install -y nginx; }; \
	else \
		echo "note: nginx is not installed and we are not root; skipping its install"; \
	fi
