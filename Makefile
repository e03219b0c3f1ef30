# Two entry points: `make demo` (the main job on bundled data) and `make test`.
# Each creates the virtual environment $(VENV) from the committed uv.lock when it is missing or stale
# (installing uv itself from the package registry first if this machine has none).
#   PY_VERSION=3.11 make test     another supported Python (3.11, 3.12, 3.13)
#   VENV=.venv-3.11               a separate environment per Python
#   TEST_JOBS=1 make test         the tests in one process (default: 2 worker processes)
#   TFDP_RUN_SLOW=1 make test     the slow tests too (scripts, subprocesses; CI runs them)
PY_VERSION ?= 3.13
VENV ?= .venv
# pytest-xdist workers of `make test`; a test file stays on one worker (its shared fixtures).
TEST_JOBS ?= 2
# A working interpreter of that version: on PATH, or installed by pyenv (its shims may not resolve).
PYTHON ?= $(shell for p in python$(PY_VERSION) $(wildcard $(HOME)/.pyenv/versions/$(PY_VERSION).*/bin/python$(PY_VERSION)) /usr/local/bin/python$(PY_VERSION) /usr/bin/python$(PY_VERSION); do "$$p" -c 'import sys' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
# uv: on PATH, else the copy `pip install uv` puts beside a Python.
BOOT_PYTHON := $(shell command -v python3 || command -v python)
UV ?= $(shell command -v uv || echo "$(BOOT_PYTHON) -m uv")
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfdp-installed

export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-all install benchmark clean uv docs results-page peers

install: $(STAMP)

uv:
	@$(UV) --version >/dev/null 2>&1 || $(BOOT_PYTHON) -m pip install --quiet --disable-pip-version-check 'uv>=0.13,<0.14'

$(STAMP): pyproject.toml uv.lock
	@test -n "$(PYTHON)" || { echo "No Python $(PY_VERSION) found: install it, or pass PYTHON=/path/to/python3.X (3.11-3.13)"; exit 1; }
	@$(MAKE) --no-print-directory uv
	$(UV) sync --locked --quiet --extra test --extra docs --extra hub --python "$(PYTHON)"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/compare.py

test: $(STAMP)
	$(PY) -m pytest -q -n $(if $(filter 1,$(TEST_JOBS)),0,$(TEST_JOBS)) --dist loadfile tests

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py

# The Opacus peer of `make benchmark` (a manual measurement; CI does not run it): PyTorch and
# Opacus in their own environment $(PEERS_VENV), never in $(VENV) or uv.lock, then
# peers/opacus_zoo.py over the same zoo (writes results/opacus_peer.json). pip takes torch's
# CPU build (2.13.0+cpu) where its configuration offers one, as this machine's does; from the
# registry alone it takes the default Linux wheel, which also pulls CUDA libraries.
#   PEERS_ARGS=--models=tutorial_cnn,mlp make peers
PEERS_VENV ?= .venv-opacus
PEERS_PY_VERSION ?= 3.11
PEERS_PYTHON ?= $(shell for p in python$(PEERS_PY_VERSION) $(wildcard $(HOME)/.pyenv/versions/$(PEERS_PY_VERSION).*/bin/python$(PEERS_PY_VERSION)) /usr/local/bin/python$(PEERS_PY_VERSION) /usr/bin/python$(PEERS_PY_VERSION); do "$$p" -c 'import sys' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
PEERS_REQUIREMENTS ?= torch==2.13.0 opacus==1.6.0
PEERS_STAMP := $(PEERS_VENV)/.peers-installed

$(PEERS_STAMP): Makefile
	@test -n "$(PEERS_PYTHON)" || { echo "No Python $(PEERS_PY_VERSION) found: install it, or pass PEERS_PYTHON=/path/to/python3.X"; exit 1; }
	"$(PEERS_PYTHON)" -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet $(PEERS_REQUIREMENTS)
	@touch $(PEERS_STAMP)

peers: $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python peers/opacus_zoo.py $(PEERS_ARGS)

# The documentation site as static HTML in site/ (offline; warnings are errors), and the results
# page regenerated from the JSON that `make demo` and `make benchmark` write (results/).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

results-page: $(STAMP)
	$(PY) tools/results_page.py

clean:
	rm -rf $(VENV) .venv-* build *.egg-info .pytest_cache site
