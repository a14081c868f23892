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
    n = sum(p.numel() for name, p in base.named_parameters() if "lora_" not in name and "embed_tokens" not in name)
    n += base.lm_head.weight.numel() if base.config.tie_word_embeddings else 0
    return 2.0 * n


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def make_fixed_length_engine(args, dtype: str):
    cfg = make_config(model=args.model, dtype=dtype, device=args.device, finetune=args.finetune,
                      eval_problems=0, rounds=1)
    engine = make_engine(cfg, load_policy(cfg))
    engine.eos_ids = engine.eos_ids[:0]  # decode exactly --new-tokens tokens per row
    return engine


def engine_row(args, engine, batch: int, prompts: list[list[int]]) -> dict[str, Any]:
    policy = engine.policy
    engine.micro_batch = batch
    rows = [prompts[i % len(prompts)] for i in range(batch)]
    sampling = Sampling(temperature=1.0, max_new_tokens=args.new_tokens)
    engine.generate(rows[:2], 1, Sampling(temperature=1.0, max_new_tokens=2))  # warm-up, builds the copy
    seconds = min(timed(lambda: engine.generate(rows, 1, sampling), policy.device) for _ in range(args.repeats))
    return {"impl": "hf engine", "dtype": str(policy.dtype).removeprefix("torch."), "finetune": args.finetune,
            "batch": batch, "new_tokens": args.new_tokens, "seconds": seconds,
            "tokens_per_s": batch * args.new_tokens / seconds, "flops_per_token": flops_per_token(policy.model)}


def plain_generate_row(args, batch: int, prompts: list[list[int]]) -> dict[str, Any]:
    """The reference: the float32 model and ``model.generate`` as a user would call it."""
    from transformers import AutoModelForCausalLM

    from rapid_core.models import dense_dir, load_tokenizer, resolve_model

    source = resolve_model(args.model)
    device = pick_device(args.device)
    tok = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(dense_dir(source), dtype=torch.float32).to(device).eval()
    rows = [prompts[i % len(prompts)] for i in range(batch)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows], device=device)
    mask = (torch.arange(width, device=device)[None, :] >= torch.tensor([width - len(r) for r in rows],
                                                                       device=device)[:, None]).long()
    kwargs = dict(attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=args.new_tokens,
                  min_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model.generate(ids[:2], attention_mask=mask[:2], do_sample=True, max_new_tokens=2,
                       pad_token_id=tok.pad_token_id)
        seconds = min(timed(lambda: model.generate(ids, **kwargs), device) for _ in range(args.repeats))
    return {"impl": "transformers generate", "dtype": "float32", "finetune": "none", "batch": batch,
            "new_tokens": args.new_tokens, "seconds": seconds, "tokens_per_s": batch * args.new_tokens / seconds,
            "flops_per_token": flops_per_token(model)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--finetune", default="lora", choices=["lora", "full"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 128])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--reference-batch", type=int, default=64, help="batch of the plain generate reference")
    args = p.parse_args()
    apply_threads(args.threads)
    device = pick_device(args.device)

    cfg = make_config(model=args.model, eval_problems=0, rounds=1)
    task = load_task(cfg, RunPaths())
    from rapid_core.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(args.model))
    prompts = [prompt_token_ids(tok, r["messages"]) for r in task.train[:64]]

    rates = {dt: matmul_rate(device, getattr(torch, name)) for dt, name in (("fp32", "float32"), ("bf16", "bfloat16"))}
    rows = [plain_generate_row(args, args.reference_batch, prompts)]
    for dtype in args.dtypes:
        engine = make_fixed_length_engine(args, dtype)
        for batch in args.batch_sizes:
            rows.append(engine_row(args, engine, batch, prompts))
            print(rows[-1], flush=True)
    ref = rows[0]["tokens_per_s"]
    for r in rows:
        rate = rates["bf16" if r["dtype"] == "bfloat16" else "fp32"]
        r["limit_tokens_per_s"] = rate * 1e9 / r["flops_per_token"]
        r["share_of_limit"] = r["tokens_per_s"] / r["limit_tokens_per_s"]
        r["x_plain_fp32_generate"] = r["tokens_per_s"] / ref
    print(f"matmul rate (2048^3): fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s")
    print(f"{'impl':>22} {'dtype':>9} {'batch':>5} {'tok/s':>8} {'x plain':>7} {'limit tok/s':>11} {'of limit':>8}")
    for r in rows:
        print(f"{r['impl']:>22} {r['dtype']:>9} {r['batch']:>5} {r['tokens_per_s']:>8.0f} "
              f"{r['x_plain_fp32_generate']:>7.2f} {r['limit_tokens_per_s']:>11.0f} {r['share_of_limit']:>8.1%}")
    save({"machine": machine(), "settings": vars(args), "matmul_gflops": rates, "rows": rows},
         args.out, "generation.json")


if __name__ == "__main__":
    main()
