"""Optimizer step time against mini-batch size and completion length, LoRA and full fine-tuning.

One step = the training forward (``completion_logps``), the rapid loss, backward, gradient clipping
and AdamW, exactly what the trainer runs per mini-batch. Prompts come from the task; completions are
random tokens of fixed length, so every row of a step has the same length.

    python bench/train_step.py [--mini-batches 8 32] [--lengths 16 64] [--finetune lora full]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any

import torch

from common import add_common_args, apply_threads, machine, pick_device, save, sync  # isort: skip
from rapid_core.config import RunPaths, make_config  # noqa: E402
from rapid_core.logprobs import completion_logps  # noqa: E402
from rapid_core.losses import rapid_loss  # noqa: E402
from rapid_core.models import load_policy, prompt_token_ids  # noqa: E402
from rapid_core.tasks import load_task  # noqa: E402


def step_times(policy, prompts, m: int, length: int, repeats: int, group: int) -> list[float]:
    device = policy.device
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-5)
    loss_cfg = make_config(max_new_tokens=length)
    gen = torch.Generator().manual_seed(0)
    vocab = policy.model.config.vocab_size
    times = []
    for r in range(repeats + 1):  # the first is warm-up
        rows = [prompts[(r * m + i // group) % len(prompts)] for i in range(m)]
        comps = torch.randint(0, vocab, (m, length), generator=gen).tolist()
        sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logp, _, mask = completion_logps(policy, rows, comps, 1.0)
        adv = torch.randn(m, device=device)
        loss, _ = rapid_loss(logp, logp.detach() - 0.01, adv, mask, loss_cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), 1.0)
        opt.step()
        sync(device)
        if r:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--finetune", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    p.add_argument("--mini-batches", type=int, nargs="+", default=[8, 32])
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 64], help="completion tokens per row")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--groups",
        type=int,
        nargs="+",
        default=[1, 8],
        help="rows per distinct prompt in a mini-batch (1: all distinct; G: whole groups, as grpo)",
    )
    args = p.parse_args()
    apply_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for finetune in args.finetune:
        cfg = make_config(
            model=args.model,
            dtype=args.dtype,
            device=args.device,
            finetune=finetune,
            eval_problems=0,
            rounds=1,
        )
        policy = load_policy(cfg)
        prompts = [
            prompt_token_ids(policy.tokenizer, r["messages"]) for r in load_task(cfg, RunPaths()).train[:256]
        ]
        prompt_len = statistics.mean(len(x) for x in prompts)
        for m, length, group in itertools.product(args.mini_batches, args.lengths, args.groups):
            t = step_times(policy, prompts, m, length, args.repeats, group)
            med = statistics.median(t)
            rows.append(
                {
                    "finetune": finetune,
                    "dtype": str(policy.dtype).removeprefix("torch."),
                    "device": str(pick_device(args.device)),
                    "mini_batch": m,
                    "completion_len": length,
                    "rows_per_prompt": group,
                    "prompt_len_mean": prompt_len,
                    "step_s": med,
                    "step_s_all": t,
                    "samples_per_s": m / med,
                    "tokens_per_s": m * (prompt_len + length) / med,
                }
            )
            print(rows[-1], flush=True)
        del policy
    print(
        f"{'finetune':>8} {'dtype':>9} {'m':>4} {'len':>4} {'G':>3} {'step s':>8} {'samples/s':>9} {'tokens/s':>9}"
    )
    for r in rows:
        print(
            f"{r['finetune']:>8} {r['dtype']:>9} {r['mini_batch']:>4} {r['completion_len']:>4} "
            f"{r['rows_per_prompt']:>3} {r['step_s']:>8.2f} {r['samples_per_s']:>9.1f} {r['tokens_per_s']:>9.0f}"
        )
    save({"machine": machine(), "settings": vars(args), "rows": rows}, args.out, "train_step.json")


if __name__ == "__main__":
    main()
