# Two commands do everything on a fresh machine:
#   make run   - create .venv, install drivecast, run the quickstart pipeline
#   make test  - create/update .venv, lint, run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.drivecast-installed
# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# EnvPool's wheel without its dependencies: they pull ~750 MB of MuJoCo/Atari assets that
# its highway scenarios do not use (pipeline/envpool_source.py loads the highway tasks alone).
ENVPOOL ?= envpool==1.2.5

.PHONY: run test install lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-deps "$(ENVPOOL)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/drivecast run configs/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs mlruns lightning_logs
