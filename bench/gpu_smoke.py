"""GPU check of the core on a CUDA machine without network or the SmolLM2 file.

Builds a random-weight model with SmolLM2-135M's exact shape (tokenizer from the tiny-random cache),
then reports the hf engine's decode throughput in bf16 by batch size, and one rapid round vs grpo
rounds at the same total samples (time split only: random weights make accuracy meaningless).

    RAPID_CACHE_DIR=.gpu/cache python bench/gpu_smoke.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_random_smollm2(dest: Path) -> str:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rapid_core.models import ensure_tiny_model

    tok = AutoTokenizer.from_pretrained(ensure_tiny_model())
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(dest)
    tok.save_pretrained(dest)
    return str(dest)


def generation_table(model_dir: str, batches: list[int], new_tokens: int) -> list[dict]:
    from rapid_core.config import make_config
    from rapid_core.engines import Sampling, make_engine
    from rapid_core.models import load_policy, prompt_token_ids

    policy = load_policy(make_config(model=model_dir, dtype="bf16"))
    prompt = prompt_token_ids(policy.tokenizer, [{"role": "user", "content": "Calculate 7 + 5."}])
    rows = []
    for b in batches:
        engine = make_engine(make_config(model=model_dir, dtype="bf16", gen_micro_batch=b), policy)
        engine.generate([prompt], 2, Sampling(1.0, 4))  # warm-up
        sync()
        t = time.perf_counter()
        out = engine.generate([prompt], b, Sampling(1.0, new_tokens))
        sync()
        dt = time.perf_counter() - t
        rows.append(
            {
                "batch": b,
                "new_tokens": new_tokens,
                "seconds": dt,
                "tokens": out.generated_tokens,
                "tokens_per_s": out.generated_tokens / dt,
                "ms_per_step": 1000 * dt / new_tokens,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def compare(model_dir: str, total: int, out_root: Path) -> list[dict]:
    from rapid_core.config import RunPaths, make_config
    from rapid_core.trainer import train

    rows = []
    common = dict(
        model=model_dir,
        group_size=8,
        mini_batch_size=64,
        max_new_tokens=64,
        eval_problems=0,
        dtype="bf16",
        max_samples=total,
        rounds=None,
        temperature=1.0,
        gen_micro_batch=512 if torch.cuda.is_available() else 64,
    )
    for algo, extra in (("rapid", {"prompts_per_round": 64}), ("grpo", {}), ("pg", {})):
        out = out_root / algo
        t = time.perf_counter()
        summary = train(make_config(algorithm=algo, **common, **extra), RunPaths(output_dir=out))
        wall = time.perf_counter() - t
        rounds = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        rounds = [r for r in rounds if r["kind"] == "round"]
        split = {k: sum(r[k] for r in rounds) for k in ("gen_s", "reward_s", "train_s", "round_s")}
        gen_tokens = sum(r["gen_tokens_per_s"] * r["gen_s"] for r in rounds)
        rows.append(
            {
                "algorithm": algo,
                "samples": summary["samples"],
                "rounds": summary["rounds"],
                "steps": summary["steps"],
                "wall_s": wall,
                **split,
                "gen_tokens_per_s": gen_tokens / max(split["gen_s"], 1e-9),
                "samples_per_s": summary["samples"] / split["round_s"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    base = next(r for r in rows if r["algorithm"] == "grpo")
    for r in rows:
        r["wall_vs_grpo"] = r["round_s"] / base["round_s"]
        print(
            f"{r['algorithm']:6s} round time {r['round_s']:7.1f} s  gen {r['gen_s']:6.1f}  "
            f"train {r['train_s']:6.1f}  x{r['wall_vs_grpo']:.2f} vs grpo",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("gpu_smoke.json"))
    parser.add_argument("--total-samples", type=int, default=1024)
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    work = Path("/tmp/rapid-gpu")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(device, torch.__version__, flush=True)
    model_dir = build_random_smollm2(work / "smollm2-shape")
    result = {"device": device, "torch": torch.__version__}
    result["generation"] = generation_table(
        model_dir, [int(b) for b in args.batches.split(",")], args.new_tokens
    )
    result["compare"] = compare(model_dir, args.total_samples, work / "runs")
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
