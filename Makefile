# Two entry points that work on a fresh machine with Python >= 3.10 and access to PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test docs bench clean

# One install serves every target: kernelfit in editable mode with all its extras (the test
# and docs tools included), redone only when pyproject.toml changes.
$(VENV)/.stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all]"
	touch $@

demo: $(VENV)/.stamp
	$(BIN)/kernelfit demo

test: $(VENV)/.stamp
	$(BIN)/python -m pytest -q

# The documentation, warnings as errors; the gallery's scripts run during the build.
docs: $(VENV)/.stamp
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: $(VENV)/.stamp
	$(BIN)/python benchmarks/bench_free_kernel.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis \
		docs/_build docs/generated docs/auto_examples docs/sg_execution_times.rst
