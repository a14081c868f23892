"""rapid vs grpo vs pg on identical settings and the same TOTAL number of sampled completions.

Per algorithm: wall time split into generation / reward / training / other, generated tokens/s,
samples/s, held-out pass@1 and pass@k before and after, and ratios against grpo. With
``--time-to-accuracy`` a small held-out subset is evaluated (greedy pass@1) at every round boundary,
outside the timed wall, and the table adds the training wall time at which each algorithm first
reaches the target (default: grpo's final accuracy on that subset). With ``--trl`` (default: when
``trl`` imports) TRL's GRPOTrainer runs with the same model, LoRA, G, m and max_new_tokens, and its
per-sample wall time sits next to rapid's.

    python bench/compare.py                               # defaults: SmolLM2-135M, arithmetic, < 30 min
    python bench/compare.py --time-to-accuracy            # + wall time to grpo's final accuracy
    python bench/compare.py --total-samples 64 --eval-problems 8 --model tiny-random   # smoke test
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from common import add_common_args, apply_threads, load_average, machine, save  # isort: skip
from rapid_core.callbacks import Callback  # noqa: E402
from rapid_core.config import RunPaths, make_config  # noqa: E402
from rapid_core.evaluation import evaluate  # noqa: E402
from rapid_core.trainer import Trainer  # noqa: E402

ALGORITHMS = ("rapid", "grpo", "pg")


class Clock(Callback):
    """Times the training wall (setup and held-out evaluation excluded) and, when asked, evaluates
    a held-out subset at every round boundary with the trainer's own engine, off the clock."""

    def __init__(self, tta_problems: int):
        self.tta_problems = tta_problems
        self.trainer: Trainer | None = None
        self.off_clock = 0.0
        self.start = self.end = 0.0
        self.rounds: list[dict[str, Any]] = []
        self.tta: list[dict[str, float]] = []

    def wall(self) -> float:
        return time.perf_counter() - self.start - self.off_clock

    def on_start(self, info):
        self.start = time.perf_counter()
        if self.tta_problems:
            self._subset_eval(samples=0)

    def on_eval(self, phase, metrics):
        self.off_clock += metrics.seconds

    def on_round(self, metrics):
        record = {
            k: v for k, v in metrics.to_dict().items() if k not in ("example", "grader_status", "engine")
        }
        self.rounds.append({**record, "wall_s": self.wall()})
        if self.tta_problems:
            self._subset_eval(samples=metrics.samples)

    def on_end(self, summary):
        self.end = time.perf_counter()

    def _subset_eval(self, samples: int) -> None:
        t = self.trainer
        assert t is not None
        started = time.perf_counter()
        wall = self.wall()
        score = subset_pass_at_1(t, self.tta_problems)
        self.tta.append({"wall_s": wall, "samples": samples, "pass@1": score})
        self.off_clock += time.perf_counter() - started


def subset_pass_at_1(t: Trainer, problems: int) -> float:
    """Greedy pass@1 of the trainer's current weights on its first ``problems`` held-out records,
    with the training RNG stream left untouched."""
    with torch.random.fork_rng(devices=[]):
        m = evaluate(
            t.engine,
            t.state.policy.tokenizer,
            t.grader,
            t.task.eval[:problems],
            k=1,
            temperature=t.cfg.temperature,
            max_new_tokens=t.cfg.max_new_tokens,
        )
    return m.pass_at_1


def config_for(algorithm: str, args):
    return make_config(
        model=args.model,
        task=args.task,
        algorithm=algorithm,
        finetune=args.finetune,
        dtype=args.dtype,
        device=args.device,
        group_size=args.group_size,
        mini_batch_size=args.mini_batch,
        prompts_per_round=args.prompts_per_round,
        learning_rate=args.lr,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        max_samples=args.total_samples,
        rounds=None,
        gen_micro_batch=args.gen_micro_batch,
        eval_problems=args.eval_problems,
        eval_k=args.eval_k,
        checkpoint_every=10_000,
        seed=args.seed,
        **dict(args.set),
    )


def run_one(algorithm: str, args, scratch: Path) -> dict[str, Any]:
    out = scratch / algorithm
    shutil.rmtree(out, ignore_errors=True)
    cfg = config_for(algorithm, args)
    clock = Clock(args.tta_problems if args.time_to_accuracy is not None else 0)
    trainer = Trainer(cfg, RunPaths(output_dir=out), callbacks=[clock])
    clock.trainer = trainer
    load = load_average()
    summary = trainer.run()
    rounds = clock.rounds
    split = {k: sum(r[k] for r in rounds) for k in ("gen_s", "reward_s", "train_s")}
    total = clock.end - clock.start - clock.off_clock
    prev, tokens = 0, 0.0
    for r in rounds:
        tokens += r["completion_len_mean"] * (r["samples"] - prev)
        prev = r["samples"]
    return {
        "algorithm": algorithm,
        "rounds": len(rounds),
        "steps": summary["steps"],
        "samples": summary["samples"],
        "batch_ratio": cfg.batch_ratio,
        "inference_batch": cfg.inference_batch,
        "batch_ratios": [r["batch_ratio"] for r in rounds],  # per round: batch_ratio_control=auto moves it
        "wall_s": total,
        **split,
        "other_s": total - sum(split.values()),
        "gen_tokens": tokens,
        "gen_tokens_per_s": tokens / max(split["gen_s"], 1e-9),
        "samples_per_s": summary["samples"] / max(total, 1e-9),
        "eval_before": _short(summary["eval_before"]),
        "eval_after": _short(summary["eval_after"]),
        "curve": [
            {k: r[k] for k in ("wall_s", "samples", "reward_mean", "accuracy", "gen_s", "train_s", "round_s")}
            for r in rounds
        ],
        "tta_curve": clock.tta,
        "load_avg_at_start": load,
        "load_avg_at_end": load_average(),
    }


def _short(ev: dict[str, Any] | None) -> dict[str, Any] | None:
    if not ev:
        return None
    return {k: v for k, v in ev.items() if k.startswith("pass@") or k in ("problems", "sampled_accuracy")}


def _option(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    return key.strip(), yaml.safe_load(value)


def time_to(curve: list[dict[str, float]], target: float) -> float | None:
    return next((p["wall_s"] for p in curve if p["pass@1"] >= target - 1e-9), None)


def ratios(rows: dict[str, dict[str, Any]], k: int) -> dict[str, dict[str, float | None]]:
    base = rows.get("grpo")
    if not base:
        return {}
    out = {}
    for name, r in rows.items():
        div = {
            key: (r[key] / base[key] if base[key] else None)
            for key in ("wall_s", "gen_s", "train_s", "gen_tokens_per_s", "samples_per_s")
        }
        for key in ("pass@1", f"pass@{k}"):
            a, b = (r["eval_after"] or {}).get(key), (base["eval_after"] or {}).get(key)
            div[f"{key}_after_minus_grpo"] = None if a is None or b is None else a - b
        if r.get("time_to_target_s") is not None and base.get("time_to_target_s"):
            div["time_to_target"] = r["time_to_target_s"] / base["time_to_target_s"]
        out[name] = div
    return out


def print_table(result: dict[str, Any]) -> None:
    rows, k = result["algorithms"], result["settings"]["eval_k"]
    head = (
        f"{'alg':>6} {'U':>3} {'samples':>7} {'wall s':>8} {'gen s':>7} {'rew s':>6} {'train s':>8} "
        f"{'other s':>7} {'tok/s':>7} {'smp/s':>6} {'p@1 bef':>7} {'p@1 aft':>7} {f'p@{k} aft':>7} {'tta s':>7}"
    )
    print(head)
    for name, r in rows.items():
        ea, eb = r["eval_after"] or {}, r["eval_before"] or {}
        tta = r.get("time_to_target_s")
        print(
            f"{name:>6} {r['batch_ratio']:>3} {r['samples']:>7} {r['wall_s']:>8.1f} {r['gen_s']:>7.1f} "
            f"{r['reward_s']:>6.2f} {r['train_s']:>8.1f} {r['other_s']:>7.1f} {r['gen_tokens_per_s']:>7.1f} "
            f"{r['samples_per_s']:>6.3f} {eb.get('pass@1', float('nan')):>7.3f} {ea.get('pass@1', float('nan')):>7.3f} "
            f"{ea.get(f'pass@{k}', float('nan')):>7.3f} {'-' if tta is None else f'{tta:.1f}':>7}"
        )
    for name, d in result["ratios_vs_grpo"].items():
        print(
            f"vs grpo {name:>6}: "
            + ", ".join(f"{key}={'-' if v is None else f'{v:.3f}'}" for key, v in d.items())
        )
    if result.get("trl"):
        t = result["trl"]
        print(
            f"TRL GRPOTrainer: {t['per_sample_s']:.3f} s/sample ({t['steps']} steps, {t['samples']} samples); "
            f"rapid full round: {result['rapid_per_sample_s']:.3f} s/sample; ratio rapid/trl = {t['rapid_over_trl']:.3f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--task", default="arithmetic")
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    p.add_argument("--finetune", default="lora", choices=["lora", "full"])
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--mini-batch", type=int, default=32)
    p.add_argument(
        "--prompts-per-round",
        type=int,
        default=16,
        help="rapid's P (B = P * G; ratio U = B / m); the first round's with batch_ratio_control=auto "
        "(the default; --set batch_ratio_control=fixed keeps it)",
    )
    p.add_argument("--total-samples", type=int, default=384)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--gen-micro-batch", type=int, default=128)
    p.add_argument("--eval-problems", type=int, default=60)
    p.add_argument("--eval-k", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--time-to-accuracy",
        type=float,
        nargs="?",
        const=-1.0,
        default=None,
        help="report wall time to this held-out pass@1 (no value: grpo's final subset accuracy)",
    )
    p.add_argument("--tta-problems", type=int, default=30, help="held-out subset evaluated each round")
    p.add_argument("--trl", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--trl-steps", type=int, default=3, help="GRPOTrainer optimizer steps to time")
    p.add_argument(
        "--set",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other TrainConfig option, for every algorithm (value parsed as YAML)",
    )
    p.add_argument("--keep-runs", default=None, help="keep run directories here (default: a temp dir)")
    args = p.parse_args()
    apply_threads(args.threads)

    scratch = Path(args.keep_runs or tempfile.mkdtemp(prefix="rapid-compare-"))
    rows: dict[str, dict[str, Any]] = {}
    for alg in args.algorithms:
        print(f"--- {alg}", flush=True)
        rows[alg] = run_one(alg, args, scratch)
        print(
            json.dumps({k: v for k, v in rows[alg].items() if k not in ("curve", "tta_curve")}, default=str)
        )
    target = None
    if args.time_to_accuracy is not None:
        target = args.time_to_accuracy
        if target < 0:
            ref = rows.get("grpo") or next(iter(rows.values()))
            target = ref["tta_curve"][-1]["pass@1"] if ref["tta_curve"] else None
        for r in rows.values():
            r["time_to_target_s"] = None if target is None else time_to(r["tta_curve"], target)
    result: dict[str, Any] = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items()},
        "tta_target_pass@1": target,
        "algorithms": rows,
        "ratios_vs_grpo": ratios(rows, args.eval_k),
    }
    if "rapid" in rows:
        rr = rows["rapid"]
        result["rapid_per_sample_s"] = sum(c["round_s"] for c in rr["curve"]) / max(rr["samples"], 1)
    if args.trl != "off":
        from trl_column import trl_available, trl_per_sample

        if trl_available():
            t = trl_per_sample(args)
            t["rapid_over_trl"] = result.get("rapid_per_sample_s", float("nan")) / t["per_sample_s"]
            result["trl"] = t
        elif args.trl == "on":
            raise SystemExit("--trl on, but trl does not import")
        else:
            result["trl"] = None
            print("trl not importable: TRL column skipped")
    result["machine"]["load_avg_1_5_15_end"] = load_average()
    print_table(result)
    save(result, args.out, "compare.json")
    if not args.keep_runs:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
