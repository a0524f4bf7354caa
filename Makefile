# Two commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
DEMO_OUT ?= runs/demo

.PHONY: demo test docs install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when the package metadata changes.
$(VENV)/.install-cpu: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[cpu]'
	touch $@

$(VENV)/.install-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[cpu,test,torch,docs]'
	touch $@ $(VENV)/.install-cpu

install: $(VENV)/.install-cpu
install-test: $(VENV)/.install-test

demo: install
	$(BIN)/python examples/demo.py --out $(DEMO_OUT)

test: install-test
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs docs/_build
