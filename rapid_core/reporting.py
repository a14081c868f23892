"""Callbacks that report: the run files (config.json, summary.json), the metrics.jsonl writer and
the live progress bar."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rapid_core.callbacks import Callback
from rapid_core.config import RunPaths, TrainConfig
from rapid_core.metrics import EvalMetrics, RoundMetrics, StepMetrics
from rapid_core.state import RunInfo


class RunFiles(Callback):
    """``config.json`` (the resolved config and paths: a valid ``rapid train --config`` file) at the
    start, ``summary.json`` at the end."""

    def __init__(self, cfg: TrainConfig, paths: RunPaths):
        self.cfg, self.paths = cfg, paths

    def on_start(self, info: RunInfo) -> None:
        config = {**self.cfg.model_dump(mode="json"), **self.paths.model_dump(mode="json")}
        (self.paths.output_dir / "config.json").write_text(json.dumps(config, indent=2))

    def on_end(self, summary: dict[str, Any]) -> None:
        (self.paths.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))


class MetricsWriter(Callback):
    """Appends every step, round and eval record to ``metrics.jsonl``. On resume it first drops
    records of rounds that the checkpoint does not contain, so the file matches an unbroken run
    (a periodic evaluation at round boundary r belongs to the checkpoint of round r)."""

    def __init__(self, path: Path):
        self.path = path

    def on_start(self, info: RunInfo) -> None:
        start_round = info.start_round
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            rec = json.loads(line)
            phase = rec.get("phase") if rec["kind"] == "eval" else None
            interval_eval = phase == "interval" and rec["round"] <= start_round
            if phase == "before" or interval_eval or (rec["kind"] != "eval" and rec["round"] < start_round):
                kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept))

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_eval(self, phase: str, metrics: EvalMetrics) -> None:
        self._write({"kind": "eval", "phase": phase, **metrics.to_dict()})

    def on_step(self, metrics: StepMetrics) -> None:
        self._write({"kind": "step", **metrics.to_dict()})

    def on_round(self, metrics: RoundMetrics) -> None:
        self._write({"kind": "round", **metrics.to_dict()})


class ProgressBar(Callback):
    """A tqdm bar over rounds: reward, accuracy, staleness, samples/s."""

    def __init__(self, file=sys.stderr):
        self.file = file
        self.bar = None

    def on_start(self, info: RunInfo) -> None:
        from tqdm import tqdm

        desc = f"{info.algorithm} B={info.inference_batch} U={info.batch_ratio}"
        self.bar = tqdm(
            total=info.total_rounds,
            initial=info.start_round,
            unit="round",
            desc=desc,
            file=self.file,
            dynamic_ncols=True,
        )

    def on_eval(self, phase: str, metrics: EvalMetrics) -> None:
        extra = f", pass@{metrics.k} {metrics.pass_at_k:.3f}" if metrics.pass_at_k is not None else ""
        msg = f"eval {phase}: pass@1 {metrics.pass_at_1:.3f}{extra} on {metrics.problems} held-out problems"
        (self.bar.write if self.bar else print)(msg, file=self.file)

    def on_round(self, m: RoundMetrics) -> None:
        if self.bar is None:
            return
        stale = f"{m.staleness_mean:.1f}/{m.staleness_max}"
        reward, acc, sps = f"{m.reward_mean:.3f}", f"{m.accuracy:.3f}", f"{m.samples_per_s:.1f}"
        self.bar.set_postfix(reward=reward, acc=acc, stale=stale, sps=sps, refresh=False)
        self.bar.update(1)

    def on_end(self, summary: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
