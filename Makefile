# OneCard (一卡通) — developer entry points. `make run` and `make test` are all a newcomer needs.
#
#   make install   venv + `pip install -e '.[dev]'` + system packages + pyscard + console assets
#   make run       install, then start the platform on the embedded default config
#   make test      install, then lint, type checks, import contracts, pytest on SQLite and PostgreSQL
#   make lint      only the static checks (ruff, ruff format, mypy, import-linter)
#   make bench     install, then run every bench/bench_*.py and print its figures
#   make clean     remove caches, build output and the install stamp (keeps .venv)
#   make distclean clean + remove .venv

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
# This machine's pip config names local package folders that may be empty; pip warns once per
# package about each. Drop only those lines (pip's exit status still counts: pipefail).
PIP_FILTER := { grep -v -e 'is ignored: it is neither a file nor a directory' -e 'ext-modules. (in pyproject.toml) is experimental' || true; }

.PHONY: help install system assets run test lint bench clean distclean

help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

# A new venv gets a current pip first (the bundled one is old and noisy about this machine's
# package folders).
$(PY):
	@echo "==> creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"
	$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --disable-pip-version-check -q --upgrade pip 2>&1 | $(PIP_FILTER)

# Re-installs the Python packages only when pyproject.toml (or the install script) changed.
# The system step runs every time: it only asks dpkg and is silent when nothing is missing.
# System packages come first: pip builds pyscard (libpcsclite-dev) and the TAC accelerator
# (gcc, libssl-dev) from source.
$(STAMP): pyproject.toml scripts/install-system.sh src/onecard/keys/_tacbatch.c | $(PY)
	@bash scripts/install-system.sh --packages-only
	@echo "==> pip install -e '.[dev]' into $(VENV)"
	@$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]' 2>&1 | $(PIP_FILTER)
	@touch $@

system: $(STAMP)
	@bash scripts/install-system.sh $(VENV)

# Console assets: front-end libraries from the npm registry through frontend/package-lock.json
# (npm ci), copied into the package's static/vendor/ (git-ignored); and the compiled message
# catalogues (.mo, git-ignored) from the .po files. Both re-run only when their sources change.
VENDOR := src/onecard/web/static/vendor
TRANSLATIONS := src/onecard/web/translations
PO_FILES := $(wildcard $(TRANSLATIONS)/*/LC_MESSAGES/messages.po)
MO_FILES := $(PO_FILES:.po=.mo)

frontend/node_modules/.package-lock.json: frontend/package.json frontend/package-lock.json
	@echo "==> npm ci (frontend/package-lock.json)"
	cd frontend && npm ci --no-audit --no-fund --loglevel=error

$(VENDOR)/.stamp: frontend/node_modules/.package-lock.json
	@mkdir -p $(VENDOR)
	cp frontend/node_modules/chart.js/dist/chart.umd.min.js $(VENDOR)/chart.umd.min.js
	cp frontend/node_modules/chart.js/LICENSE.md $(VENDOR)/chart.js.LICENSE.md
	cp frontend/node_modules/qrcode-generator/qrcode.js $(VENDOR)/qrcode.js
	cp frontend/node_modules/socket.io-client/dist/socket.io.min.js $(VENDOR)/socket.io.min.js
	@touch $@

$(TRANSLATIONS)/%/LC_MESSAGES/messages.mo: $(TRANSLATIONS)/%/LC_MESSAGES/messages.po | $(STAMP)
	$(VENV)/bin/pybabel -q compile -f -d $(TRANSLATIONS) -l $*

assets: $(VENDOR)/.stamp $(MO_FILES)

install: system assets

run: install
	$(VENV)/bin/onecard run

test: install
	@bash scripts/run-tests.sh

lint: install
	@bash scripts/run-tests.sh --lint-only

bench: install
	@shopt -s nullglob; files=(bench/bench_*.py); \
	if (( $${#files[@]} == 0 )); then echo "no bench/bench_*.py yet"; exit 0; fi; \
	for f in "$${files[@]}"; do \
	    echo "==> $$f"; \
	    $(PY) "$$f"; \
	done

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .hypothesis \
	    test-artifacts $(STAMP)
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune \
	    -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
