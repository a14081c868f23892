"""The prompt pass with and without a shared prefix, side by side: how long the sampling model's
prompt pass (prefill) and one LoRA training step (forward and backward over the shared prompt
layout) take for a number of distinct arithmetic prompts, whose chat template's system turn and
instruction (26 of ~47 tokens) they all start with.

"whole" runs every distinct prompt in full, "shared" runs their common prefix once at any saving
(kvcache.MIN_SAVED_TOKENS set out of reach, then to 1). The "default" column says which of the two
the default threshold picks: a prefix pass only where it saves >= MIN_SAVED_TOKENS token
positions. Best of --repeats after one warm-up.

    python bench/prompt_prefix.py [--threads 1] [--distinct 2 4 8 16 64] [--mini-batch 32]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import Any

import torch

from common import add_common_args, apply_threads, machine, save  # isort: skip
import rapid_core.kvcache as kvcache  # noqa: E402
from rapid_core.config import RunPaths, make_config  # noqa: E402
from rapid_core.engines.sampling_model import SamplingModel  # noqa: E402
from rapid_core.logprobs import completion_logps  # noqa: E402
from rapid_core.models import load_policy, prompt_token_ids  # noqa: E402
from rapid_core.tasks import load_task  # noqa: E402


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def prompt_pass(model, prompts: list[list[int]], pad: int) -> None:
    with torch.inference_mode():
        kvcache.run_prompts(model.model, prompts, pad, model.device)


def training_step(policy, rows: list[list[int]], completions: list[list[int]]) -> None:
    policy.model.zero_grad(set_to_none=True)
    logp, _, _ = completion_logps(policy, rows, completions, 1.0, prompt_pass="shared")
    logp.sum().backward()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--distinct", type=int, nargs="+", default=[2, 4, 8, 16, 64], help="distinct prompts")
    p.add_argument("--mini-batch", type=int, default=32, help="rows of the training step")
    p.add_argument("--completion-len", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    apply_threads(args.threads)
    cfg = make_config(model=args.model, eval_problems=0, rounds=1, device=args.device)
    policy = load_policy(cfg)
    prompts = [prompt_token_ids(policy.tokenizer, r["messages"]) for r in load_task(cfg, RunPaths()).train]
    model, pad = SamplingModel(policy).get(), policy.tokenizer.pad_token_id
    default = kvcache.MIN_SAVED_TOKENS
    rows: list[dict[str, Any]] = []
    print(
        f"{'distinct':>8} {'prefix':>6} {'default':>7} {'prefill whole ms':>16} {'shared ms':>9} {'ratio':>5} "
        f"{'train whole ms':>14} {'shared ms':>9} {'ratio':>5}"
    )
    for n in args.distinct:
        uniq = prompts[:n]
        # The training step: args.mini_batch rows over the same n prompts (G = mini_batch / n).
        train_rows = [uniq[i * n // args.mini_batch] for i in range(args.mini_batch)]
        completions = [[5] * args.completion_len for _ in train_rows]

        prefill = partial(prompt_pass, model, uniq, pad)
        train_step = partial(training_step, policy, train_rows, completions)
        row: dict[str, Any] = {
            "distinct": n,
            "shared_prefix": kvcache.shared_prefix(uniq, min_saved=1),
            "default": "shared" if kvcache.shared_prefix(uniq) else "whole",
        }
        for layout, limit in (("whole", 10**9), ("shared", 1)):
            kvcache.MIN_SAVED_TOKENS = limit
            row[f"prefill_{layout}_s"] = best_of(prefill, args.repeats)
            row[f"train_{layout}_s"] = best_of(train_step, args.repeats)
        kvcache.MIN_SAVED_TOKENS = default
        for part in ("prefill", "train"):
            row[f"{part}_ratio"] = row[f"{part}_shared_s"] / row[f"{part}_whole_s"]
        rows.append(row)
        print(
            f"{n:>8} {row['shared_prefix']:>6} {row['default']:>7} {1e3 * row['prefill_whole_s']:>16.1f} "
            f"{1e3 * row['prefill_shared_s']:>9.1f} {row['prefill_ratio']:>5.2f} "
            f"{1e3 * row['train_whole_s']:>14.1f} {1e3 * row['train_shared_s']:>9.1f} {row['train_ratio']:>5.2f}",
            flush=True,
        )
    save({"machine": machine(), "settings": vars(args), "rows": rows}, args.out, "prompt_prefix.json")


if __name__ == "__main__":
    main()
