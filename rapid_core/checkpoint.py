"""Round-boundary checkpoints with everything exact resume needs: trainable weights, optimizer,
scheduler, RNG states, data position, counters. Written to a temporary directory, then renamed, so a
checkpoint directory that exists is complete."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rapid_core.models import Policy, save_adapter

PREFIX = "round-"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = sorted(p for p in checkpoint_dir(output_dir).glob(f"{PREFIX}*") if (p / "state.pt").is_file())
    return found[-1] if found else None


def save_checkpoint(
    output_dir: str | Path, round_index: int, policy: Policy, optimizer, scheduler, state: dict[str, Any],
    keep: int,
) -> Path:
    root = checkpoint_dir(output_dir)
    final = root / f"{PREFIX}{round_index:06d}"
    tmp = root / f".tmp-{PREFIX}{round_index:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_adapter(policy, tmp / "adapter")
    save_file({k: v.contiguous().cpu() for k, v in policy.trainable_state().items()}, tmp / "trainable.safetensors")
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng, **state},
        tmp / "state.pt",
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(p for p in root.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, policy: Policy, optimizer, scheduler) -> dict[str, Any]:
    policy.load_trainable_state({k: v.to(policy.device) for k, v in load_file(path / "trainable.safetensors").items()})
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    rng = state.pop("rng")
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state
