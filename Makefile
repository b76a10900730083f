# The two commands of the README:
#   make reproduce   the main job: every table and figure, quick mode, on the shipped testbed (runs/quick/)
#   make test        the notebook tests (nbdev_test) and the test suite (pytest) without its slow tier
#   make test-all    the same, then the slow tier (pytest -m slow: full notebook runs, kill-and-resume, Ray, real-model CLI)
# Both create the environment in .venv first when it is missing (see tools/setup-env.sh, LOP_TORCH for CUDA).
SHELL := /bin/bash
VENV ?= .venv
export LOP_VENV := $(VENV)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: env reproduce test test-all test-nbs test-py test-slow export readme
env:
	@bash tools/setup-env.sh

reproduce: env
	$(VENV)/bin/lop reproduce --quick

test: env test-nbs test-py

test-nbs: env
	OMP_NUM_THREADS=1 $(VENV)/bin/nbdev_test --path nbs --n_workers 2 2>&1 | grep -v "pkg_resources" ; test $${PIPESTATUS[0]} -eq 0

test-py: env
	$(VENV)/bin/python -m pytest -q -m "not slow" --durations=15 tests

test-slow: env
	$(VENV)/bin/python -m pytest -q -m slow --durations=15 tests

test-all: test test-slow

# `make export` (every notebook) or `make export NB=path.ipynb`; fails when the export fails
export: env
	$(VENV)/bin/nbdev_export $(if $(NB),--path $(NB)) 2>&1 | grep -v "pkg_resources" ; test $${PIPESTATUS[0]} -eq 0

# `make readme`: README.md from nbs/index.ipynb, executed now so that its tables are read from results/ (tools/readme.py:
# nbdev_readme would need quarto); fails when the notebook fails. `python tools/readme.py --check` only compares.
readme: env
	OMP_NUM_THREADS=1 $(VENV)/bin/python tools/readme.py 2>&1 | grep -v "pkg_resources" ; test $${PIPESTATUS[0]} -eq 0
