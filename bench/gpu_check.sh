#!/usr/bin/env bash
# GPU check for issue 5: hf-engine throughput, one training step size and a short rapid/grpo/pg
# comparison in bf16 on CUDA, on a random-weight model with SmolLM2-135M's exact shape (no network,
# no SmolLM2 file needed; accuracy is meaningless, report time split and tokens/s only).
# Needs bench/gpu_assets/ (tokenizer; pydantic/yaml fallback for Python 3.11), carried alongside.
# Run from the repo root:  bash bench/gpu_check.sh      (CPU smoke test: GPU_CHECK_DEVICE=cpu SMALL=1 THREADS=1)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT_DIR=${OUT:-/tmp/rapid-gpu-check}
MODEL=${MODEL_DIR:-/tmp/rapid-smollm2-135m-random}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OUT="$OUT_DIR"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if ! $PY -c "import pydantic, yaml" 2>/dev/null; then
  export PYTHONPATH="$PYTHONPATH:$PWD/bench/gpu_assets/pylib"
  echo "pydantic/yaml missing: using bench/gpu_assets/pylib"
fi
start=$(date +%s)
log() { echo "=== [$(( $(date +%s) - start )) s] $*"; }

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"

log "random-weight SmolLM2-135M"
$PY bench/make_random_model.py --tokenizer bench/gpu_assets/tokenizer --out "$MODEL" || exit 1

if [ -n "${SMALL:-}" ]; then  # CPU smoke test of this script: tiny sizes
  GEN=(--batch-sizes 4 --new-tokens 4 --repeats 1); STEP=(--mini-batches 4 --lengths 8 --repeats 1)
  CMP=(--total-samples 32 --mini-batch 16 --group-size 4 --prompts-per-round 8 --max-new-tokens 4)
else
  GEN=(--batch-sizes 64 128 256 --new-tokens 64 --repeats 2); STEP=(--mini-batches 32 128 --lengths 64 --repeats 3)
  CMP=(--total-samples 384 --mini-batch 32 --group-size 8 --prompts-per-round 16 --max-new-tokens 64)
fi

log "generation (hf engine bf16 vs plain fp32 generate)"
timeout 120 $PY bench/generation.py --model "$MODEL" --device "$DEVICE" --dtypes bf16 "${GEN[@]}" \
  ${THREADS:+--threads $THREADS} --out "$OUT_DIR/generation.json" 2>&1 | grep -v -E "Warning|warn\(|Loading weights"

log "train step (LoRA, bf16)"
timeout 75 $PY bench/train_step.py --model "$MODEL" --device "$DEVICE" --dtype bf16 --finetune lora "${STEP[@]}" \
  ${THREADS:+--threads $THREADS} --out "$OUT_DIR/train_step.json" 2>&1 | grep -v -E "Warning|warn\(|Loading weights"

log "compare rapid / grpo / pg (time split only: random weights)"
timeout 140 $PY bench/compare.py --model "$MODEL" --device "$DEVICE" --dtype bf16 --eval-problems 0 --trl off \
  --gen-micro-batch 128 "${CMP[@]}" ${THREADS:+--threads $THREADS} --out "$OUT_DIR/compare.json" 2>&1 | grep -v -E "Warning|warn\(|Loading weights"

log "done; JSON in $OUT_DIR"
ls -la "$OUT_DIR"
