# Two entry points: `make demo` (the main job on bundled data) and `make test`.
# Each creates .venv/ with Python 3.11 when it is missing and installs the project into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfdp-installed

.PHONY: demo test install benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "tfdp needs Python 3.11 (TensorFlow 2.15 and tensorflow-privacy 0.8.12); set PYTHON=/path/to/python3.11"'
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/compare.py

test: $(STAMP)
	$(PY) -m pytest -q tests

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
