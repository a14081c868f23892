"""Pre-flight of a job: what a few prompts x G sampled from the base model and graded say about it.

``job_size`` says how much work the whole job is; ``preflight_report`` turns what a worker measured
into the report (reward statistics, the share of groups without learning signal, grader failures and
latency, completion lengths and truncation, an ETA) with plain-language warnings. Both are pure.

The ETA scales the measured time per sample (generation + grading, at the pre-flight's batch of
prompts x G) to the job's samples, plus the measured time of one optimizer step times the job's
steps. With ``drop_zero_std`` on, groups whose rewards are all equal train no step, so the steps are
counted over the share of groups the base model gave a spread; that share moves as the model learns
(more groups all right), so the count is the start's. Model loading, checkpoints and evaluation
overheads beyond their samples are not counted, and generation of a job's larger batches is usually
faster per sample on a GPU: read it as an order of magnitude, not a promise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rapid_core.config import TrainConfig

# Thresholds of the warnings.
ZERO_VARIANCE_WARN = 0.5  # share of groups with identical rewards
TRUNCATION_WARN = 0.2  # share of completions that hit max_new_tokens
FAILURE_STOP = 0.5  # the trainer stops when more than this share of a round's grades fail
SLOW_GRADE_S = 1.0  # p90 seconds per grade


@dataclass(frozen=True)
class JobSize:
    """The work of a whole job: samples drawn (training and held-out evaluation) and optimizer steps
    if every mini-batch trains. ``rounds`` is None when only a time budget bounds the job, or when
    ``batch_ratio_control=auto`` varies the rounds' sizes (then ``round_samples`` is None too)."""

    rounds: int | None
    train_samples: int | None
    eval_samples: int
    steps: int | None
    time_budget_s: float | None
    round_samples: int | None = None  # B, the samples of every round, when fixed
    mini_batch: int = 1
    drops_zero_std: bool = False


@dataclass(frozen=True)
class Measured:
    """What a pre-flight measured: one entry per sample, samples of a prompt adjacent."""

    scores: list[float]
    statuses: list[str]  # ok, wrong, timeout, error, sandbox_failure
    completion_tokens: list[int]
    truncated: list[bool]  # the completion hit max_new_tokens
    grade_seconds: list[float]  # each grade's own latency
    group_size: int
    max_new_tokens: int
    generate_s: float  # wall time of generation, all samples
    grade_s: float  # wall time of grading, all samples
    train_step_s: float | None = None  # one optimizer step on a mini-batch, if measured
    first_failure: str = ""  # the detail of the first failed grade


def job_size(cfg: TrainConfig) -> JobSize:
    from rapid_core.state import total_rounds  # state imports torch; the report itself needs none

    rounds = total_rounds(cfg)
    phases = (2 if cfg.eval_before else 1) if cfg.eval_problems else 0
    eval_samples = phases * cfg.eval_problems * cfg.eval_k
    m, drops = cfg.mini_batch_size, cfg.drops_zero_std
    if rounds is None and cfg.max_samples is not None:  # batch_ratio_control=auto: round sizes vary
        samples = cfg.max_samples
        return JobSize(None, samples, eval_samples, math.ceil(samples / m), cfg.time_budget_s, None, m, drops)
    if rounds is None:
        return JobSize(None, None, eval_samples, None, cfg.time_budget_s, None, m, drops)
    b = cfg.inference_batch
    return JobSize(
        rounds, rounds * b, eval_samples, rounds * math.ceil(b / m), cfg.time_budget_s, b, m, drops
    )


def trained_steps(size: JobSize, kept_share: float) -> int | None:
    """The optimizer steps of the job when only ``kept_share`` of its samples train (the groups with
    a spread, under ``drop_zero_std``): each round's kept samples fill ceil(kept / m) mini-batches."""
    if size.steps is None or not size.drops_zero_std:
        return size.steps
    if size.round_samples is not None and size.rounds is not None:
        return size.rounds * math.ceil(size.round_samples * kept_share / size.mini_batch)
    return math.ceil((size.train_samples or 0) * kept_share / size.mini_batch)


def _percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50 / p90 / p99, mean and max."""
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) / 100) - 1))]

    return {
        "mean": sum(ordered) / len(ordered),
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "max": ordered[-1],
    }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _pct(x: float) -> str:
    return f"{round(100 * x)}%"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _eta(m: Measured, size: JobSize, zero_share: float) -> dict:
    n = len(m.scores)
    per_sample = (m.generate_s + m.grade_s) / n if n else 0.0
    steps = trained_steps(size, 1.0 - zero_share)
    out = {
        "seconds_per_sample": per_sample,
        "train_step_s": m.train_step_s,
        "rounds": size.rounds,
        "samples": None,
        "steps": steps,
        "steps_if_all_train": size.steps,
        "seconds": None,
    }
    if size.train_samples is None:  # a time budget bounds the job, not a sample count
        out["seconds"] = size.time_budget_s
        out["basis"] = "the job's time_budget_s (it stops at the first round boundary past it)"
        return out
    samples = size.train_samples + size.eval_samples
    seconds = samples * per_sample + (steps or 0) * (m.train_step_s or 0.0)
    out |= {"samples": samples, "seconds": seconds}
    trained = "one measured optimizer step x its steps" if m.train_step_s is not None else "no training time"
    if m.train_step_s is not None and size.drops_zero_std and steps != size.steps:
        trained += (
            f" ({steps} of {size.steps}: drop_zero_std leaves out the {_pct(zero_share)} of groups "
            "with identical rewards, as the base model gave them)"
        )
    out["basis"] = (
        f"{samples} samples x the measured {per_sample:.3g} s per sample (generation + grading), "
        f"plus {trained}; model loading and checkpoints are not counted"
    )
    return out


def _warnings(m: Measured, report: dict) -> list[str]:
    out = []
    n, g = len(m.scores), m.group_size
    zero = report["zero_variance_share"]
    if n and report["reward"]["std"] == 0:
        value = m.scores[0]
        hint = {
            0.0: "the task is too hard for the base model, or the grader never matches its answers "
            "(check the reference template and the answer format)",
            1.0: "the base model already solves every prompt: there is nothing left to learn",
        }
        out.append(
            f"Every one of the {n} completions got the same reward {value:g}: "
            f"{hint.get(value, 'the grader gives no signal')}."
        )
    elif zero >= ZERO_VARIANCE_WARN:
        out.append(
            f"{_pct(zero)} of groups have identical rewards: the grader gives almost no signal "
            f"(those groups have zero advantage). Raise group_size (now {g}) or temperature, "
            "or use a grader that gives partial credit."
        )
    failed = report["grader"]["errors"] + report["grader"]["timeouts"] + report["grader"]["sandbox_failures"]
    if failed:
        kinds = ", ".join(
            f"{report['grader'][k]} {k.replace('_', ' ')}"
            for k in ("errors", "timeouts", "sandbox_failures")
            if report["grader"][k]
        )
        stop = (
            " A job would stop at its first round: the trainer refuses rounds where more than half "
            "of the grades fail."
            if _share(failed, n) > FAILURE_STOP
            else ""
        )
        first = f" First failure: {m.first_failure[:200]}" if m.first_failure else ""
        out.append(f"The grader failed on {failed} of {n} samples ({kinds}); they score 0.{stop}{first}")
    truncated = report["completions"]["truncated_share"]
    if truncated >= TRUNCATION_WARN:
        out.append(
            f"{_pct(truncated)} of completions hit max_new_tokens={m.max_new_tokens}: raise it, "
            "or the grader sees cut-off answers."
        )
    p90 = report["grader"]["latency_s"]["p90"]
    if p90 >= SLOW_GRADE_S:
        out.append(
            f"The grader is slow: {p90:.1f} s per sample (p90). Grading takes "
            f"{_pct(_share(round(m.grade_s * 1000), round((m.generate_s + m.grade_s) * 1000)))} "
            "of the time per sample."
        )
    eta = report["eta"]["seconds"]
    if eta is not None and report["eta"]["samples"] is not None:
        out.append(
            f"Estimated time for the whole job on this worker class: about {_duration(eta)} "
            f"({report['eta']['samples']} samples)."
        )
    return out


def preflight_report(m: Measured, size: JobSize) -> dict:
    """The pre-flight report: statistics of what was measured, the ETA, and ``warnings``."""
    n, g = len(m.scores), m.group_size
    if not (len(m.statuses) == len(m.completion_tokens) == len(m.truncated) == len(m.grade_seconds) == n):
        raise ValueError("scores, statuses, completion_tokens, truncated and grade_seconds differ in length")
    if g < 1 or n % g:
        raise ValueError(f"{n} samples are not whole groups of {g}")
    mean = sum(m.scores) / n if n else 0.0
    std = math.sqrt(sum((s - mean) ** 2 for s in m.scores) / n) if n else 0.0
    groups = [m.scores[i : i + g] for i in range(0, n, g)]
    zero = sum(1 for grp in groups if max(grp) == min(grp))
    lengths = [float(t) for t in m.completion_tokens]
    report = {
        "samples": n,
        "prompts": len(groups),
        "group_size": g,
        "reward": {
            "mean": mean,
            "std": std,
            "min": min(m.scores, default=0.0),
            "max": max(m.scores, default=0.0),
            "pass_rate": _share(m.statuses.count("ok"), n),
        },
        "zero_variance_share": _share(zero, len(groups)),
        "grader": {
            "errors": m.statuses.count("error"),
            "timeouts": m.statuses.count("timeout"),
            "sandbox_failures": m.statuses.count("sandbox_failure"),
            "latency_s": _percentiles(m.grade_seconds),
        },
        "completions": {
            "tokens": _percentiles(lengths),
            "truncated_share": _share(sum(m.truncated), n),
            "max_new_tokens": m.max_new_tokens,
        },
        "timing": {"generate_s": m.generate_s, "grade_s": m.grade_s, "train_step_s": m.train_step_s},
    }
    report["eta"] = _eta(m, size, report["zero_variance_share"])
    report["warnings"] = _warnings(m, report)
    return report
