#!/usr/bin/env bash
# Prepare the two device calls of bench/gpu_check.sh, on this (CPU) machine, into git-ignored folders:
#   .whl/  Python 3.12 wheels the GPU image lacks (the service's stack: pydantic, fastapi, celery, ...)
#   .gpu/  the SmolLM2 GGUF in two parts (98 MB; one call carries at most 64 MiB) and its tokenizer
# Then call 1 carries .whl .gpu/tokenizer .gpu/gguf.part-a .gpu/gguf.name .gpu/gguf.sha256 and runs
# `bash bench/gpu_check.sh engine`; call 2, at once (a warm machine is kept 30 s), carries
# .gpu/gguf.part-b and runs `bash bench/gpu_check.sh service` (sizes: ~62 MB and ~59 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
PY=.venv/bin/python
mkdir -p .whl .gpu
# Pinned to what .venv runs here, so the device runs the same service code paths.
WHEELS=$($PY - <<'PY'
from importlib.metadata import version
names = ["alembic", "amqp", "annotated-doc", "annotated-types", "antlr4-python3-runtime", "anyio", "billiard",
         "celery", "click-didyoumean", "click-plugins", "click-repl", "distro", "fastapi", "gguf", "httpcore2",
         "httpx2", "jiter", "kombu", "latex2sympy2_extended", "Mako", "math-verify", "openai", "opentelemetry-api",
         "prompt_toolkit", "pydantic", "pydantic-settings", "pydantic_core", "python-dateutil", "python-dotenv",
         "python-multipart", "RapidFuzz", "sniffio", "SQLAlchemy", "starlette", "truststore", "typing_extensions",
         "typing-inspection", "tzlocal", "uvicorn", "vine", "wcwidth"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
for spec in $WHEELS tzdata; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$spec" 2>&1 | grep -v WARNING || true
done
GGUF=$($PY -c "from rapid_core.model_source import _smollm2_gguf; print(_smollm2_gguf())")
# Call 1 also carries the wheels and the tokenizer (~22 MB): its half is the smaller one.
first=40000000
head -c $first "$GGUF" > .gpu/gguf.part-a
tail -c +$(( first + 1 )) "$GGUF" > .gpu/gguf.part-b
sha256sum "$GGUF" | cut -d' ' -f1 > .gpu/gguf.sha256
basename "$GGUF" > .gpu/gguf.name
$PY -c "
from rapid_core.models import load_tokenizer, resolve_model
load_tokenizer(resolve_model('smollm2-135m-instruct')).save_pretrained('.gpu/tokenizer')"
du -sh .whl .gpu/*
