# The common loops. Everything runs from the repository's .venv (bash scripts/setup.sh creates it).
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: setup lint test-fast test serve bench

setup:  ## create .venv with every dependency (CPU torch)
	bash scripts/setup.sh

lint:  ## ruff and the import-linter contracts (layer boundaries)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

test-fast: lint  ## unit tests only: no PostgreSQL / Redis / live servers, no real model
	$(PY) -m pytest -q -p no:cacheprovider -m "not integration and not slow"

test:  ## everything CI runs: lint, unit, integration (starts PostgreSQL and Redis), slow
	bash scripts/test.sh

serve:  ## the API and a worker on the embedded defaults (data in $$RAPID_DATA_DIR, default ./rapid-data)
	.venv/bin/rapid serve

bench:  ## rapid vs grpo vs pg on identical settings (bench/compare.py --help for options)
	$(PY) bench/compare.py
