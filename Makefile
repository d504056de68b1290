# Thin wrapper over CMake so that `make` leaves ./train_gpt2 (and ./train_gpt2cu
# when nvcc is present) in the repo root, as llm.c users expect.
SHELL := /bin/bash
BUILD ?= build
CMAKE_ARGS ?=
PYTHON ?= python3
JOBS ?= $(shell nproc)
GENERATOR ?= $(shell command -v ninja >/dev/null 2>&1 && echo -G Ninja)

.PHONY: all configure python test asan asan-build quickstart clean

all: configure
	cmake --build $(BUILD) -j $(JOBS)
	@for t in train_gpt2 train_gpt2cu; do if [ -f $(BUILD)/$$t ]; then cp $(BUILD)/$$t ./$$t; fi; done

configure:
	@cmake -S . -B $(BUILD) $(GENERATOR) $(CMAKE_ARGS) >/dev/null

# Build and install the Python package (llmc._core) into the current environment, in the same
# build tree as `make` (build/, for this machine's CPU): what `make` compiled is not compiled again.
# The compiler's [n/N] progress lines are shown, pip's own chatter is not.
python:
	@set -o pipefail; LLMC_NATIVE=ON $(PYTHON) -m pip install --no-build-isolation -v --disable-pip-version-check . 2>&1 \
		| grep --line-buffered -E '^\s*\[[0-9]+/[0-9]+\]|rror|Successfully installed' || { echo "make python failed: run $(PYTHON) -m pip install --no-build-isolation -v . to see why"; exit 1; }

# the test dependencies (requirements-dev.txt) come first: nothing is downloaded when they are there
test: all python
	@$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PYTHON) -m pytest -q tests

# ---- sanitizers: `make asan` ----
# Builds the core, ./train_gpt2 (as $(ASAN_BUILD)/train_gpt2) and the extension with ASan+UBSan
# (C code only, so CUDA is off), installs the extension into $(ASAN_BUILD)/site (the normal
# install stays as it is) and runs the CPU test suite against them. Python is not sanitized, so the
# compiler's runtimes are preloaded; leak checking is off (CPython leaks by design); the first
# report aborts the process it is in (a test that ran it fails) and ASan's reports are also kept
# in $(ASAN_BUILD)/reports/, which must end up empty. UBSan aborts too (-fno-sanitize-recover).
# Needs gcc (its libasan/libubsan). ASAN_TESTS picks a subset, PYTEST_ARGS adds pytest options.
ASAN_BUILD ?= build-asan
SANITIZE ?= address,undefined
ASAN_TESTS ?= tests
PYTEST_ARGS ?= -q
ASAN_DIR = $(abspath $(ASAN_BUILD))
ASAN_RUNTIME = $(shell $(CC) -print-file-name=libasan.so):$(shell $(CC) -print-file-name=libubsan.so)
ASAN_ENV = LD_PRELOAD="$(ASAN_RUNTIME)" LLMC_ASAN_PRELOAD="$(ASAN_RUNTIME)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$(ASAN_DIR)/reports/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1 \
	LLMC_BIN_DIR=$(ASAN_DIR) LLMC_BUILD=$(ASAN_DIR) PYTHONPATH=$(ASAN_DIR)/site$${PYTHONPATH:+:$$PYTHONPATH}

# $(ASAN_BUILD)/site/sitecustomize.py: Python (not sanitized) needs the runtimes preloaded, but
# the programs the tests start must not inherit the preload (procps' pgrep and ps hang under ASan).
# Each Python process drops LD_PRELOAD from its environment at startup; one started without it
# (a test's `python -m ...` child) starts again with it.
define ASAN_SITECUSTOMIZE
"""Written by `make asan`: LD_PRELOAD of the sanitizer runtimes for Python processes only."""
import os
import sys

_pre = os.environ.get("LLMC_ASAN_PRELOAD", "")
if _pre and _pre not in os.environ.get("LD_PRELOAD", ""):
    if getattr(sys, "orig_argv", None):
        os.execve(sys.executable, sys.orig_argv, dict(os.environ, LD_PRELOAD=_pre))
elif _pre:
    del os.environ["LD_PRELOAD"]
endef
export ASAN_SITECUSTOMIZE

asan-build:
	@cmake -S . -B $(ASAN_BUILD) $(GENERATOR) -DLLMC_SANITIZE=$(SANITIZE) -DLLMC_CUDA=OFF $(CMAKE_ARGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	@echo '*' > $(ASAN_BUILD)/.gitignore
	LLMC_CUDA=OFF PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install --no-build-isolation --no-deps --upgrade -q --disable-pip-version-check \
		--target $(ASAN_BUILD)/site -C build-dir=$(ASAN_BUILD)/python -C install.strip=false \
		-C cmake.define.LLMC_SANITIZE=$(SANITIZE) -C cmake.define.LLMC_CUDA=OFF .
	@printf '%s\n' "$$ASAN_SITECUSTOMIZE" > $(ASAN_BUILD)/site/sitecustomize.py

asan: asan-build
	@rm -rf $(ASAN_BUILD)/reports && mkdir -p $(ASAN_BUILD)/reports
	@$(ASAN_ENV) $(PYTHON) -c "import llmc._core as c; assert c.__file__.startswith('$(ASAN_DIR)/'), c.__file__"
	@$(ASAN_ENV) $(PYTHON) -c "import os; assert 'LD_PRELOAD' not in os.environ, 'the preload would reach every child'"
	@rc=0; $(ASAN_ENV) $(PYTHON) -m pytest $(PYTEST_ARGS) -m "not cuda" $(ASAN_TESTS) || rc=$$?; \
	found=$$(grep -l "SUMMARY: " $(ASAN_BUILD)/reports/* 2>/dev/null); \
	if [ -n "$$found" ]; then cat $$found; echo "asan: sanitizer reports:" $$found; exit 1; fi; \
	if [ $$rc -eq 0 ]; then echo "asan: the tests passed with no sanitizer report"; fi; exit $$rc

quickstart:
	./scripts/quickstart.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) train_gpt2 train_gpt2cu
