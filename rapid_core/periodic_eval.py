"""Held-out evaluation every ``eval_interval`` optimizer steps, and the best checkpoint it finds.

Optimizer steps happen inside a round (U of them) while checkpoints are at round boundaries, so an
evaluation runs at the first round boundary at or after each multiple of ``eval_interval`` steps,
and at the last round boundary: each one scores exactly the weights of the checkpoint saved at that
boundary (the ``Checkpointer`` saves one there whatever ``checkpoint_every`` says). The best is the
highest greedy pass@1 of these evaluations, the earlier one on a tie; the evaluation before
training (the base model, not a checkpoint) is not a candidate. The record of the last evaluation
and of the best live in ``Progress``, so a resumed run keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rapid_core.callbacks import Callback
from rapid_core.config import TrainConfig
from rapid_core.metrics import EvalMetrics
from rapid_core.state import Progress, RunState

PHASE = "interval"
BEST_FILE = "best.json"


def evaluation_due(cfg: TrainConfig, progress: Progress, finished: bool) -> bool:
    """True at a round boundary that crossed a multiple of ``eval_interval`` steps since the last
    periodic evaluation, or at the last boundary (unless this step was evaluated already)."""
    if not cfg.eval_interval or not cfg.eval_problems:
        return False
    last_step = progress.last_eval["step"] if progress.last_eval else 0
    if progress.last_eval and last_step == progress.step:
        return False
    return finished or progress.step // cfg.eval_interval > last_step // cfg.eval_interval


def is_better(pass_at_1: float, best: dict[str, Any] | None) -> bool:
    """A new best only when strictly higher: on a tie the earlier checkpoint stays best."""
    return best is None or pass_at_1 > best["pass@1"]


def evaluated_now(progress: Progress) -> bool:
    """Whether a periodic evaluation ran at this round boundary (its checkpoint must be saved)."""
    return progress.last_eval is not None and progress.last_eval["round"] == progress.round


class PeriodicEval:
    """Runs the due evaluations through the trainer's ``evaluate(phase)`` and keeps the records."""

    def __init__(self, cfg: TrainConfig, checkpoints: Path, evaluate: Callable[[str], EvalMetrics]):
        self.cfg, self.checkpoints, self.evaluate = cfg, checkpoints, evaluate
        self.latest: EvalMetrics | None = None  # this process's last evaluation (reused as "after")

    def at_boundary(self, state: RunState) -> None:
        """Call after the round counter moved on and before the checkpoint is saved."""
        p = state.progress
        if not evaluation_due(self.cfg, p, state.finished):
            return
        metrics = self.evaluate(PHASE)
        self.latest = metrics
        p.last_eval = {"step": p.step, "round": p.round, "pass@1": metrics.pass_at_1}
        if is_better(metrics.pass_at_1, p.best):
            path = self.checkpoints / f"round-{p.round:06d}"
            p.best = {
                "step": p.step,
                "round": p.round,
                "pass@1": metrics.pass_at_1,
                "problems": metrics.problems,
                "checkpoint": str(path),
                "adapter_dir": str(path / "adapter"),
            }

    def final(self, progress: Progress) -> EvalMetrics | None:
        """The evaluation of the final weights when one ran at the last step in this process."""
        at_end = progress.last_eval is not None and progress.last_eval["step"] == progress.step
        return self.latest if at_end else None


class BestFile(Callback):
    """Writes ``<output_dir>/best.json`` (the best record) once the best's checkpoint is on disk."""

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / BEST_FILE
        self.best: dict[str, Any] | None = None

    def on_round_end(self, state: RunState) -> None:
        self.best = state.progress.best

    def on_checkpoint(self, path: Path, round_index: int) -> None:
        if self.best is not None and self.best["round"] == round_index:
            self.path.write_text(json.dumps(self.best, indent=2))
