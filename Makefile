# attnguide developer commands. Each target creates .venv on first use:
# torch first (pinned: the CPU build on this disk), then the project with torch held.
VENV ?= .venv
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attnguide-installed
PYTEST_ARGS ?=

.PHONY: demo test test-all venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$(TORCH_VERSION)' else 1)" 2>/dev/null \
		|| { echo "installing torch==$(TORCH_VERSION)"; $(PY) -m pip install -q "torch==$(TORCH_VERSION)" > $(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }; }
	@echo "torch==$(TORCH_VERSION)" > $(VENV)/constraints.txt
	@echo "installing attnguide and its dependencies (torch held at $(TORCH_VERSION)); log: $(VENV)/install.log"
	@$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev]" >> $(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attnguide run quickstart

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf outputs build dist *.egg-info .pytest_cache
