# Two commands for a newcomer:
#   make run   - create .venv, install, run the flagship experiment
#   make test  - create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_ARGS ?= --lr 0.01

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,tsne]'
	touch $@

.PHONY: install run test test-heavy demo bench
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) experiments/coarse_cifar10.py $(RUN_ARGS)

demo: $(VENV)/.installed
	$(PY) experiments/coarse_digits.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

# Tests that compile for minutes on a CPU (DenseNet-121); not part of `make test`.
test-heavy: $(VENV)/.installed
	$(PY) -m pytest -q -m heavy

bench: $(VENV)/.installed
	$(PY) benchmarks/metrics_bench.py
