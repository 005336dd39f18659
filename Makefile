# The two set-up commands of the README: `make up` and `make test`. Each creates or updates the
# virtual environment from the lock file first; nothing else needs installing by hand.
PYTHON ?= python3
VENV   := .venv
UV     := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never

.PHONY: up test lint typecheck unit integration reliability bench bench-backbone bench-booking catalogue proto clean

# --compile-bytecode: the installed packages' .pyc files are written once here, so that no process
# compiles them again at start (with PYTHONDONTWRITEBYTECODE set, every import would).
$(VENV)/.synced: pyproject.toml uv.lock Makefile
	@test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.8; }
	$(UV) sync --frozen --quiet --compile-bytecode
	@touch $@

up: $(VENV)/.synced
	$(VENV)/bin/his up

test: $(VENV)/.synced lint typecheck
	$(VENV)/bin/pytest

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy

unit: $(VENV)/.synced
	$(VENV)/bin/pytest tests/unit

integration: $(VENV)/.synced
	$(VENV)/bin/pytest tests/integration

reliability: $(VENV)/.synced
	$(VENV)/bin/pytest tests/reliability

bench: $(VENV)/.synced
	$(VENV)/bin/his bench

bench-backbone: $(VENV)/.synced
	$(VENV)/bin/his bench backbone

bench-booking: $(VENV)/.synced
	$(VENV)/bin/his bench booking

catalogue: $(VENV)/.synced
	$(VENV)/bin/his events catalogue -o docs/events.md

# Regenerate src/his/proto (committed) from the contracts in proto/.
proto: $(VENV)/.synced
	$(VENV)/bin/python tools/protogen.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
