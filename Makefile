# The two commands of the README, and the checks CI runs.
#   make run   - set up (first time) and start corral on this machine
#   make test  - set up (first time) and run the whole test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test backends browser check format clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "corral needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/corral start $(ARGS)

test: backends browser
	$(BIN)/pytest $(PYTEST_ARGS)

# The engines the end-to-end tests run: llama.cpp (CPU build, ~6-12 min the
# first time) and vLLM (CPU build, ~2-8 min), built once per machine into
# ~/.cache/corral (or $$CORRAL_CACHE_DIR); later runs find them there.
backends: $(STAMP)
	$(BIN)/corral backend install llama.cpp --gpu cpu --data-dir $(VENV)/backends-seed
	$(BIN)/corral backend install vllm --data-dir $(VENV)/backends-seed

# Headless Chromium for the web UI's browser tests, from Debian's packages:
# Playwright drives it; Playwright's own browser download cannot work here.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests ..."; \
		$(SUDO) apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	@chromium --version 2>/dev/null

check: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV)
