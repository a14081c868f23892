"""Generation throughput of the ``hf`` engine against batch size and dtype, next to plain float32
transformers ``generate`` and the machine's measured matrix-multiply rate.

Every row decodes exactly ``--new-tokens`` tokens (EOS is ignored) so rows compare like for like;
tokens/s counts generated tokens over the whole call, prompt pass included. The hardware limit is
the matmul rate divided by the model's FLOPs per generated token (2 x the parameters a token goes
through); ``of limit`` is the share of it reached.

    python bench/generation.py [--batch-sizes 16 64 128] [--dtypes fp32 bf16] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from common import add_common_args, apply_threads, machine, matmul_rate, pick_device, save, sync  # isort: skip
from rapid_core.config import RunPaths, make_config  # noqa: E402
from rapid_core.engines import Sampling, make_engine  # noqa: E402
from rapid_core.models import load_policy, prompt_token_ids  # noqa: E402
from rapid_core.tasks import load_task  # noqa: E402


def flops_per_token(model) -> float:
    """2 x (decoder parameters + output layer): every generated token goes through each once."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = sum(
        p.numel() for name, p in base.named_parameters() if "lora_" not in name and "embed_tokens" not in name
    )
    n += base.lm_head.weight.numel() if base.config.tie_word_embeddings else 0
    return 2.0 * n


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def make_fixed_length_engine(args, dtype: str, decode: str):
    cfg = make_config(
        model=args.model,
        dtype=dtype,
        device=args.device,
        finetune=args.finetune,
        eval_problems=0,
        rounds=1,
        decode=decode,
    )
    engine = make_engine(cfg, load_policy(cfg))
    engine.eos_ids = engine.eos_ids[:0]  # decode exactly --new-tokens tokens per row
    return engine


def engine_row(args, engine, batch: int, prompts: list[list[int]]) -> dict[str, Any]:
    policy = engine.policy
    engine.micro_batch = batch
    rows = [prompts[i % len(prompts)] for i in range(batch)]
    sampling = Sampling(temperature=1.0, max_new_tokens=args.new_tokens)
    engine.generate(rows, 1, sampling)  # warm-up: builds the sampling copy, captures graphs
    best = None
    out: list = []
    for _ in range(args.repeats):
        seconds = timed(lambda: out.append(engine.generate(rows, 1, sampling)), policy.device)
        stats = out.pop().stats
        if best is None or seconds < best[0]:
            best = (seconds, stats)
    seconds, stats = best
    return {
        "impl": f"hf engine ({engine.decode_option})",
        "decode": engine.decode_option,
        "dtype": str(policy.dtype).removeprefix("torch."),
        "finetune": args.finetune,
        "batch": batch,
        "new_tokens": args.new_tokens,
        "seconds": seconds,
        "tokens_per_s": batch * args.new_tokens / seconds,
        "step_ms": stats.get("decode_ms_per_step"),
        "prefill_s": stats.get("prefill_s"),
        "gen_peak_mem_gb": stats.get("gen_peak_mem_gb"),
        "flops_per_token": flops_per_token(policy.model),
    }


def plain_generate_row(args, batch: int, prompts: list[list[int]], dtype: torch.dtype) -> dict[str, Any]:
    """The reference: ``model.generate`` as a user would call it, at the same batch."""
    from transformers import AutoModelForCausalLM

    from rapid_core.models import dense_dir, load_tokenizer, resolve_model

    source = resolve_model(args.model)
    device = pick_device(args.device)
    tok = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(dense_dir(source), dtype=dtype).to(device).eval()
    rows = [prompts[i % len(prompts)] for i in range(batch)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows], device=device)
    mask = (
        torch.arange(width, device=device)[None, :]
        >= torch.tensor([width - len(r) for r in rows], device=device)[:, None]
    ).long()
    kwargs = dict(
        attention_mask=mask,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        pad_token_id=tok.pad_token_id,
    )
    with torch.no_grad():
        model.generate(
            ids[:2], attention_mask=mask[:2], do_sample=True, max_new_tokens=2, pad_token_id=tok.pad_token_id
        )
        seconds = min(timed(lambda: model.generate(ids, **kwargs), device) for _ in range(args.repeats))
    name, flops = str(dtype).removeprefix("torch."), flops_per_token(model)
    return {
        "impl": f"transformers generate ({name})",
        "decode": "generate",
        "dtype": name,
        "finetune": "none",
        "batch": batch,
        "new_tokens": args.new_tokens,
        "seconds": seconds,
        "tokens_per_s": batch * args.new_tokens / seconds,
        "step_ms": 1e3 * seconds / args.new_tokens,
        "flops_per_token": flops,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--finetune", default="lora", choices=["lora", "full"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 128])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument(
        "--decodes",
        nargs="+",
        default=["dynamic"],
        choices=["dynamic", "static", "compiled", "cuda_graph"],
        help="hf engine decode loops to measure",
    )
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--reference-batches",
        type=int,
        nargs="+",
        default=[64],
        help="batches of the plain float32 generate reference",
    )
    p.add_argument("--reference-dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    args = p.parse_args()
    apply_threads(args.threads)
    device = pick_device(args.device)

    cfg = make_config(model=args.model, eval_problems=0, rounds=1)
    task = load_task(cfg, RunPaths())
    from rapid_core.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(args.model))
    prompts = [prompt_token_ids(tok, r["messages"]) for r in task.train[:64]]

    rates = {
        dt: matmul_rate(device, getattr(torch, name))
        for dt, name in (("fp32", "float32"), ("bf16", "bfloat16"))
    }
    names = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rows = [
        plain_generate_row(args, b, prompts, names[d])
        for d in args.reference_dtypes
        for b in args.reference_batches
    ]
    for r in rows:
        print(r, flush=True)
    for dtype in args.dtypes:
        for decode in args.decodes:
            engine = make_fixed_length_engine(args, dtype, decode)
            for batch in args.batch_sizes:
                rows.append(engine_row(args, engine, batch, prompts))
                print(rows[-1], flush=True)
            del engine
    plain = {
        r["batch"]: r["tokens_per_s"] for r in rows if r["decode"] == "generate" and r["dtype"] == "float32"
    }
    ref = rows[0]["tokens_per_s"]
    for r in rows:
        rate = rates["bf16" if r["dtype"] == "bfloat16" else "fp32"]
        r["limit_tokens_per_s"] = rate * 1e9 / r["flops_per_token"]
        r["share_of_limit"] = r["tokens_per_s"] / r["limit_tokens_per_s"]
        r["limit_step_ms"] = 1e3 * r["batch"] / r["limit_tokens_per_s"]
        r["x_plain_fp32_generate"] = r["tokens_per_s"] / ref
        if r["batch"] in plain:
            r["x_plain_fp32_generate_same_batch"] = r["tokens_per_s"] / plain[r["batch"]]
    print(
        f"matmul rate (2048^3): fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s; "
        f"plain reference: fp32 generate at batch {rows[0]['batch']}"
    )
    print(
        f"{'impl':>32} {'dtype':>9} {'batch':>5} {'tok/s':>9} {'x plain':>7} {'x same-b':>8} {'step ms':>8} "
        f"{'limit ms':>8} {'of limit':>8}"
    )
    for r in rows:
        same = r.get("x_plain_fp32_generate_same_batch")
        print(
            f"{r['impl']:>32} {r['dtype']:>9} {r['batch']:>5} {r['tokens_per_s']:>9.0f} "
            f"{r['x_plain_fp32_generate']:>7.2f} {same if same is None else round(same, 2)!s:>8} "
            f"{(r['step_ms'] or 0):>8.2f} {r['limit_step_ms']:>8.3f} {r['share_of_limit']:>8.1%}"
        )
    save(
        {"machine": machine(), "settings": vars(args), "matmul_gflops": rates, "rows": rows},
        args.out,
        "generation.json",
    )


if __name__ == "__main__":
    main()
