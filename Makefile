# dlops: the two commands of the README.
#   make demo   install into .venv (if needed) and run the main job on the embedded default
#   make test   install into .venv (if needed) and run the test suite
# Both are idempotent: a second run reuses .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision: this pin matches the wheels on the build machines; elsewhere override,
# e.g. `make demo TORCH="torch torchvision"`.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.dlops-installed
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false

.PHONY: demo test install bench clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dlops run examples/digits-transfer.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=25

bench: $(STAMP)
	$(BIN)/python bench/pipeline_phases.py

clean:
	rm -rf mlruns mlartifacts ray_results mlflow.db .pytest_cache
