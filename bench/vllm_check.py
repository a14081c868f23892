"""Check the real ``vllm`` engine against the Rollouts contract, where ``import vllm`` works.

Two rounds as the trainer runs them (sync_policy, generate P x G at temperature T) and one greedy
evaluation call, on the model given. Before each round the LoRA B weights get random values, so the
adapter changes the distribution: an adapter vLLM failed to load, or an older one it served from its
cache, shows up as a large KL. Checked per round:
- rows prompt-major, one log-prob per completion token, finite and <= 0;
- "stop" exactly when a completion ends with EOS, "length" otherwise at max_new_tokens;
- behaviour log-probs vs a fresh forward pass of the policy at staleness 0 (the training step's own
  ``completion_logps`` at T): approximate KL k3 = mean((r - 1) - log r), r = pi / mu, must be small,
  and at least 10x smaller than against the weights before the perturbation (the stale adapter);
- greedy: log-probs at temperature 1 against the policy's.
Thresholds from the hf engine in bf16 (SmolLM2-135M, CPU, 4 x 4 samples, 12 tokens): k3 0.002-0.005,
k3 vs the stale adapter 0.15-0.27, greedy mean |log-prob difference| at T = 1: 0.017.
Without vllm it prints "vllm not importable: skipped" and exits 0. ``--engine hf`` runs the same
checks on the hf engine (a CPU dry run of this script).

    python bench/vllm_check.py --model smollm2-135m-instruct   # JSON: bench/results/vllm_check.json (+ $OUT)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from common import add_common_args, apply_threads, machine, save  # isort: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="alias, local directory or .gguf file")
    p.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    p.add_argument("--prompts", type=int, default=16, help="P prompts per round")
    p.add_argument("--group-size", type=int, default=4, help="G samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument(
        "--lora-b-std", type=float, default=0.05, help="std of the random LoRA B weights per round"
    )
    p.add_argument("--max-kl", type=float, default=0.01, help="largest k3 allowed at staleness 0")
    add_common_args(p)
    return p.parse_args()


def k3(mu: list[float], pi: list[float]) -> float:
    """Approximate KL(mu || pi) from tokens sampled by mu: mean((r - 1) - log r), r = pi / mu."""
    terms = [math.expm1(p - m) - (p - m) for m, p in zip(mu, pi, strict=True)]
    return sum(terms) / max(len(terms), 1)


def policy_logps(policy, rollouts, temperature: float) -> list[list[float]]:
    import torch

    from rapid_core.logprobs import completion_logps

    with torch.no_grad():
        logp, _, mask = completion_logps(policy, rollouts.prompt_ids, rollouts.completion_ids, temperature)
    return [logp[i, mask[i]].tolist() for i in range(len(rollouts))]


def contract_failures(rollouts, prompts, n: int, max_new: int, eos_ids: set[int]) -> list[str]:
    bad = []
    if len(rollouts) != len(prompts) * n:
        bad.append(f"{len(rollouts)} rows for {len(prompts)} prompts x {n}")
    for r in range(len(rollouts)):
        ids, lps, reason = rollouts.completion_ids[r], rollouts.behaviour_logps[r], rollouts.finish_reasons[r]
        if rollouts.prompt_ids[r] != prompts[r // n]:
            bad.append(f"row {r}: not prompt {r // n} (rows must be prompt-major)")
        if not ids or len(lps) != len(ids) or not all(math.isfinite(x) and x <= 0 for x in lps):
            bad.append(f"row {r}: {len(ids)} tokens, {len(lps)} log-probs, or a log-prob not finite and <= 0")
        if any(t in eos_ids for t in ids[:-1]):
            bad.append(f"row {r}: EOS inside the completion")
        ends = bool(ids) and ids[-1] in eos_ids
        if (reason == "stop") != ends or (reason == "length" and len(ids) != max_new):
            bad.append(f"row {r}: finish {reason!r} with {len(ids)} tokens, ends with EOS: {ends}")
    return bad


def randomize_lora_b(policy, std: float, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def main() -> int:
    args = parse_args()
    version = None
    if args.engine == "vllm":
        try:
            import vllm
        except Exception as err:  # not installed, or installed without a working CUDA stack
            print(f"vllm not importable: skipped ({type(err).__name__}: {err})")
            return 0
        version = vllm.__version__
        print(f"vllm {version}")
    import torch

    apply_threads(args.threads)

    from rapid_core.config import RunPaths, make_config
    from rapid_core.engines import Sampling, make_engine
    from rapid_core.models import load_policy, prompt_token_ids
    from rapid_core.tasks import load_task

    cfg = make_config(
        model=args.model,
        engine=args.engine,
        device=args.device,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        group_size=args.group_size,
        eval_problems=0,
    )
    policy = load_policy(cfg)
    t0 = time.perf_counter()
    engine = make_engine(cfg, policy)  # the trainer's construction (Engine.from_config)
    build_s = time.perf_counter() - t0
    prompts = [
        prompt_token_ids(policy.tokenizer, r["messages"])
        for r in load_task(cfg, RunPaths()).train[: args.prompts]
    ]
    eos = policy.model.generation_config.eos_token_id
    eos_ids = {
        i
        for i in [*(eos if isinstance(eos, list) else [eos]), policy.tokenizer.eos_token_id]
        if i is not None
    }
    result = {
        "engine": args.engine,
        "vllm": version,
        "model": args.model,
        "device": str(policy.device),
        "dtype": str(policy.dtype),
        "prompts": len(prompts),
        "group_size": args.group_size,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "build_s": round(build_s, 2),
        "rounds": [],
        "machine": machine(),
    }
    failures: list[str] = []
    for k in range(2):
        before = policy.trainable_state()
        randomize_lora_b(policy, args.lora_b_std, seed=k)
        engine.sync_policy(k)
        t0 = time.perf_counter()
        out = engine.generate(prompts, args.group_size, Sampling(args.temperature, args.max_new_tokens))
        gen_s = time.perf_counter() - t0
        failures += [
            f"round {k}: {f}"
            for f in contract_failures(out, prompts, args.group_size, args.max_new_tokens, eos_ids)
        ]
        mu = [x for row in out.behaviour_logps for x in row]
        pi = [x for row in policy_logps(policy, out, args.temperature) for x in row]
        now = policy.trainable_state()
        policy.load_trainable_state(before)  # the adapter of the previous round (round 0: B = 0, the base)
        stale = [x for row in policy_logps(policy, out, args.temperature) for x in row]
        policy.load_trainable_state(now)
        rec = {
            "round": k,
            "samples": len(out),
            "tokens": len(mu),
            "gen_s": round(gen_s, 3),
            "tokens_per_s": round(len(mu) / gen_s, 1),
            "stop_share": out.finish_reasons.count("stop") / len(out),
            "k1": sum(m - p for m, p in zip(mu, pi, strict=True)) / len(mu),
            "k3": k3(mu, pi),
            "max_abs_diff": max(abs(m - p) for m, p in zip(mu, pi, strict=True)),
            "k3_stale": k3(mu, stale),
        }
        if policy.device.type == "cuda":
            rec["gpu_free_gib_after"] = round(torch.cuda.mem_get_info()[0] / 2**30, 2)  # vLLM asleep again
        result["rounds"].append(rec)
        if not rec["k3"] < args.max_kl:
            failures.append(f"round {k}: k3 {rec['k3']:.4g} vs the policy at staleness 0 >= {args.max_kl}")
        if not rec["k3_stale"] > 10 * rec["k3"]:
            failures.append(
                f"round {k}: k3 vs the stale adapter {rec['k3_stale']:.4g} is not 10x the k3 vs the "
                f"current one {rec['k3']:.4g}: the served adapter may not be the current one"
            )
        print(json.dumps(rec))
    greedy = engine.generate(prompts, 1, Sampling(max_new_tokens=args.max_new_tokens, greedy=True))
    failures += [f"greedy: {f}" for f in contract_failures(greedy, prompts, 1, args.max_new_tokens, eos_ids)]
    mu = [x for row in greedy.behaviour_logps for x in row]
    pi = [x for row in policy_logps(policy, greedy, 1.0) for x in row]
    diffs = [abs(m - p) for m, p in zip(mu, pi, strict=True)]
    result["greedy"] = {
        "tokens": len(mu),
        "mean_abs_diff_at_t1": sum(diffs) / len(diffs),
        "max_abs_diff_at_t1": max(diffs),
    }
    print(json.dumps({"greedy": result["greedy"]}))
    if not result["greedy"]["mean_abs_diff_at_t1"] < 0.05:  # log-probs at T = 1, not at the sampling T
        failures.append(
            f"greedy: log-probs differ from the policy's at T = 1 by {result['greedy']['mean_abs_diff_at_t1']:.3g} "
            "on average"
        )
    result["failures"] = failures
    save(result, args.out, "vllm_check.json")
    print("\n".join(["FAIL " + f for f in failures] or ["OK: the engine keeps the Rollouts contract"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
