"""What the dashboard shows, as pure functions of a job's stored records: progress and ETA, the
plots' series, and the health checks a person would otherwise read off the curves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rapid_core.config import TrainConfig

# Each plot: id, title, x axis ("round", "step" or "eval"), the (metric key, label) series drawn, and
# "unit": "share" for values in [0, 1] (drawn on a 0..1 axis that grows only if a value leaves it).
PLOTS: list[dict[str, Any]] = [
    {
        "id": "reward",
        "unit": "share",
        "title": "Reward and accuracy per round",
        "x": "round",
        "series": [("reward_mean", "reward"), ("accuracy", "accuracy")],
    },
    {
        "id": "eval",
        "unit": "share",
        "title": "Held-out evaluation (before / after)",
        "x": "eval",
        "series": [("pass@1", "pass@1"), ("pass@k", "pass@k")],
    },
    {
        "id": "signal",
        "unit": "share",
        "title": "Learning signal per round",
        "x": "round",
        "series": [("frac_zero_std", "groups with equal rewards"), ("truncated_share", "truncated")],
    },
    {
        "id": "staleness",
        "title": "Staleness (optimizer steps behind the sampler)",
        "x": "round",
        "series": [("staleness_mean", "mean"), ("staleness_max", "max")],
    },
    {
        "id": "ess",
        "unit": "share",
        "title": "Effective sample size (share of the mini-batch)",
        "x": "step",
        "series": [("ess", "ESS")],
    },
    {
        "id": "clip",
        "unit": "share",
        "title": "Clip fraction",
        "x": "step",
        "series": [("clip_frac", "clipped")],
    },
    {
        "id": "kl",
        "title": "Approx KL (policy vs sampler)",
        "x": "step",
        "series": [("approx_kl", "approx KL")],
    },
    {"id": "grad", "title": "Gradient norm", "x": "step", "series": [("grad_norm", "grad norm")]},
    {
        "id": "time",
        "title": "Seconds per round",
        "x": "round",
        "series": [("gen_s", "generation"), ("reward_s", "reward"), ("train_s", "training")],
    },
    {
        "id": "speed",
        "title": "Generated tokens per second",
        "x": "round",
        "series": [("gen_tokens_per_s", "tokens/s")],
    },
]

# Thresholds of the health checks: past these a run is probably wasting its time.
NO_SIGNAL_SHARE = 0.9  # groups whose G rewards are all equal give zero advantage
CLIP_WARN = 0.2
ESS_WARN = 0.5
TRUNCATED_WARN = 0.5
RECENT_ROUNDS = 3


@dataclass(frozen=True)
class Progress:
    rounds_done: int
    total_rounds: int | None
    elapsed_s: float | None
    eta_s: float | None

    @property
    def fraction(self) -> float | None:
        if not self.total_rounds:
            return None
        return min(self.rounds_done / self.total_rounds, 1.0)


def total_rounds(config: dict[str, Any]) -> int | None:
    """Rounds the job will run, from its stored (validated) TrainConfig values; None if time-bound."""
    cfg = TrainConfig.model_construct(**config)
    limits = [cfg.rounds] if cfg.rounds is not None else []
    if cfg.max_samples is not None:
        limits.append(
            -(-cfg.max_samples // cfg.inference_batch)
        )  # auto: an estimate from the first round's B
    return min(limits) if limits else None


def progress(job: Any, rounds: list[dict[str, Any]], evals: dict[str, dict], now: float) -> Progress:
    """Rounds done of the total, elapsed seconds, and an ETA from recent round times (plus, before the
    final evaluation, as long again as the first one took)."""
    done = rounds[-1]["round"] + 1 if rounds else 0
    total = total_rounds(job.config)
    elapsed = None
    if job.started_at is not None:
        elapsed = float((job.finished_at or now) - job.started_at)
    eta = None
    if job.status in ("queued", "running") and total is not None and rounds:
        recent = [r["round_s"] for r in rounds[-5:] if isinstance(r.get("round_s"), int | float)]
        if recent:
            eta = sum(recent) / len(recent) * max(total - done, 0)
            if "after" not in evals and job.config.get("eval_problems"):
                eta += (evals.get("before") or {}).get("seconds") or 0.0
    return Progress(done, total, elapsed, eta)


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def series(
    rounds: list[dict], steps: list[dict], evals: dict[str, dict], final_step: int, interval: list[dict] = ()
) -> dict[str, Any]:
    """Columns for the plots: {"round": {"x": [...], key: [...]}, "step": {...}, "eval": {...}}; the
    eval plot has before (step 0), the ``interval`` evaluations (eval_interval, at their step) and after.
    A missing or non-finite value is null, which the chart draws as a gap."""

    def column(records: list[dict], key: str) -> list[float | None]:
        return [_number(r.get(key)) for r in records]

    keys = {x: {k for p in PLOTS if p["x"] == x for k, _ in p["series"]} for x in ("round", "step")}
    out: dict[str, Any] = {
        "round": {"x": [r["round"] for r in rounds], **{k: column(rounds, k) for k in keys["round"]}},
        "step": {"x": [r["step"] for r in steps], **{k: column(steps, k) for k in keys["step"]}},
    }
    points = [(0, evals["before"])] if "before" in evals else []
    points += [(e.get("step"), e) for e in interval]
    points += [(final_step, evals["after"])] if "after" in evals else []
    k_key = next((k for _, e in points for k in e if k.startswith("pass@") and k != "pass@1"), None)
    out["eval"] = {
        "x": [x for x, _ in points],
        "pass@1": [_number(e.get("pass@1")) for _, e in points],
        "pass@k": [_number(e.get(k_key)) if k_key else None for _, e in points],
        "k_label": k_key or "pass@k",
    }
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _mean(values: list[Any]) -> float | None:
    nums = [v for v in map(_number, values) if v is not None]
    return sum(nums) / len(nums) if nums else None


def health(rounds: list[dict], steps: list[dict]) -> list[tuple[str, str]]:
    """(level, message) findings over the last few rounds; empty when nothing looks wrong."""
    found: list[tuple[str, str]] = []
    recent = rounds[-RECENT_ROUNDS:]
    if not recent:
        return found
    last_round = recent[0]["round"]
    recent_steps = [s for s in steps if s.get("round", -1) >= last_round]
    if any(s.get("grad_norm") is None or s.get("loss") is None for s in recent_steps):
        found.append(("error", "A recent step had a non-finite loss or gradient norm"))
    no_signal = _mean([r.get("frac_zero_std") for r in recent])
    if no_signal is not None and no_signal >= NO_SIGNAL_SHARE:
        found.append(
            (
                "warn",
                f"{no_signal:.0%} of groups have identical rewards: the grader gives almost "
                "no learning signal (task too hard or too easy, or a grader that never varies)",
            )
        )
    failures = sum(
        (r.get("grader_status") or {}).get(s, 0)
        for r in recent
        for s in ("timeout", "error", "sandbox_failure")
    )
    if failures:
        found.append(("warn", f"The grader failed on {failures} samples in the last {len(recent)} rounds"))
    clip = _mean([s.get("clip_frac") for s in recent_steps])
    if clip is not None and clip > CLIP_WARN:
        found.append(
            (
                "warn",
                f"{clip:.0%} of importance weights are clipped: the policy moves far from the "
                "sampler within a round (lower the learning rate or the batch ratio U)",
            )
        )
    ess = _mean([s.get("ess") for s in recent_steps])
    if ess is not None and ess < ESS_WARN:
        found.append(
            ("warn", f"Effective sample size is {ess:.2f} of the mini-batch: stale samples dominate")
        )
    truncated = _mean([r.get("truncated_share") for r in recent])
    if truncated is not None and truncated > TRUNCATED_WARN:
        found.append(("warn", f"{truncated:.0%} of completions hit max_new_tokens"))
    return found
