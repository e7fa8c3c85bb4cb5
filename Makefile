# minicaffe's two set-up commands (README): `make demo` and `make test`.
# Both create .venv on first use; nothing is installed outside it.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The `test` extra pulls in every optional dependency the suite exercises.
TEST_STAMP := $(VENV)/.installed-test
BASE_STAMP := $(VENV)/.installed-base
DEV_STAMP  := $(VENV)/.installed-dev
DATA_STAMP := $(VENV)/.installed-data
NOTEBOOK_STAMP := $(VENV)/.installed-notebook

.PHONY: demo test fuzz proto check-proto clean help

help:
	@echo "make demo   - create .venv, install minicaffe, train the digits example, print its test accuracy"
	@echo "make test   - create .venv, install minicaffe[test], run the test suite"
	@echo "make fuzz   - the fuzz harness (tests/fuzz) with many random examples: FUZZ_EXAMPLES per test (2000)"
	@echo "make notebook - execute examples/notebook/digits.ipynb and render it to docs/digits_notebook.html"
	@echo "make proto  - regenerate minicaffe/proto/caffe_pb2.py from caffe.proto"
	@echo "make clean  - remove .venv and build debris"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@ $(BASE_STAMP)

$(DATA_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[data]'
	@touch $@ $(BASE_STAMP)

$(NOTEBOOK_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[notebook]'
	@touch $@ $(BASE_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@touch $@ $(TEST_STAMP) $(BASE_STAMP)

# The demo trains a small LeNet on the handwritten digits shipped in examples/digits
# (see its README) and prints the final test accuracy.
demo: $(DATA_STAMP)
	$(BIN)/python examples/digits/prepare_digits.py
	$(BIN)/minicaffe train examples/digits/digits_solver.prototxt 2>&1 | tee examples/digits/data/train.log
	$(BIN)/python examples/digits/report.py examples/digits/data/train.log

# Two processes: numba reads NUMBA_ENABLE_CUDASIM when it is imported, so the
# GPU kernels run under the simulator in their own run, and the rest of the
# suite runs without it (where GPU mode must fail clearly and fall back).
# The third run compiles every kernel to PTX with the argument types the simulator run recorded
# (tests/test_ptx.py): NVVM comes with numba-cuda[cu12], no GPU needed.
KERNEL_SIGNATURES := .pytest-kernel-signatures.json
test: $(TEST_STAMP)
	$(BIN)/python -m pytest
	rm -f $(KERNEL_SIGNATURES)
	MINICAFFE_KERNEL_SIGNATURES=$(KERNEL_SIGNATURES) NUMBA_ENABLE_CUDASIM=$${NUMBA_ENABLE_CUDASIM-1} \
		$(BIN)/python -m pytest -m gpu
	MINICAFFE_KERNEL_SIGNATURES=$(KERNEL_SIGNATURES) $(BIN)/python -m pytest -m ptx

# The fuzz harness (tests/fuzz) with hypothesis's `long` profile: random examples, FUZZ_EXAMPLES of them per
# test (2000 by default: about 3 minutes on two cores), failures kept in .hypothesis/ and replayed first
# next time. `make test` runs the same tests with the fixed, derandomized `ci` profile (about a minute).
FUZZ_EXAMPLES ?= 2000
fuzz: $(TEST_STAMP)
	HYPOTHESIS_PROFILE=long FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/fuzz -p no:cacheprovider \
		--hypothesis-show-statistics $(FUZZ_ARGS)

# Executes the example notebook (nbclient, in its folder) and renders it with nbconvert to
# docs/digits_notebook.html; `make test` executes it too (tests/test_notebook.py).
# The drawing in it needs Graphviz's dot (apt-get install graphviz).
.PHONY: notebook
notebook: $(NOTEBOOK_STAMP)
	$(BIN)/python examples/notebook/render.py

proto: $(DEV_STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=minicaffe/proto caffe.proto
	$(BIN)/python -c "import hashlib,pathlib; pathlib.Path('minicaffe/proto/caffe_proto.sha256').write_text(hashlib.sha256(pathlib.Path('caffe.proto').read_bytes()).hexdigest() + '\n')"
	@echo "regenerated minicaffe/proto/caffe_pb2.py and its caffe.proto hash"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
