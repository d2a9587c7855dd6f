# CALIM -- two commands from a fresh clone (Python 3.11 + pip):
#   make demo   create .venv, install, write the demo experiment, run the pipeline on it
#   make test   create .venv if missing, install with test extras, run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
OUT    ?= out

.PHONY: demo test lab bench bench-science fixtures-imagej nbval-refs clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/calim demo-data $(DEMO) --overwrite
	$(BIN)/calim run $(DEMO)/DEMO --out $(OUT)

# -n auto: one pytest-xdist worker per core (tests/conftest.py: a module per worker)
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n auto

lab: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[lab]"
	$(BIN)/jupyter lab notebooks/

# Speed and memory side by side (~15 min); figures recorded in benchmarks/README.md.
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run_all.py

# Detection, events and neuropil accuracy on held-out hard sessions (~1 h).
bench-science: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run_all.py --science

# Needs Java, Debian's imagej and xvfb: regenerates tests/fixtures/imagej/ with real ImageJ.
fixtures-imagej: $(VENV)/.installed-test
	bash tools/imagej/regenerate.sh

# Re-executes notebooks/*.py on the tiny demo and rewrites the nbval references.
nbval-refs: $(VENV)/.installed-test
	$(BIN)/python tools/regenerate_nbval.py

clean-demo:
	rm -rf $(DEMO) $(OUT)
