# Developer and CI entry points. `make test` installs what it needs, then runs every check.
#
#   make venv             .venv with the package (editable) and the locked test/docs/demo tools
#   make lock             regenerate requirements/dev.txt (the lock) with the newest allowed versions
#   make deps             redis-server and redis-cli, nginx, Node packages of tests/js, Chromium (apt/npm, when missing)
#   make lint             ruff check + ruff format --check
#   make style            ruff format + ruff check --fix (rewrites files)
#   make types            mypy (strict on stomp_cluster/, see setup.cfg)
#   make checkmigrations  fail if a model change has no migration
#   make test             all of the above and the docs, then pytest with coverage and its report
#   make test-fast        pytest without cluster, browser and slow tests
#   make fuzz             a long fuzzing run of one STOMP session (FUZZ_EXAMPLES=2000)
#   make test-latest      make test in .venv-latest, with the newest versions setup.cfg allows
#   make demo             migrate, demo users, then the demo cluster
#   make docs             Sphinx HTML, warnings are errors
#   make bench            benchmarks W1–W4 on every stack (BENCH_ARGS="--quick" for a smoke run)
#   make dist             sdist and wheel into dist/ (python -m build), checked by twine

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JS_DIR := tests/js
CHROMIUM ?= /usr/bin/chromium
PYTEST_ARGS ?=
# 1 also measures the daphne/uvicorn node processes (coverage's startup hook). Off by
# default: with it on, the combined report lost the test process's own data here.
COVERAGE_SUBPROCESSES ?= 0

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv deps lint style types checkmigrations test test-fast test-latest lock demo docs dist clean

# -- environment -----------------------------------------------------------------------------

# The stamps live inside what they stand for, so deleting .venv or node_modules redoes it.
VENV_STAMP := $(VENV)/.stamp-installed
JS_STAMP := $(JS_DIR)/node_modules/.stamp-installed

venv: $(VENV_STAMP)

# The development environment is locked: requirements/dev.txt pins every package that `make
# test` installs (tools, docs, runtime dependencies, pip and setuptools themselves) to exact
# versions with hashes, so a new upstream release cannot change a run. The library's own
# install_requires keep their ranges; `make test-latest` runs against the newest of those.
LOCK := requirements/dev.txt
LOCK_PYTHON := 3.11
LOCK_ARGS ?= --upgrade
# LOCKED=0: install the newest versions setup.cfg's ranges allow (make test-latest).
LOCKED ?= 1

ifeq ($(LOCKED),1)
$(VENV_STAMP): setup.cfg pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	@# No build isolation: setuptools and wheel come from the lock, not from the index.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@
else
$(VENV_STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[test,docs,demo]' \
		-r requirements/tools.in
	@touch $@
endif

# Regenerate the lock on purpose: after changing a dependency in setup.cfg, or to move to
# new upstream releases (LOCK_ARGS="--upgrade-package redis" moves one package only).
lock: venv
	$(VENV)/bin/uv pip compile --quiet $(LOCK_ARGS) --generate-hashes \
		--python-version $(LOCK_PYTHON) --extra test --extra docs --extra demo \
		--custom-compile-command "make lock" \
		setup.cfg requirements/tools.in -o $(LOCK)

# apt-get update runs only when a package is missing, and then once. nginx is for
# tests/cluster/test_nginx.py, which runs an instance of its own on a free loopback port and
# never uses the system's service. (Debian's package starts that service on port 80 where
# no /usr/sbin/policy-rc.d forbids it, as containers' do; `systemctl disable --now nginx`
# stops it if you do not want it.) nginx lives in /usr/sbin, outside a user's PATH.
deps: $(JS_STAMP)
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
	test -x $(CHROMIUM) || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# node may have just been installed: make sure the JS packages are there.
	@test -f $(JS_STAMP) || $(MAKE) --no-print-directory $(JS_STAMP)

$(JS_STAMP): $(JS_DIR)/package.json $(wildcard $(JS_DIR)/package-lock.json)
	@if ! command -v npm >/dev/null; then \
		echo "npm is missing: skipping $(JS_DIR) (the stompjs tests will be skipped)"; \
	elif [ -f $(JS_DIR)/package-lock.json ]; then \
		npm ci --prefix $(JS_DIR) --no-audit --no-fund --loglevel=error && touch $@; \
	else \
		npm install --prefix $(JS_DIR) --no-audit --no-fund --loglevel=error && touch $@; \
	fi

# -- checks ----------------------------------------------------------------------------------

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

style: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

types: venv
	$(VENV)/bin/mypy

checkmigrations: venv
	DJANGO_SETTINGS_MODULE=testproject.settings $(PY) manage.py makemigrations --check --dry-run

test: venv deps lint types checkmigrations docs
	@rm -f .coverage .coverage.*
	@status=0; \
	if [ "$(COVERAGE_SUBPROCESSES)" = 1 ]; then export COVERAGE_PROCESS_START="$(CURDIR)/setup.cfg"; fi; \
	$(PY) -m coverage run -m pytest $(PYTEST_ARGS) || status=$$?; \
	unset COVERAGE_PROCESS_START; \
	$(PY) -m coverage combine --quiet || true; \
	$(PY) -m coverage report || true; \
	exit $$status

# The whole of `make test` against the newest versions the ranges allow, in its own venv, so
# that an upstream release is met on purpose before `make lock` adopts it.
test-latest:
	rm -f .venv-latest/.stamp-installed
	$(MAKE) --no-print-directory test VENV=.venv-latest LOCKED=0

test-fast: venv
	$(PY) -m pytest -m "not cluster and not browser and not slow" $(PYTEST_ARGS)

# The fuzz test of tests/fuzz with its long budget: FUZZ_EXAMPLES random frame sequences
# (about 0.5 s each) rather than the few dozen derandomized ones `make test` runs. A
# failure prints the shortest sequence Hypothesis found, and its database (.hypothesis/)
# replays it first on the next run.
FUZZ_EXAMPLES ?= 2000

.PHONY: fuzz
fuzz: venv
	FUZZ_PROFILE=long FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -m fuzz $(PYTEST_ARGS)

# -- demo and docs ---------------------------------------------------------------------------

demo: venv
	DJANGO_SETTINGS_MODULE=testproject.settings $(PY) manage.py migrate --noinput
	DJANGO_SETTINGS_MODULE=testproject.settings $(PY) manage.py demo_users
	$(PY) -m testproject.demo

docs: venv
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

# -- distribution ----------------------------------------------------------------------------

# An sdist, and a wheel built from that sdist (so a file MANIFEST.in forgets is missing from
# both, not only from one), then `twine check --strict` on the two. No build isolation: the
# locked build, setuptools and wheel do it, so nothing is fetched from the index. dist/,
# build/ and the egg-info are removed first: a stale wheel in dist/ would be checked and
# installed with the new one, and stale files in build/ would end up in the wheel.
dist: venv
	rm -rf dist build stomp_cluster.egg-info
	$(PY) -m build --no-isolation --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# -- benchmarks ------------------------------------------------------------------------------

BENCH_ARGS ?=

.PHONY: bench
bench: venv
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends redis-server; }
	$(PY) -m pip install --quiet -r benchmarks/requirements.txt
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -f $(VENV_STAMP) $(JS_STAMP) .venv-latest/.stamp-installed
	rm -rf docs/_build .coverage .coverage.* htmlcov .mypy_cache .ruff_cache .pytest_cache
	rm -rf dist build *.egg-info
