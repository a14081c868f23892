"""The state of a run that callbacks see (its start, and the whole state at round boundaries), and
the stopping rule over it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from rapid_core.config import RunPaths, TrainConfig
from rapid_core.models import Policy


@dataclass(frozen=True)
class RunInfo:
    """Sent once, after the model is loaded; ``start_round`` > 0 when the run resumed."""

    algorithm: str
    inference_batch: int
    batch_ratio: int
    mini_batch_size: int
    start_round: int
    total_rounds: int | None
    device: str
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """The counters a checkpoint saves and a resumed run restores (plus the RNG states)."""

    round: int = 0  # rounds completed
    step: int = 0  # optimizer steps taken
    samples: int = 0  # completions sampled
    position: int = 0  # prompts drawn from the data stream (plan.prompt_indices)
    elapsed_s: float = 0.0  # wall time inside rounds
    trained_tokens: int = 0
    eval_before: dict[str, Any] | None = None  # the held-out evaluation before training, once done
    last_eval: dict[str, Any] | None = None  # step, round, pass@1 of the last periodic evaluation
    best: dict[str, Any] | None = None  # the best periodic evaluation's checkpoint (periodic_eval.py)
    batch_history: list[dict[str, Any]] = field(default_factory=list)  # batch_ratio.RoundRecord's, auto

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunState:
    """The run as a whole: what it is, where it writes, the weights and optimizer, its progress."""

    cfg: TrainConfig
    paths: RunPaths
    policy: Policy
    optimizer: torch.optim.Optimizer
    progress: Progress = field(default_factory=Progress)

    @property
    def finished(self) -> bool:
        return stop_reached(self.cfg, self.progress)

    def info(self) -> RunInfo:
        cfg = self.cfg
        return RunInfo(
            algorithm=cfg.algorithm,
            inference_batch=cfg.inference_batch,
            batch_ratio=cfg.batch_ratio,
            mini_batch_size=cfg.mini_batch_size,
            start_round=self.progress.round,
            total_rounds=total_rounds(cfg),
            device=str(self.policy.device),
            dtype=str(self.policy.dtype),
        )

    def summary(self, eval_after: dict[str, Any] | None) -> dict[str, Any]:
        """What summary.json holds and ``train`` returns."""
        p = self.progress
        return {
            "algorithm": self.cfg.algorithm,
            "rounds": p.round,
            "steps": p.step,
            "samples": p.samples,
            "trained_tokens": p.trained_tokens,
            "train_seconds": p.elapsed_s,
            "eval_before": p.eval_before,
            "eval_after": eval_after,
            "best": p.best,
            "adapter_dir": str(self.paths.adapter_dir),
        }


def stop_reached(cfg: TrainConfig, p: Progress) -> bool:
    """True at the first round boundary past any of rounds, max_samples, time_budget_s."""
    return (
        (cfg.rounds is not None and p.round >= cfg.rounds)
        or (cfg.max_samples is not None and p.samples >= cfg.max_samples)
        or (cfg.time_budget_s is not None and p.elapsed_s >= cfg.time_budget_s)
    )


def total_rounds(cfg: TrainConfig) -> int | None:
    """How many rounds the run will take, when rounds or max_samples bound it (not a time budget)."""
    limits = [cfg.rounds] if cfg.rounds is not None else []
    if cfg.max_samples is not None and not cfg.auto_batch:  # auto: B changes from round to round
        limits.append(-(-cfg.max_samples // cfg.inference_batch))
    return min(limits) if limits else None
