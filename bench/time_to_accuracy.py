"""Time to accuracy with seeds: rapid with batch_ratio_control=auto and with fixed U, grpo and pg, at
the same total samples, several seeds each.

Each (setting, seed) runs in its own process (``--jobs`` at once) and saves its JSON under
``--runs-dir`` (a finished run is not run again, so an interrupted sweep continues). Every run
evaluates greedy pass@1 on a held-out subset every ``--eval-every`` samples and after the last
round, off the clock (``compare.Clock``), and greedy pass@1 on ``--eval-problems`` held-out problems
after training. The summary gives per setting the mean and spread (min..max) over seeds of the
wall time and its split, the final accuracy, and the wall time at which the subset accuracy first
reaches the target (``--target``, and grpo's mean final subset accuracy), the wall time from which
it stays at or above ``--target`` to the end ("held from"), also in process CPU
seconds (``cpu_s``: with 1 thread the work done, which a shared CPU's load distorts far less); a plot of subset accuracy
against wall seconds, one curve (the mean over seeds) per setting. With ``--target``, each auto
setting is also compared with every other setting seed by seed (``paired``): its time to the
target as a ratio of means with a 90 % bootstrap interval, on how many seeds it got there first, and
the difference in final pass@1 with its interval; and the same time ratio over every seed, a run
that never reaches the target counted at its last evaluation (``restricted``). ``--from-results``
summarises a saved sweep again with the current statistics, running nothing.

    python bench/time_to_accuracy.py --threads 1 --jobs 2     # all settings, seeds 0 1 2
    python bench/time_to_accuracy.py --settings rapid:auto grpo --seeds 0 --total-samples 64 \\
        --model tiny-random --eval-problems 8 --tta-problems 8 --eval-every 32      # smoke test
    python bench/time_to_accuracy.py --from-results bench/results/time_to_accuracy.json --plot /tmp/tta.png

Settings: ``rapid:auto``, ``rapid:U=<n>`` (fixed), ``grpo``, ``pg``; a ``+samples`` or ``+groups``
suffix sets minibatch_grouping (default ``--grouping``), ``+drop`` sets drop_zero_std (groups whose
rewards are all equal are not trained on), ``+pen`` sets the soft overlong penalty
(``overlong_buffer`` = ``--overlong-buffer``), ``+mask`` sets mask_truncated, e.g. ``rapid:auto+drop+pen``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import apply_threads, load_average, machine, save  # isort: skip
from compare import Clock  # noqa: E402

from rapid_core.config import RunPaths, make_config  # noqa: E402
from rapid_core.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("rapid:auto", "rapid:U=2", "rapid:U=4", "rapid:U=8", "rapid:U=16", "grpo", "pg")


def setting_values(setting: str, args) -> dict[str, Any]:
    """TrainConfig values of a setting name."""
    name, *flags = setting.split("+")
    unknown = set(flags) - {"samples", "groups", "drop", "pen", "mask"}
    if unknown:
        raise SystemExit(f"time_to_accuracy: unknown setting suffix(es) {sorted(unknown)} in {setting!r}")
    grouping = next((f for f in flags if f in ("samples", "groups")), args.grouping)
    algorithm, _, ratio = name.partition(":")
    m, g = args.mini_batch, args.group_size
    values: dict[str, Any] = {
        "algorithm": algorithm,
        "minibatch_grouping": grouping,
        "drop_zero_std": "drop" in flags,
        "overlong_buffer": args.overlong_buffer if "pen" in flags else 0,
        "mask_truncated": "mask" in flags,
    }
    if algorithm == "rapid" and ratio == "auto":
        values |= {"batch_ratio_control": "auto", "prompts_per_round": args.start_u * m // g}
    elif algorithm == "rapid":
        values |= {
            "batch_ratio_control": "fixed",
            "prompts_per_round": int(ratio.removeprefix("U=")) * m // g,
        }
    return values


class EveryClock(Clock):
    """``compare.Clock`` that evaluates the subset every ``every`` samples (and after the last round)."""

    def __init__(self, tta_problems: int, every: int, total: int):
        super().__init__(tta_problems)
        self.every, self.total, self.next_at = every, total, every
        self.cpu_start = self.cpu_off = self.cpu = 0.0

    def cpu_s(self) -> float:
        """Process CPU seconds of training so far, evaluations excluded: with 1 torch thread the work
        done, which other jobs on a shared CPU slow far less than the wall time."""
        return time.process_time() - self.cpu_start - self.cpu_off

    def on_start(self, info):
        self.cpu_start = time.process_time()
        super().on_start(info)

    def _subset_eval(self, samples: int) -> None:
        started, cpu = time.process_time(), self.cpu_s()
        super()._subset_eval(samples)
        self.tta[-1]["cpu_s"] = cpu
        self.cpu_off += time.process_time() - started

    def on_round(self, metrics):
        record = {
            k: v for k, v in metrics.to_dict().items() if k not in ("example", "grader_status", "engine")
        }
        self.cpu = self.cpu_s()
        self.rounds.append({**record, "wall_s": self.wall(), "cpu_s": self.cpu})
        if metrics.samples >= self.next_at or metrics.samples >= self.total:
            self._subset_eval(samples=metrics.samples)
            while self.next_at <= metrics.samples:
                self.next_at += self.every


def run_one(setting: str, seed: int, args) -> dict[str, Any]:
    out = Path(args.runs_dir) / "scratch" / f"{setting.replace(':', '_').replace('=', '')}-s{seed}"
    cfg = make_config(
        model=args.model,
        task=args.task,
        task_options=json.loads(args.task_options),
        system_prompt=args.system_prompt,
        group_size=args.group_size,
        mini_batch_size=args.mini_batch,
        learning_rate=args.lr,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        max_samples=args.total_samples,
        rounds=None,
        gen_micro_batch=args.gen_micro_batch,
        eval_problems=args.eval_problems,
        eval_k=1,
        eval_before=False,
        checkpoint_every=10_000,
        keep_checkpoints=1,
        seed=seed,
        torch_threads=args.threads or 0,
        **setting_values(setting, args),
    )
    clock = EveryClock(args.tta_problems, args.eval_every, args.total_samples)
    trainer = Trainer(cfg, RunPaths(output_dir=out), callbacks=[clock])
    clock.trainer = trainer
    load = load_average()
    summary = trainer.run()
    split = {k: sum(r[k] for r in clock.rounds) for k in ("gen_s", "reward_s", "train_s")}
    wall = clock.end - clock.start - clock.off_clock
    return {
        "setting": setting,
        "seed": seed,
        "samples": summary["samples"],
        "steps": summary["steps"],
        "rounds": len(clock.rounds),
        "wall_s": wall,
        "cpu_s": clock.cpu,
        **split,
        "other_s": wall - sum(split.values()),
        "pass@1_after": summary["eval_after"]["pass@1"] if summary["eval_after"] else None,
        "subset_curve": clock.tta,
        "rounds_detail": [
            {
                k: r[k]
                for k in (
                    "samples",
                    "wall_s",
                    "batch_ratio",
                    "batch_decision",
                    "gen_s",
                    "train_s",
                    "accuracy",
                    "completion_len_mean",
                    "truncated_share",
                    "frac_zero_std",
                    "overlong_penalty_mean",
                )
            }
            for r in clock.rounds
        ],
        "load_avg_start": load,
        "load_avg_end": load_average(),
    }


def time_to(curve: list[dict[str, float]], target: float, clock: str = "wall_s") -> float | None:
    """The first evaluation point's ``clock`` (wall_s, cpu_s or samples) where the subset reached target."""
    return next((p.get(clock) for p in curve if p["pass@1"] >= target - 1e-9), None)


def held_from(curve: list[dict[str, float]], target: float) -> float | None:
    """Wall seconds of the evaluation point from which the subset stays at or above target to the end.

    A run that touches the target and falls back under it is not there yet: this is the time to
    reach the target and keep it, which ``time_to`` alone does not show."""
    held = None
    for p in curve:
        if p["pass@1"] < target - 1e-9:
            held = None
        elif held is None:
            held = p["wall_s"]
    return held


def spread(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    if not got:
        return {"mean": None, "min": None, "max": None, "n": 0, "of": len(values)}
    return {"mean": statistics.fmean(got), "min": min(got), "max": max(got), "n": len(got), "of": len(values)}


def summarise(runs: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["setting"], []).append(r)
    grpo_final = [r["subset_curve"][-1]["pass@1"] for r in by.get("grpo", [])]
    grpo_target = statistics.fmean(grpo_final) if grpo_final else None
    table: dict[str, Any] = {}
    for name, rs in by.items():
        row = {
            k: spread([r.get(k) for r in rs])
            for k in ("wall_s", "cpu_s", "gen_s", "reward_s", "train_s", "other_s", "pass@1_after", "samples")
        }
        row["subset_final"] = spread([r["subset_curve"][-1]["pass@1"] for r in rs])
        if target is not None:
            row["time_to_target_s"] = spread([time_to(r["subset_curve"], target) for r in rs])
            # Samples to the target do not depend on the box's speed: time to it = samples x seconds
            # per sample, and only the second factor is the machine's (or the batch size's) doing.
            row["samples_to_target"] = spread([time_to(r["subset_curve"], target, "samples") for r in rs])
            row["time_to_target_by_seed"] = {r["seed"]: time_to(r["subset_curve"], target) for r in rs}
            row["held_from_s"] = spread([held_from(r["subset_curve"], target) for r in rs])
        if grpo_target is not None:
            row["time_to_grpo_final_s"] = spread([time_to(r["subset_curve"], grpo_target) for r in rs])
            row["cpu_to_grpo_final_s"] = spread(
                [time_to(r["subset_curve"], grpo_target, "cpu_s") for r in rs]
            )
        row["seeds"] = sorted(r["seed"] for r in rs)
        row["batch_ratios"] = {r["seed"]: [d["batch_ratio"] for d in r["rounds_detail"]] for r in rs}
        table[name] = row
    result = {"target": target, "grpo_final_subset_mean": grpo_target, "settings": table}
    if target is not None:
        result["paired"] = paired_all(runs, target)
    return result


def _interval(values: list[float], stat, draws: int = 10_000) -> tuple[float, float]:
    """90 % percentile bootstrap interval of ``stat`` over ``values`` resampled with replacement."""
    rng = random.Random(0)
    boots = sorted(stat(rng.choices(values, k=len(values))) for _ in range(draws))
    return boots[int(0.05 * draws)], boots[int(0.95 * draws) - 1]


def _ratio_of_means(pairs: list[tuple[float, float]]) -> float:
    return statistics.fmean(x for x, _ in pairs) / statistics.fmean(y for _, y in pairs)


def paired(runs: list[dict[str, Any]], a: str, b: str, target: float) -> dict[str, Any]:
    """Setting ``a`` against ``b`` seed by seed (a seed fixes the data order and the initial draws in
    both, so pairs are less noisy than two independent means).

    - ``time_ratio``: a's mean time to the target over b's, over the seeds where both reach it,
      with a 90 % bootstrap interval over those seeds;
    - ``restricted_ratio``: the same over every paired seed, a run that never reaches the target
      counted at its last evaluation (the restricted mean time of survival analysis): dropping the
      seeds where one setting misses the target flatters that setting;
    - ``first``: on how many seeds a reached the target earlier / later than b (never = later);
    - ``final_diff``: mean of a's pass@1 after minus b's, with its 90 % bootstrap interval."""
    ra = {r["seed"]: r for r in runs if r["setting"] == a}
    rb = {r["seed"]: r for r in runs if r["setting"] == b}
    seeds = sorted(set(ra) & set(rb))
    times = [(time_to(ra[s]["subset_curve"], target), time_to(rb[s]["subset_curve"], target)) for s in seeds]
    both = [(x, y) for x, y in times if x is not None and y is not None]
    out: dict[str, Any] = {"a": a, "b": b, "seeds": len(seeds), "both_reach": len(both)}
    if len(both) >= 2:
        out["time_ratio"] = _ratio_of_means(both)
        out["time_ratio_90"] = _interval(both, _ratio_of_means)
    if len(seeds) >= 2:

        def or_end(t: float | None, r: dict[str, Any]) -> float:
            return r["subset_curve"][-1]["wall_s"] if t is None else t

        capped = [(or_end(x, ra[s]), or_end(y, rb[s])) for s, (x, y) in zip(seeds, times, strict=True)]
        out["restricted_ratio"] = _ratio_of_means(capped)
        out["restricted_ratio_90"] = _interval(capped, _ratio_of_means)
    never = float("inf")
    ranked = [(never if x is None else x, never if y is None else y) for x, y in times]
    earlier, later = sum(x < y for x, y in ranked), sum(x > y for x, y in ranked)
    out["first"] = {"earlier": earlier, "later": later, "tied": len(times) - earlier - later}
    diffs = [ra[s]["pass@1_after"] - rb[s]["pass@1_after"] for s in seeds]
    if len(diffs) >= 2:
        out["final_diff"] = statistics.fmean(diffs)
        out["final_diff_90"] = _interval(diffs, statistics.fmean)
    return out


def paired_all(runs: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """Every auto setting against every other setting."""
    names = list(dict.fromkeys(r["setting"] for r in runs))
    return [paired(runs, a, b, target) for a in names if ":auto" in a for b in names if b != a]


def print_paired(rows: list[dict[str, Any]], target: float) -> None:
    print(
        f"\n| paired by seed | seeds | time to {target}: ratio of means (90 % interval), seeds both reach | "
        "restricted: never = last evaluation, every seed | "
        "reached first: earlier / later / tied | pass@1 after: difference (90 % interval) |"
    )
    print("|---|---:|---|---|---|---|")
    for r in rows:
        ratio = (
            f"{r['time_ratio']:.2f}x ({r['time_ratio_90'][0]:.2f}..{r['time_ratio_90'][1]:.2f}), {r['both_reach']}"
            if "time_ratio" in r
            else f"-, {r['both_reach']}"
        )
        restricted = (
            f"{r['restricted_ratio']:.2f}x ({r['restricted_ratio_90'][0]:.2f}..{r['restricted_ratio_90'][1]:.2f})"
            if "restricted_ratio" in r
            else "-"
        )
        diff = (
            f"{r['final_diff']:+.3f} ({r['final_diff_90'][0]:+.3f}..{r['final_diff_90'][1]:+.3f})"
            if "final_diff" in r
            else "-"
        )
        f = r["first"]
        print(
            f"| {r['a']} vs {r['b']} | {r['seeds']} | {ratio} | {restricted} | {f['earlier']} / {f['later']} / {f['tied']} | {diff} |"
        )


def fmt(s: dict[str, Any], digits: int = 1) -> str:
    if s["mean"] is None:
        return "never"
    text = f"{s['mean']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"
    return text + (f" [{s['n']}/{s['of']}]" if s["n"] < s["of"] else "")


def print_table(summary: dict[str, Any]) -> None:
    t, g = summary["target"], summary["grpo_final_subset_mean"]
    g_text = "-" if g is None else f"{g:.3f}"
    print(
        f"| setting | seeds | wall s | CPU s | gen s | train s | pass@1 after | subset final | to {t} s | "
        f"samples to {t} | held {t} from s | to grpo {g_text} s | CPU s to grpo {g_text} |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in summary["settings"].items():
        to_t = fmt(r["time_to_target_s"]) if "time_to_target_s" in r else "-"
        n_t = fmt(r["samples_to_target"], 0) if "samples_to_target" in r else "-"
        held = fmt(r["held_from_s"]) if "held_from_s" in r else "-"
        to_g = fmt(r["time_to_grpo_final_s"]) if "time_to_grpo_final_s" in r else "-"
        cpu_g = fmt(r["cpu_to_grpo_final_s"]) if "cpu_to_grpo_final_s" in r else "-"
        print(
            f"| {name} | {len(r['seeds'])} | {fmt(r['wall_s'])} | {fmt(r['cpu_s'])} | {fmt(r['gen_s'])} | "
            f"{fmt(r['train_s'])} | {fmt(r['pass@1_after'], 3)} | {fmt(r['subset_final'], 3)} | {to_t} | "
            f"{n_t} | {held} | {to_g} | {cpu_g} |"
        )


def plot(runs: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in summary["settings"]:
        curves = [r["subset_curve"] for r in runs if r["setting"] == name]
        n = min(len(c) for c in curves)  # same eval points per seed (same samples): mean pointwise
        xs = [statistics.fmean(c[i]["wall_s"] for c in curves) for i in range(n)]
        ys = [statistics.fmean(c[i]["pass@1"] for c in curves) for i in range(n)]
        ax.plot(xs, ys, marker="o", label=f"{name} ({len(curves)} seeds)")
    for value, label in ((summary["target"], "target"), (summary["grpo_final_subset_mean"], "grpo final")):
        if value is not None:
            ax.axhline(value, color="grey", linestyle="--", linewidth=1)
            ax.annotate(label, (0, value), fontsize=8, color="grey")
    ax.set(
        xlabel="training wall time (s, evaluations excluded)",
        ylabel="held-out greedy pass@1 (subset)",
        title="held-out accuracy vs wall time, mean over seeds",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def child_command(setting: str, seed: int, args) -> list[str]:
    argv = [a for a in sys.argv[1:]]
    return [sys.executable, str(Path(__file__).resolve()), *argv, "--run", setting, "--run-seed", str(seed)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each its own process)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--task", default="arithmetic")
    p.add_argument("--task-options", default="{}", help="task options as JSON, e.g. '{\"digits\": 2}'")
    p.add_argument(
        "--system-prompt",
        default=None,
        help="system message before every prompt (e.g. one asking for worked steps: long completions)",
    )
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--mini-batch", type=int, default=16)
    p.add_argument("--start-u", type=int, default=4, help="rapid:auto's first U")
    p.add_argument("--grouping", default="groups", choices=["samples", "groups"])
    p.add_argument("--total-samples", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument(
        "--overlong-buffer", type=int, default=32, help="overlong_buffer of the settings with +pen (tokens)"
    )
    p.add_argument("--gen-micro-batch", type=int, default=128)
    p.add_argument("--eval-problems", type=int, default=100, help="held-out problems evaluated after")
    p.add_argument("--tta-problems", type=int, default=40, help="held-out subset evaluated during training")
    p.add_argument("--eval-every", type=int, default=64, help="samples between subset evaluations")
    p.add_argument("--target", type=float, default=None, help="fixed subset pass@1 target")
    p.add_argument("--runs-dir", default=str(ROOT / "bench" / "results" / "tta_runs"))
    p.add_argument("--out", default=None, help="summary JSON (default bench/results/time_to_accuracy.json)")
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "time_to_accuracy.png"))
    p.add_argument(
        "--from-results",
        default=None,
        metavar="JSON",
        help="summarise a saved results JSON again with this version's statistics (its runs, machine and "
        "settings kept; --target overrides its target); runs nothing, writes to --out or back to JSON",
    )
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--run-seed", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)

    def run_file(setting: str, seed: int) -> Path:
        return runs_dir / f"{setting.replace(':', '_').replace('=', '').replace('+', '_')}-s{seed}.json"

    if args.run is not None:  # a child: one run
        apply_threads(args.threads)
        result = run_one(args.run, args.run_seed, args)
        run_file(args.run, args.run_seed).write_text(json.dumps(result, indent=1))
        return

    if args.from_results is not None:
        try:
            saved = json.loads(Path(args.from_results).read_text())
        except (OSError, ValueError) as e:
            p.error(f"--from-results {args.from_results}: {e}")
        if not isinstance(saved, dict) or not saved.get("runs"):
            p.error(
                f"--from-results {args.from_results}: no 'runs' in it (not a time_to_accuracy results JSON)"
            )
        report(saved, args.target, args.out or args.from_results, args.plot)
        return

    for setting in args.settings:  # a bad name stops here, not in every child
        setting_values(setting, args)
    todo = [(s, seed) for seed in args.seeds for s in args.settings if not run_file(s, seed).is_file()]
    print(f"{len(todo)} runs to do, {args.jobs} at once; load {load_average()}", flush=True)

    def launch(item: tuple[str, int]) -> None:
        setting, seed = item
        started = time.perf_counter()
        log = runs_dir / f"{run_file(setting, seed).stem}.log"
        with log.open("w") as f:
            rc = subprocess.call(child_command(setting, seed, args), stdout=f, stderr=subprocess.STDOUT)
        print(
            f"{setting} seed {seed}: rc {rc}, {time.perf_counter() - started:.0f} s, load {load_average()}",
            flush=True,
        )

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(launch, todo))
    runs = [
        json.loads(run_file(s, seed).read_text())
        for s in args.settings
        for seed in args.seeds
        if run_file(s, seed).is_file()
    ]
    settings = {k: v for k, v in vars(args).items() if k not in ("run", "run_seed", "from_results")}
    result = {"machine": machine(), "settings": settings, "runs": runs}
    report(
        result, args.target, args.out or str(ROOT / "bench" / "results" / "time_to_accuracy.json"), args.plot
    )


def report(result: dict[str, Any], target: float | None, out: str, plot_path: str) -> None:
    """Summarise ``result["runs"]``, print the tables, save the JSON and the plot."""
    if target is None:
        target = result.get("summary", {}).get("target")
    summary = summarise(result["runs"], target)
    print_table(summary)
    if "paired" in summary:
        print_paired(summary["paired"], summary["target"])
    saved = {
        "machine": result["machine"],
        "settings": result["settings"],
        "summary": summary,
        "runs": result["runs"],
    }
    save(saved, out, "time_to_accuracy.json")
    plot(result["runs"], summary, Path(plot_path))
    print(f"plot: {plot_path}")


if __name__ == "__main__":
    main()
