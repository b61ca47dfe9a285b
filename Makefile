# specrec: the two commands a newcomer needs are `make run` and `make test` (see README.md).
#
# Every target that needs Python first makes sure .venv exists and the project is installed in it.
# The install is keyed on a hash of pyproject.toml (a stamp file inside the venv), so a second run
# does not touch pip at all, and editing pyproject.toml reinstalls.
#
# torch is installed FIRST and pinned (TORCH_VERSION), so that pip never resolves the wide
# `torch>=2.2` range in pyproject.toml to a multi-GB CUDA build by accident. Users who want the
# small CPU wheel from the PyTorch index, or a CUDA build, set TORCH_INDEX_URL.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
TORCH_VERSION ?= 2.13.0
# Empty: pip's configured index (PyPI). E.g. https://download.pytorch.org/whl/cpu for the CPU wheel.
TORCH_INDEX_URL ?=
# Which extras to install into the venv: cpu = faiss-cpu (on a CUDA machine `make EXTRAS=gpu,dev`
# installs faiss-gpu instead; never both), dev = pytest, httpx, ruff, pyyaml, ...
EXTRAS ?= cpu,dev

# python3.11 if present, else python3 (checked to be >= 3.11 in the venv recipe).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)

VENV_PY := $(VENV)/bin/python
PYPROJECT_HASH := $(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-16)
STAMP := $(VENV)/.specrec-installed-$(PYPROJECT_HASH)-$(EXTRAS)-torch$(TORCH_VERSION)
TORCH_INDEX_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

.PHONY: help venv install run test lint format clean compose-tool browser-tool server-tools

help:
	@echo "make run      create .venv, install, build the default model if needed, start API + worker"
	@echo "make test     create .venv, install dev deps, ruff check + format check + pytest"
	@echo "make lint     ruff check, ruff format --check, deptry (every import declared),"
	@echo "              lint-imports (contract <- store, trainer <- worker, contract <- service;"
	@echo "              no torch, trainer or worker in service),"
	@echo "              mypy (contract, store, trainer, worker, service)"
	@echo "make format   ruff format and ruff check --fix"
	@echo "make clean    remove .venv, caches and build outputs (keeps ./var: data and models)"

# The interpreter inside the venv is the target: a half-created venv (no bin/python) is redone.
$(VENV_PY):
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: no python3.11 or python3 on PATH; install Python 3.11 (apt-get install python3.11 python3.11-venv)" >&2; \
	  exit 1; \
	fi
	@"$(PYTHON)" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
	  echo "error: $(PYTHON) is $$("$(PYTHON)" -V 2>&1); specrec needs Python >= 3.11" >&2; \
	  echo "       install it (apt-get install python3.11 python3.11-venv) or run: make PYTHON=/path/to/python3.11 ..." >&2; \
	  exit 1; }
	@echo ">> creating $(VENV) with $(PYTHON) ($$("$(PYTHON)" -V 2>&1))"
	@"$(PYTHON)" -m venv "$(VENV)" || { \
	  rm -rf "$(VENV)"; \
	  echo "error: '$(PYTHON) -m venv' failed. On Debian/Ubuntu the venv module is a separate package:" >&2; \
	  echo "       apt-get install python3.11-venv   (or python3-venv), then run make again" >&2; \
	  exit 1; }

venv: $(VENV_PY)

# torch first and pinned, then the project with its extras (editable: the tree is the code).
# Switching between the cpu and gpu extras removes the other faiss first: both in one venv
# break the `faiss` module they share.
comma := ,
OTHER_FAISS := $(if $(filter gpu,$(subst $(comma), ,$(EXTRAS))),faiss-cpu,faiss-gpu-cu12)
$(STAMP): | $(VENV_PY)
	@echo ">> installing torch==$(TORCH_VERSION), then specrec[$(EXTRAS)] into $(VENV)"
	"$(VENV_PY)" -m pip install --quiet $(TORCH_INDEX_ARGS) "torch==$(TORCH_VERSION)"
	"$(VENV_PY)" -m pip uninstall --quiet -y $(OTHER_FAISS) 2>/dev/null || true
	"$(VENV_PY)" -m pip install --quiet -e ".[$(EXTRAS)]"
	@rm -f "$(VENV)"/.specrec-installed-*
	@touch "$@"

install: $(STAMP)

run: install
	PATH="$(abspath $(VENV))/bin:$$PATH" exec scripts/run.sh

# Debian's docker-compose (v1) is enough for `docker-compose config -q`, the static check of the
# compose files in tests/project. No Docker engine is needed or started.
compose-tool:
	@if command -v docker-compose >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo ">> installing Debian's docker-compose (static validation of the compose files)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; \
	else \
	  echo "note: docker-compose is missing; the compose-file checks need it:" >&2; \
	  echo "      sudo apt-get install --no-install-recommends docker-compose" >&2; \
	fi

# Debian's Chromium for the browser tests: tests/browser drive /usr/bin/chromium with Playwright
# (the dev extra). No browser build is downloaded; `playwright install` is never run.
browser-tool:
	@if command -v chromium >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo ">> installing Debian's chromium (headless browser tests of the operator page and /docs)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	else \
	  echo "note: chromium is missing; the browser tests need it:" >&2; \
	  echo "      sudo apt-get install --no-install-recommends chromium fonts-dejavu-core" >&2; \
	fi

# Debian's servers the multi-process tests run for real, each installed if missing: postgresql
# (tests/postgres.py starts a private cluster on 127.0.0.1 for the session and stops it after;
# no system service is used), wrk (load on two API replicas during a swap), nginx (`nginx -t`
# of deploy/nginx.conf).
server-tools:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -z "$$missing" ]; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo ">> installing Debian's$$missing (the multi-process tests: PostgreSQL store, replicas, proxy)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "note: missing for the multi-process tests:$$missing" >&2; \
	  echo "      sudo apt-get install --no-install-recommends$$missing" >&2; \
	fi

lint: install
	"$(VENV)/bin/ruff" check .
	"$(VENV)/bin/ruff" format --check .
	"$(VENV)/bin/deptry" .
	"$(VENV)/bin/lint-imports"
	"$(VENV)/bin/mypy"

format: install
	"$(VENV)/bin/ruff" format .
	"$(VENV)/bin/ruff" check --fix .

# The 25 slowest tests are listed at the end of every run (CI's log shows what to trim).
PYTEST_ARGS ?= --durations=25

# pytest exit code 5 ("no tests collected") is a FAILURE here: a green run that tested nothing
# would hide a broken suite (wrong testpaths, import-mode, a deselect typo).
test: install compose-tool browser-tool server-tools lint
	@set +e; "$(VENV_PY)" -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests; the suite must not be empty" >&2; fi; \
	exit $$rc

clean:
	rm -rf "$(VENV)" .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './var/*' -exec rm -rf {} +
