#!/usr/bin/env bash
# Lint and import contracts, then every test (unit, integration on real PostgreSQL / Redis / Celery /
# uvicorn, slow on SmolLM2). Pass pytest arguments to narrow it, e.g.
# `bash scripts/test.sh -m "not integration and not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
