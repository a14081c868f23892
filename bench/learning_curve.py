"""Held-out accuracy at every few rounds of one run, to see where a job's accuracy peaks and where
it ends (docs/main-job.md). Evaluation runs off the clock with the trainer's own engine: greedy
pass@1 on the first ``--eval-problems`` held-out problems.

    python bench/learning_curve.py --every 3 --set rounds=12 --set learning_rate=3e-4 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from compare import subset_pass_at_1  # isort: skip
from rapid_core.callbacks import Callback
from rapid_core.config import RunPaths, make_config
from rapid_core.trainer import Trainer


class Curve(Callback):
    def __init__(self, every: int, problems: int, out: Path):
        self.every, self.problems, self.out = every, problems, out
        self.trainer: Trainer | None = None
        self.start, self.off_clock = 0.0, 0.0

    def on_start(self, info):
        self.start = time.perf_counter()
        self._eval({"round": -1})

    def on_round(self, metrics):
        m = metrics.to_dict()
        row = {
            k: m.get(k)
            for k in ("round", "reward_mean", "truncated_share", "completion_len_mean", "gen_s", "train_s")
        }
        row["example"] = str(m.get("example"))[:160]
        if (m["round"] + 1) % self.every == 0:
            self._eval(row)
        else:
            self._write(row)

    def _eval(self, row):
        started = time.perf_counter()
        score = subset_pass_at_1(self.trainer, self.problems)
        self.off_clock += time.perf_counter() - started
        self._write({**row, "pass@1": score})

    def _write(self, row):
        row["wall_s"] = round(time.perf_counter() - self.start - self.off_clock, 1)
        row["load1"] = round(__import__("os").getloadavg()[0], 2)
        with self.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--eval-problems", type=int, default=94)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    sets = {k.strip(): yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    base = {
        "rounds": 12,
        "prompts_per_round": 16,
        "group_size": 8,
        "mini_batch_size": 32,
        "max_new_tokens": 16,
        "temperature": 0.7,
        "learning_rate": 3e-4,
        "eval_problems": 0,
        "torch_threads": 1,
        "checkpoint_every": 10_000,
    }
    cfg = make_config(model="smollm2-135m-instruct", task="arithmetic", seed=args.seed, **{**base, **sets})
    args.out.mkdir(parents=True, exist_ok=True)
    curve = Curve(args.every, args.eval_problems, args.out / "curve.jsonl")
    trainer = Trainer(cfg, RunPaths(output_dir=args.out / "run"), callbacks=[curve])
    curve.trainer = trainer
    trainer.run()


if __name__ == "__main__":
    main()
