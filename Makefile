# Each target creates .venv and installs first:
#   make demo  - the offline demo (an MLP on scikit-learn's digits; seconds on a CPU)
#   make test  - the test suite
#   make run   - the flagship experiment (350 epochs of ResNet-18 on CIFAR-10: a GPU job)
#
# The jax build: JAX=cuda13, cuda12 or cpu; by default cuda13 when nvidia-smi lists a GPU,
# else cpu (e.g. `make run JAX=cuda12` for a CUDA 12 driver).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_ARGS ?= --lr 0.01
JAX ?= $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && echo cuda13 || echo cpu)
comma := ,
EXTRAS := test,tsne,tensorboard$(if $(filter cuda12 cuda13,$(JAX)),$(comma)$(JAX))

ifeq ($(filter cpu cuda12 cuda13,$(JAX)),)
$(error JAX=$(JAX): must be cpu, cuda12 or cuda13)
endif

# The marker names the build, so `make install JAX=cuda12` after a CPU install reinstalls.
$(VENV)/.installed-$(JAX): pyproject.toml ncfine_jax/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

.PHONY: install run test test-min test-heavy demo bench check-install
install: $(VENV)/.installed-$(JAX)

run: $(VENV)/.installed-$(JAX)
	$(PY) experiments/coarse_cifar10.py $(RUN_ARGS)

demo: $(VENV)/.installed-$(JAX)
	$(PY) experiments/coarse_digits.py

# Two pytest-xdist workers, one test file each at a time (the suite compiles much more
# than it computes, and XLA compiles on one core).
TEST_WORKERS ?= 2
test: $(VENV)/.installed-$(JAX)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The declared lower bounds of every dependency (pyproject.toml), installed exactly into
# their own environment, with a smoke subset of the tests: training, checkpoints, resume,
# analysis, metrics. CI runs it after `make test`.
MIN_VENV ?= .venv-min
MIN_TESTS := tests/test_labels.py tests/test_io.py tests/test_manifest.py tests/test_metrics.py \
	tests/test_analysis.py::test_analyze_run_writes_every_output \
	"tests/test_reliability.py::test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one[truncated array]"

$(MIN_VENV)/.installed: pyproject.toml .ci/min_versions.py
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) .ci/min_versions.py > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/python -m pip install -q -c $(MIN_VENV)/constraints.txt -e '.[test]'
	touch $@

test-min: $(MIN_VENV)/.installed
	$(MIN_VENV)/bin/python -m pytest -q $(MIN_TESTS)

# Tests that compile for minutes on a CPU (DenseNet-121); not part of `make test`.
test-heavy: $(VENV)/.installed-$(JAX)
	$(PY) -m pytest -q -m heavy

bench: $(VENV)/.installed-$(JAX)
	$(PY) benchmarks/metrics_bench.py

# The recipe for an environment of your own, on a stock venv (pip and setuptools as Python
# ships them): a plain `pip install -e .` brings every dependency (an existing jax that is
# new enough is kept). CI runs it.
STOCK_VENV ?= .venv-stock
check-install:
	rm -rf $(STOCK_VENV)
	$(PYTHON) -m venv $(STOCK_VENV)
	$(STOCK_VENV)/bin/python -m pip install -q -e .
	$(STOCK_VENV)/bin/python -c "import importlib.metadata as m, ncfine_jax; \
		assert ncfine_jax.__version__ == m.version('ncfine_jax'); print('installed', ncfine_jax.__version__)"
	$(STOCK_VENV)/bin/python experiments/coarse_digits.py --help > /dev/null
	rm -rf $(STOCK_VENV)
