"""What a run reports, as typed records (RAPID.md "Metrics to record"): one record per optimizer
step, one per round, one per held-out evaluation (the run's start is ``state.RunInfo``). Callbacks
receive these objects; ``to_dict`` is their JSON form in metrics.jsonl and the job store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from rapid_core.engines.base import Rollouts
from rapid_core.graders import Grade, grade_latency_stats, status_counts
from rapid_core.state import Progress


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step. The weight fields are those of RAPID.md: w = min(rho, c) per token."""

    round: int
    step: int
    staleness: int  # optimizer steps between the sampling policy and this one (u of the round)
    loss: float
    grad_norm: float
    lr: float
    samples: int
    tokens: int
    entropy: float
    w_mean: float
    w_min: float
    w_max: float
    clip_frac: float
    ess: float
    approx_kl: float  # KL(mu || pi_theta), mean over tokens of (rho - 1) - log rho
    kl_ref: float  # KL(pi_theta || reference); 0 when kl_beta = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RoundMetrics:
    """One inference round and its updates. ``engine`` holds what the generation engine measured
    (its ``Rollouts.stats``: e.g. decode ms per step, the decode loop), empty when it measures nothing;
    ``peak_mem_gb`` is the round's peak GPU memory (generation and training), None on a CPU.
    ``batch_ratio`` is the round's U (B = U * m); ``batch_decision`` why batch_ratio_control=auto
    picked it, empty when U is fixed."""

    round: int
    step: int
    samples: int
    reward_mean: float
    reward_std: float
    accuracy: float
    frac_zero_std: float
    completion_len_mean: float
    completion_len_max: int
    truncated_share: float
    staleness_mean: float
    staleness_max: int
    gen_s: float
    reward_s: float
    train_s: float
    round_s: float
    gen_tokens_per_s: float
    samples_per_s: float
    grader_status: dict[str, int]
    grader_latency_s: dict[str, float]
    example: dict[str, Any]
    engine: dict[str, float | str] = field(default_factory=dict)
    peak_mem_gb: float | None = None
    batch_ratio: int = 1
    batch_decision: str = ""
    overlong_penalty_mean: float = 0.0  # mean of the penalty added to the rewards (overlong_buffer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalMetrics:
    """Held-out greedy pass@1 and, when k > 1, sampled pass@k (written as "pass@1", "pass@<k>");
    ``step`` and ``round`` say which weights were evaluated (the trainer sets them)."""

    problems: int
    pass_at_1: float
    mean_reward: float
    grader_status: dict[str, int]
    example: dict[str, Any]
    seconds: float
    k: int = 1
    pass_at_k: float | None = None
    sampled_accuracy: float | None = None
    step: int | None = None
    round: int | None = None

    def to_dict(self) -> dict[str, Any]:
        at = {"step": self.step, "round": self.round} if self.step is not None else {}
        out: dict[str, Any] = {
            **at,
            "problems": self.problems,
            "pass@1": self.pass_at_1,
            "mean_reward": self.mean_reward,
            "grader_status": self.grader_status,
            "example": self.example,
        }
        if self.pass_at_k is not None:
            out[f"pass@{self.k}"] = self.pass_at_k
            out["sampled_accuracy"] = self.sampled_accuracy
        out["seconds"] = self.seconds
        return out


@dataclass(frozen=True)
class RoundClock:
    """perf_counter() at the start of a round and at the end of generation, rewards and training."""

    start: float
    generated: float
    rewarded: float
    trained: float


def round_metrics(
    progress: Progress,
    rollouts: Rollouts,
    grades: list[Grade],
    zero_std: torch.Tensor,
    n_minibatches: int,
    clock: RoundClock,
    peak_mem_gb: float | None = None,
    batch: tuple[int, str] = (1, ""),
    penalty: torch.Tensor | None = None,
) -> RoundMetrics:
    """The round record of RAPID.md from what the round produced; ``progress`` gives the round index
    and the step and sample counts so far; ``batch`` the round's U and why it was picked."""
    rewards = torch.tensor([g.score for g in grades], dtype=torch.float32)
    lengths = torch.tensor([len(c) for c in rollouts.completion_ids], dtype=torch.float32)
    gen_s, wall = clock.generated - clock.start, clock.trained - clock.start
    return RoundMetrics(
        round=progress.round,
        step=progress.step,
        samples=progress.samples,
        reward_mean=float(rewards.mean()),
        reward_std=float(rewards.std(unbiased=False)),
        accuracy=sum(g.status == "ok" for g in grades) / len(grades),
        frac_zero_std=float(zero_std.float().mean()),
        completion_len_mean=float(lengths.mean()),
        completion_len_max=int(lengths.max()),
        truncated_share=sum(f == "length" for f in rollouts.finish_reasons) / len(rollouts),
        staleness_mean=max(n_minibatches - 1, 0) / 2,
        staleness_max=max(n_minibatches - 1, 0),
        gen_s=gen_s,
        reward_s=clock.rewarded - clock.generated,
        train_s=clock.trained - clock.rewarded,
        round_s=wall,
        gen_tokens_per_s=rollouts.generated_tokens / max(gen_s, 1e-9),
        samples_per_s=len(rollouts) / max(wall, 1e-9),
        grader_status=status_counts(grades),
        grader_latency_s=grade_latency_stats(grades),
        example={"completion": rollouts.texts[0], "reward": float(rewards[0])},
        engine=dict(rollouts.stats),
        peak_mem_gb=peak_mem_gb,
        batch_ratio=batch[0],
        batch_decision=batch[1],
        overlong_penalty_mean=float(penalty.mean()) if penalty is not None else 0.0,
    )
