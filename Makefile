# Two commands: `make report` and `make test` (both set up .venv when needed).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= report
# every transitive dependency pinned: requirements.lock (runtime) and requirements-dev.lock (runtime + dev tools)
LOCK ?= requirements-dev.lock
COMPILE := $(BIN)/pip-compile -q --allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url --no-emit-trusted-host

.PHONY: install lock report test check-sync nbtest pytest lab export clean-runs

$(STAMP): $(LOCK) setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# re-resolve the locks from requirements*.in with pip-tools (pip, so torch comes from this machine's wheels);
# `make lock COMPILE_ARGS=--upgrade` moves every pin to the newest release
lock: $(STAMP)
	$(COMPILE) $(COMPILE_ARGS) -o requirements.lock requirements.in
	$(COMPILE) $(COMPILE_ARGS) -o requirements-dev.lock requirements-dev.in

export: $(STAMP)
	$(BIN)/nbdev_export

report: $(STAMP)
	$(BIN)/report --profile $(PROFILE)

# notebooks and package in sync: nbdev_clean/nbdev_export must not change tracked files
check-sync: $(STAMP)
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export
	@if [ -n "$$(git status --porcelain -- nbs ablation_harness)" ]; then \
	  echo "nbdev_clean/nbdev_export changed files: commit the clean notebooks and the exported package"; \
	  git status --porcelain -- nbs ablation_harness; exit 1; fi

# each notebook in a fresh process, two at a time: a notebook's export cells re-run the registry decorators with
# the notebook's own classes, and nbdev_test's reused worker processes would hand those to the next notebook;
# folders holding a .notest file (nbs/experiments: papermill templates, run by tests/test_experiments.py) are skipped
nbtest: $(STAMP)
	$(BIN)/python -c "from nbdev.doclinks import nbglob; print(*sorted(str(p) for p in nbglob(as_path=True) \
	  if not (p.parent / '.notest').exists()), sep='\n')" \
	  | xargs -P 2 -I{} $(BIN)/nbdev_test --path {}

# pytest exit code 5 means no tests were collected: that is a failure here too
pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests

test: check-sync nbtest pytest

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=nbs
