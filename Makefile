# The two set-up commands of the README: `make up` and `make test`. Each creates or updates the
# virtual environment from the lock file first, saying what it does; nothing else needs installing
# by hand.
PYTHON ?= python3
VENV   := .venv
UV     := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
# The browser tests drive Debian's Chromium (below): Playwright never downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: up test chromium lint typecheck hooks unit integration reliability bench bench-backbone bench-booking catalogue api-reference proto mutants clean

# Two stamps, one per install: `make up` installs the runtime only ($(RUNTIME)); `make test` and
# the development targets add the test, lint and type-check tools ($(VENV)/.synced). Either order
# works: the runtime sync is --inexact, so it leaves the tools a previous `make test` installed.
# --compile-bytecode: the installed packages' .pyc files are written once here, so that no process
# compiles them again at start (with PYTHONDONTWRITEBYTECODE set, every import would).
RUNTIME := $(VENV)/.synced-runtime

$(UV):
	@echo "==> creating $(VENV) with $(PYTHON) and installing uv 0.13.8 into it (pip)"
	@$(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.8

$(RUNTIME): pyproject.toml uv.lock Makefile | $(UV)
	@echo "==> installing the runtime packages from uv.lock into $(VENV) (the first time: about half a minute)"
	@$(UV) sync --frozen --no-dev --inexact --compile-bytecode
	@touch $@

$(VENV)/.synced: pyproject.toml uv.lock Makefile | $(UV)
	@echo "==> installing the runtime, test, lint and type-check packages from uv.lock into $(VENV)"
	@$(UV) sync --frozen --compile-bytecode
	@touch $@ $(RUNTIME)

up: $(RUNTIME)
	@echo "==> starting the hospital: $(VENV)/bin/his up"
	@$(VENV)/bin/his up

# What comes before the tests runs two at a time, each step's output printed whole when it ends:
# Chromium's install (mostly network) beside the packages' install, then the lint beside the type
# check (one core each; the type check takes most of a minute on CI's fresh clone, with no cache).
# The tests start once every step has passed.
test:
	@$(MAKE) --no-print-directory --jobs=2 --output-sync=target chromium lint typecheck
	$(VENV)/bin/pytest

# The browser tests (tests/e2e/browser) drive Debian's Chromium at $(CHROMIUM) (tests/support/browser.py).
# When it is missing, root (CI's fresh machine) installs it with apt-get (about 25 packages); anyone
# else is told the one command to run.
CHROMIUM := /usr/bin/chromium

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "==> $(CHROMIUM) is missing: installing Debian's chromium for the browser tests (apt-get update; apt-get install -y --no-install-recommends chromium)"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	  else \
	    echo "The browser tests need Chromium ($(CHROMIUM) is missing). Install it with:"; \
	    echo "  sudo apt-get install -y --no-install-recommends chromium"; \
	    exit 1; \
	  fi; \
	fi

# ruff; the import contracts of pyproject.toml ([tool.importlinter]); every import declared
# (deptry: the runtime's in [project].dependencies, the tests' and tools' there or in the dev group).
lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/deptry src
	$(VENV)/bin/deptry tests bench tools --exclude '(^|/)\.|__pycache__' --ignore DEP002,DEP004

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy

# The same checks before each commit (.pre-commit-config.yaml runs make lint and make typecheck).
hooks: $(VENV)/.synced
	$(VENV)/bin/pre-commit install

unit: $(VENV)/.synced
	$(VENV)/bin/pytest tests/unit

integration: $(VENV)/.synced
	$(VENV)/bin/pytest tests/integration

reliability: $(VENV)/.synced
	$(VENV)/bin/pytest tests/reliability

# The mutation check: every bug listed in tests/mutation/mutants/*.toml, seeded one at a time into a
# copy of the working tree, must make its tests fail (report: mutants-report.md). Not part of `make
# test`: it runs for minutes. Options: make mutants ARGS="--only ID[,ID] | --list | --baseline".
mutants: $(VENV)/.synced
	$(VENV)/bin/python -m tests.mutation.run $(ARGS)

bench: $(RUNTIME)
	$(VENV)/bin/his bench

bench-backbone: $(RUNTIME)
	$(VENV)/bin/his bench backbone

bench-booking: $(RUNTIME)
	$(VENV)/bin/his bench booking

catalogue: $(RUNTIME)
	$(VENV)/bin/his events catalogue -o docs/events.md

# Regenerate docs/api.md (the API reference) from the services' routes (a unit test fails while it is stale).
api-reference: $(RUNTIME)
	$(VENV)/bin/his api routes -o src/his/gateway/routes.json
	$(VENV)/bin/his api reference -o docs/api.md

# Regenerate src/his/proto (committed) from the contracts in proto/.
proto: $(VENV)/.synced
	$(VENV)/bin/python tools/protogen.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
