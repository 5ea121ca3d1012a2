# Ephemera's two front-door commands: `make dev` and `make test` (see README.md).
# Everything installs from the project's own files: uv is bootstrapped into var/tools with
# the interpreter on PATH, then `uv sync --frozen` installs exactly what uv.lock pins.

PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := var/tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: dev test install guide-js lint format check

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

install: $(UV)
	$(UV) sync --frozen --python $(PYTHON)

## Run the portal on the embedded default: SQLite, filesystem broker, seeded demo.
dev: install
	DEBUG=1 $(VENV)/bin/python manage.py dev

## The client guide's JavaScript runs under node with the @google/genai its lockfile pins
## (tests/policies/guide_js). Without npm those tests skip, unless EPHEMERA_REQUIRE_NODE=1.
GUIDE_JS := tests/policies/guide_js
guide-js: $(GUIDE_JS)/node_modules/.package-lock.json

$(GUIDE_JS)/node_modules/.package-lock.json: $(GUIDE_JS)/package.json $(GUIDE_JS)/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix $(GUIDE_JS) --no-audit --no-fund; \
	else echo "npm not found: the client guide's JavaScript tests will be skipped"; fi

## Run the test suite (SQLite, no servers; set DATABASE_URL / REDIS_URL to use real ones).
test: install guide-js
	$(VENV)/bin/python -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check: install
	SECRET_KEY=check-only $(VENV)/bin/python manage.py check
	SECRET_KEY=check-only $(VENV)/bin/python manage.py makemigrations --check --dry-run
