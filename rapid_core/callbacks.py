"""Hooks the trainer calls. Metrics files, run files, checkpoints, progress bars and the service's
job store are all callbacks, never branches inside the loop."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rapid_core.metrics import EvalMetrics, RoundMetrics, StepMetrics
    from rapid_core.state import RunInfo, RunState

StopRequest = Literal["cancel", "pause"] | None


class Callback:
    """Override what you need; every hook is a no-op by default."""

    def on_start(self, info: RunInfo) -> None:
        """Once, after the model is loaded (and a checkpoint restored): batch terms, start round."""

    def on_eval(self, phase: str, metrics: EvalMetrics) -> None:
        """Held-out evaluation; ``phase`` is "before", "interval" (every ``eval_interval`` steps,
        rapid_core/periodic_eval.py) or "after"."""

    def on_step(self, metrics: StepMetrics) -> None:
        """After each optimizer step (RAPID.md step metrics)."""

    def on_round(self, metrics: RoundMetrics) -> None:
        """After each inference round's updates (RAPID.md round metrics)."""

    def on_round_end(self, state: RunState) -> None:
        """After the round's counters moved on: the place to save the run (``Checkpointer``)."""

    def on_checkpoint(self, path: Path, round_index: int) -> None:
        """After a checkpoint directory is complete on disk."""

    def should_stop(self) -> StopRequest:
        """Polled between optimizer steps: "cancel" or "pause" stops the run at once."""
        return None

    def on_end(self, summary: dict[str, Any]) -> None:
        """Once, when the run ends normally, with what summary.json holds."""


class CallbackList(Callback):
    """Calls each callback in order."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)

    def append(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def on_start(self, info):
        for c in self.callbacks:
            c.on_start(info)

    def on_eval(self, phase, metrics):
        for c in self.callbacks:
            c.on_eval(phase, metrics)

    def on_step(self, metrics):
        for c in self.callbacks:
            c.on_step(metrics)

    def on_round(self, metrics):
        for c in self.callbacks:
            c.on_round(metrics)

    def on_round_end(self, state):
        for c in self.callbacks:
            c.on_round_end(state)

    def on_checkpoint(self, path, round_index):
        for c in self.callbacks:
            c.on_checkpoint(path, round_index)

    def should_stop(self):
        for c in self.callbacks:
            request = c.should_stop()
            if request:
                return request
        return None

    def on_end(self, summary):
        for c in self.callbacks:
            c.on_end(summary)
