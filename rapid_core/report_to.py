"""``report_to``: a run's metrics also go where people already look, named as TRL names them:
"tensorboard" (event files in ``<output_dir>/tensorboard``) and "wandb" (a Weights & Biases run;
set WANDB_PROJECT, WANDB_MODE=offline, ... as usual). Off by default ("none"); "all" is every one.

Each reporter is a trainer callback registered by name. Everything is logged against the optimizer
step ("train/global_step"): step metrics as ``train/*``, round metrics as ``round/*``, held-out
evaluations as ``eval/*`` (before at step 0, after at the last step). Nested numbers such as
``grader_status`` become ``round/grader_status/ok``; text is left out. A resumed run continues the
same TensorBoard log (the replayed steps are purged) and the same W&B run (its id is kept in
``<output_dir>/wandb-run-id``).
"""

from __future__ import annotations

import importlib.util
import math
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rapid_core.callbacks import Callback
from rapid_core.config import RunPaths, TrainConfig
from rapid_core.errors import ConfigError
from rapid_core.registry import Registry

REPORTERS: Registry[Callable[[TrainConfig, RunPaths], Callback]] = Registry("report_to")
INSTALL_HINT = "pip install 'rapid-rl[report]'"


def reporter_names(report_to: str | list[str]) -> list[str]:
    """The reporters a ``report_to`` value asks for, in a stable order."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if "all" in names:
        return REPORTERS.names()
    return [n for n in dict.fromkeys(names) if n != "none"]


def build_reporters(cfg: TrainConfig, paths: RunPaths) -> list[Callback]:
    """The callbacks of ``cfg.report_to``; fails before any model loads if a package is missing."""
    return [REPORTERS.get(name, "report_to")(cfg, paths) for name in reporter_names(cfg.report_to)]


def _plain(record: Any) -> dict[str, Any]:
    """A metrics record (the trainer's typed records have ``to_dict``) as a plain mapping."""
    return record.to_dict() if hasattr(record, "to_dict") else dict(record)


def flatten(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """Finite numbers of a metrics record under ``prefix/``, nested mappings joined with '/'."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name))
        elif isinstance(value, int | float) and math.isfinite(value):
            out[name] = float(value)
    return out


def _require(module: str, name: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"report_to {name!r} needs the {module} package: {INSTALL_HINT}", "report_to")


class _StepReporter(Callback):
    """Turns the trainer's hooks into (values, global step) records for ``write``."""

    def __init__(self) -> None:
        self.step = 0

    def write(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def on_step(self, metrics: Any) -> None:
        values = _plain(metrics)
        self.step = int(values["step"])
        self.write(flatten(values, "train"), self.step)

    def on_round(self, metrics: Any) -> None:
        values = _plain(metrics)
        self.step = int(values.get("step", self.step))
        self.write(flatten(values, "round"), self.step)

    def on_eval(self, phase: str, metrics: Any) -> None:
        self.write(flatten(_plain(metrics), "eval"), 0 if phase == "before" else self.step)


@REPORTERS.register("tensorboard")
class TensorBoardReporter(_StepReporter):
    def __init__(self, cfg: TrainConfig, paths: RunPaths):
        super().__init__()
        _require("tensorboard", "tensorboard")
        self.log_dir = Path(paths.output_dir) / "tensorboard"
        self.writer = None

    def write(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # A resumed run's first record is a step after its checkpoint: events at or past it,
            # written before the interruption, are dropped so the curves match an unbroken run.
            purge = step if any(k.startswith("train/") for k in values) else None
            self.writer = SummaryWriter(str(self.log_dir), purge_step=purge)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def on_round(self, metrics: Any) -> None:
        super().on_round(metrics)
        self.writer.flush()  # a cancelled job keeps everything up to its last round

    def on_end(self, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()


@REPORTERS.register("wandb")
class WandbReporter(_StepReporter):
    def __init__(self, cfg: TrainConfig, paths: RunPaths):
        super().__init__()
        _require("wandb", "wandb")
        self.cfg, self.out = cfg, Path(paths.output_dir)
        self.run = None

    def on_start(self, info: Any) -> None:
        import wandb

        out = self.out
        id_file = out / "wandb-run-id"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(6)
        id_file.write_text(run_id)
        self.run = wandb.init(
            id=run_id,
            resume="allow",
            dir=str(out),
            name=out.name,
            reinit="finish_previous",
            config={**self.cfg.model_dump(), **_plain(info)},
        )
        self.run.define_metric("train/global_step")
        self.run.define_metric("*", step_metric="train/global_step")

    def write(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "train/global_step": step})

    def on_end(self, summary: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.finish()
