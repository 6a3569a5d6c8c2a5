# Two entry points that work on a fresh machine with Python >= 3.10 and access to PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

# The stamp files record which extras are installed, so repeated runs skip pip.
$(VENV)/.stamp-base:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.stamp-all: $(VENV)/.stamp-base pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[all]"
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.stamp-all
	$(BIN)/kernelfit demo

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -q

bench: $(VENV)/.stamp-all
	$(BIN)/python benchmarks/bench_free_kernel.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
