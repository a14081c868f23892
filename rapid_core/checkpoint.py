"""Round-boundary checkpoints with everything exact resume needs: trainable weights, optimizer,
RNG states, data position, counters. Written to a temporary directory, then renamed, so a
checkpoint directory that exists is complete. ``Checkpointer`` is the callback that writes them;
``resume`` restores the newest one into a fresh run.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rapid_core.callbacks import Callback
from rapid_core.models import save_adapter
from rapid_core.periodic_eval import evaluated_now
from rapid_core.state import Progress, RunState

PREFIX = "round-"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = sorted(p for p in checkpoint_dir(output_dir).glob(f"{PREFIX}*") if (p / "state.pt").is_file())
    return found[-1] if found else None


def save_checkpoint(state: RunState, keep: int) -> Path:
    """Checkpoint the run after round ``state.progress.round``; keep the newest ``keep`` of them and
    the best one (``Progress.best``) of the periodic evaluations."""
    root = checkpoint_dir(state.paths.output_dir)
    name = f"{PREFIX}{state.progress.round:06d}"
    final, tmp = root / name, root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    policy = state.policy
    save_adapter(policy, tmp / "adapter")
    save_file(
        {k: v.contiguous().cpu() for k, v in policy.trainable_state().items()}, tmp / "trainable.safetensors"
    )
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(
        {"optimizer": state.optimizer.state_dict(), "rng": rng, **state.progress.to_dict()}, tmp / "state.pt"
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    best = state.progress.best
    for old in sorted(p for p in root.glob(f"{PREFIX}*"))[:-keep]:
        if best is None or old.name != f"{PREFIX}{best['round']:06d}":
            shutil.rmtree(old, ignore_errors=True)
    return final


def resume(state: RunState) -> Path | None:
    """Load the newest complete checkpoint of the run's output directory into ``state``, if any."""
    path = latest_checkpoint(state.paths.output_dir)
    if path is None:
        return None
    policy = state.policy
    policy.load_trainable_state(
        {k: v.to(policy.device) for k, v in load_file(path / "trainable.safetensors").items()}
    )
    saved = torch.load(path / "state.pt", weights_only=False)
    state.optimizer.load_state_dict(saved.pop("optimizer"))
    saved.pop("scheduler", None)  # written before the learning rate followed the run's progress
    rng = saved.pop("rng")
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    # Counters added since the checkpoint was written keep their defaults.
    state.progress = Progress(**{f.name: saved[f.name] for f in fields(Progress) if f.name in saved})
    return path


class Checkpointer(Callback):
    """Checkpoints every ``every`` rounds, after a periodic evaluation and after the last round, then
    tells ``saved(path, round)`` (the run's other callbacks: the service uploads the adapter there)."""

    def __init__(self, every: int, keep: int, saved: Callable[[Path, int], None]):
        self.every, self.keep, self.saved = every, keep, saved

    def on_round_end(self, state: RunState) -> None:
        if state.progress.round % self.every == 0 or state.finished or evaluated_now(state.progress):
            self.saved(save_checkpoint(state, self.keep), state.progress.round)
