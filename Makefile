# Two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP_CORE := $(VENV)/.installed-core
STAMP_ALL  := $(VENV)/.installed-all
PYTEST_ARGS ?=

.PHONY: demo test airflow-demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP_CORE): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(STAMP_ALL): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[airflow,test]"
	touch $@ $(STAMP_CORE)

demo: $(STAMP_CORE)
	$(BIN)/recon demo --out out/demo

test: $(STAMP_ALL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

airflow-demo: $(STAMP_ALL)
	$(BIN)/python -m recon.airflow_demo --config sample_files/recon.yml --date 2026-06-05

bench: $(STAMP_ALL)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf out .pytest_cache
