"""Optimizer step time against mini-batch size and completion length, LoRA and full fine-tuning.

One step = the training forward (``completion_logps``), the rapid loss, backward, gradient clipping
and AdamW, exactly what the trainer runs per mini-batch. Prompts come from the task; completions are
random tokens of fixed length, so every row of a step has the same length.

Each step is timed in three phases (forward = log-probs and loss, backward, optimizer = clip and
AdamW), with a device sync between them. ``--profile`` runs one more step of each shape under
``torch.profiler`` and records how many operators (and on CUDA, kernels) a step launches and where
its CPU and device time go: on a GPU a step that takes far more than its FLOPs is bound by launches,
and the top rows name what to fuse.

    python bench/train_step.py [--mini-batches 8 32] [--lengths 16 64] [--finetune lora full] [--profile] \
        [--prompt-passes shared per_row]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any, get_args

import torch

from common import add_common_args, apply_threads, machine, pick_device, save, sync  # isort: skip
from rapid_core.config import RunPaths, TrainConfig, make_config  # noqa: E402
from rapid_core.logprobs import completion_logps, resolve_prompt_pass  # noqa: E402
from rapid_core.losses import rapid_loss  # noqa: E402
from rapid_core.models import load_policy, prompt_token_ids  # noqa: E402
from rapid_core.tasks import load_task  # noqa: E402

PHASES = ("forward", "backward", "optimizer")


def one_step(policy, opt, rows, comps, loss_cfg, prompt_pass: str) -> dict[str, float]:
    """One optimizer step as the trainer runs it; seconds of each phase (device synced between)."""
    device = policy.device
    marks = [time.perf_counter()]
    opt.zero_grad(set_to_none=True)
    logp, _, mask = completion_logps(policy, rows, comps, 1.0, prompt_pass=prompt_pass)
    adv = torch.randn(len(rows), device=device)
    loss, _ = rapid_loss(logp, logp.detach() - 0.01, adv, mask, loss_cfg)
    sync(device)
    marks.append(time.perf_counter())
    loss.backward()
    sync(device)
    marks.append(time.perf_counter())
    torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), 1.0)
    opt.step()
    sync(device)
    marks.append(time.perf_counter())
    return {name: b - a for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True)}


def step_inputs(prompts, m: int, length: int, group: int, r: int, vocab: int, gen: torch.Generator):
    rows = [prompts[(r * m + i // group) % len(prompts)] for i in range(m)]
    return rows, torch.randint(0, vocab, (m, length), generator=gen).tolist()


def step_times(
    policy, prompts, m: int, length: int, repeats: int, group: int, prompt_pass: str
) -> list[dict[str, float]]:
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-5)
    loss_cfg = make_config(max_new_tokens=length)
    gen = torch.Generator().manual_seed(0)
    vocab = policy.model.config.vocab_size
    times = []
    for r in range(repeats + 1):  # the first is warm-up
        rows, comps = step_inputs(prompts, m, length, group, r, vocab, gen)
        sync(policy.device)
        phases = one_step(policy, opt, rows, comps, loss_cfg, prompt_pass)
        if r:
            times.append(phases)
    return times


def profile_step(
    policy, prompts, m: int, length: int, group: int, prompt_pass: str, top: int = 12
) -> dict[str, Any]:
    """One step (after a warm-up) under torch.profiler: operator and kernel counts, CPU and device
    self time in total and for the ``top`` operators of each."""
    from torch.profiler import ProfilerActivity, profile

    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-5)
    loss_cfg = make_config(max_new_tokens=length)
    gen = torch.Generator().manual_seed(1)
    vocab = policy.model.config.vocab_size
    one_step(policy, opt, *step_inputs(prompts, m, length, group, 0, vocab, gen), loss_cfg, prompt_pass)
    cuda = policy.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    inputs = step_inputs(prompts, m, length, group, 1, vocab, gen)
    with profile(activities=activities) as prof:
        phases = one_step(policy, opt, *inputs, loss_cfg, prompt_pass)
    table = prof.key_averages()
    ops = [e for e in table if e.key.startswith("aten::")]
    kernels = [e for e in table if e.device_type == torch.autograd.DeviceType.CUDA]

    def rows_by(attr: str) -> list[dict[str, Any]]:
        ranked = sorted(table, key=lambda e: getattr(e, attr), reverse=True)[:top]
        return [{"op": e.key, "calls": e.count, "self_us": round(getattr(e, attr), 1)} for e in ranked]

    print(table.table(sort_by="self_cpu_time_total", row_limit=top), flush=True)
    if cuda:
        print(table.table(sort_by="self_device_time_total", row_limit=top), flush=True)
    return {
        "step_s": sum(phases.values()),
        "phases_s": phases,
        "aten_op_calls": sum(e.count for e in ops),
        "kernel_launches": sum(e.count for e in kernels),
        "self_cpu_s": sum(e.self_cpu_time_total for e in table) / 1e6,
        "self_device_s": sum(e.self_device_time_total for e in kernels) / 1e6,
        "top_cpu": rows_by("self_cpu_time_total"),
        "top_device": rows_by("self_device_time_total") if cuda else [],
    }


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
        "--profile",
        action="store_true",
        help="profile one more step of each shape (operator and kernel counts, where the time goes)",
    )
    p.add_argument(
        "--groups",
        type=int,
        nargs="+",
        default=[1, 8],
        help="rows per distinct prompt in a mini-batch (1: all distinct; G: whole groups, as grpo)",
    )
    p.add_argument(
        "--prompt-passes",
        nargs="+",
        default=["auto"],
        choices=get_args(TrainConfig.model_fields["train_prompt_pass"].annotation),
        help="training forward layouts (train_prompt_pass): shared prompt KV cache, or one sequence per row",
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
        shapes = itertools.product(args.prompt_passes, args.mini_batches, args.lengths, args.groups)
        for prompt_pass, m, length, group in shapes:
            t = step_times(policy, prompts, m, length, args.repeats, group, prompt_pass)
            med = statistics.median(sum(x.values()) for x in t)
            split = {name: statistics.median(x[name] for x in t) for name in PHASES}
            rows.append(
                {
                    "finetune": finetune,
                    "dtype": str(policy.dtype).removeprefix("torch."),
                    "device": str(pick_device(args.device)),
                    "mini_batch": m,
                    "completion_len": length,
                    "rows_per_prompt": group,
                    "prompt_pass": resolve_prompt_pass(prompt_pass, policy.device),
                    "prompt_len_mean": prompt_len,
                    "step_s": med,
                    "step_s_all": [sum(x.values()) for x in t],
                    "phases_s": split,
                    "samples_per_s": m / med,
                    "tokens_per_s": m * (prompt_len + length) / med,
                }
            )
            if args.profile:
                rows[-1]["profile"] = profile_step(policy, prompts, m, length, group, prompt_pass)
            print({k: v for k, v in rows[-1].items() if k != "profile"}, flush=True)
        del policy
    print(
        f"{'finetune':>8} {'pass':>8} {'dtype':>9} {'m':>4} {'len':>4} {'G':>3} {'step s':>8} {'fwd s':>7} {'bwd s':>7} "
        f"{'opt s':>7} {'samples/s':>9} {'tokens/s':>9} {'aten ops':>8} {'kernels':>8}"
    )
    for r in rows:
        prof = r.get("profile", {})
        print(
            f"{r['finetune']:>8} {r['prompt_pass']:>8} {r['dtype']:>9} {r['mini_batch']:>4} {r['completion_len']:>4} "
            f"{r['rows_per_prompt']:>3} {r['step_s']:>8.2f} "
            + " ".join(f"{r['phases_s'][name]:>7.3f}" for name in PHASES)
            + f" {r['samples_per_s']:>9.1f} {r['tokens_per_s']:>9.0f}"
            f" {prof.get('aten_op_calls', '-'):>8} {prof.get('kernel_launches', '-'):>8}"
        )
    save({"machine": machine(), "settings": vars(args), "rows": rows}, args.out, "train_step.json")


if __name__ == "__main__":
    main()
