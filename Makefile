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
	touch $@ $(VENV)/.install-cpu $(VENV)/.install-docs

$(VENV)/.install-docs: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[cpu,docs]'
	touch $@ $(VENV)/.install-cpu

install: $(VENV)/.install-cpu
install-test: $(VENV)/.install-test

demo: install
	$(BIN)/python examples/demo.py --out $(DEMO_OUT)

# pytest also runs every docstring example and builds the docs with -W
# (tests/test_docs.py), and runs each script of examples/ on tiny settings.
# One test process per logical CPU (pytest-xdist), each test file in one process (module
# fixtures build once), one OpenMP thread per process (tests/conftest.py). PYTEST_ARGS adds
# options: `make test PYTEST_ARGS='-n 0'` runs in one process, `-k NAME` picks tests.
PYTEST_ARGS ?=
test: install-test
	$(BIN)/python -m pytest -q -rs -n auto --dist loadfile $(PYTEST_ARGS)

# HTML documentation, warnings as errors, into docs/_build/html.
docs: $(VENV)/.install-docs
	$(BIN)/python -m sphinx -W --keep-going -b html -d docs/_build/doctrees docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) runs docs/_build
