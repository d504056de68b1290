# Thin wrapper over CMake so that `make` leaves ./train_gpt2 (and ./train_gpt2cu
# when nvcc is present) in the repo root, as llm.c users expect.
BUILD ?= build
CMAKE_ARGS ?=
PYTHON ?= python3
JOBS ?= $(shell nproc)
GENERATOR ?= $(shell command -v ninja >/dev/null 2>&1 && echo -G Ninja)

.PHONY: all configure python test quickstart clean

all: configure
	cmake --build $(BUILD) -j $(JOBS)
	@for t in train_gpt2 train_gpt2cu; do if [ -f $(BUILD)/$$t ]; then cp $(BUILD)/$$t ./$$t; fi; done

configure:
	@cmake -S . -B $(BUILD) $(GENERATOR) $(CMAKE_ARGS) >/dev/null

# Build and install the Python package (llmc._core) into the current environment.
python:
	$(PYTHON) -m pip install --no-build-isolation -q .

test: all python
	$(PYTHON) -m pytest -q tests

quickstart:
	./scripts/quickstart.sh

clean:
	rm -rf $(BUILD) train_gpt2 train_gpt2cu
