"""Callbacks that report: the metrics.jsonl writer and the live progress bar."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rapid_core.callbacks import Callback


class MetricsWriter(Callback):
    """Appends every step, round and eval record to ``metrics.jsonl``. On resume it first drops
    records of rounds that the checkpoint does not contain, so the file matches an unbroken run."""

    def __init__(self, path: Path):
        self.path = path

    def on_start(self, info: dict[str, Any]) -> None:
        start_round = info["start_round"]
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            rec = json.loads(line)
            before_eval = rec["kind"] == "eval" and rec.get("phase") == "before"
            if before_eval or (rec["kind"] != "eval" and rec["round"] < start_round):
                kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept))

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_eval(self, phase: str, metrics: dict[str, Any]) -> None:
        self._write({"kind": "eval", "phase": phase, **metrics})

    def on_step(self, metrics: dict[str, Any]) -> None:
        self._write({"kind": "step", **metrics})

    def on_round(self, metrics: dict[str, Any]) -> None:
        self._write({"kind": "round", **metrics})


class ProgressBar(Callback):
    """A tqdm bar over rounds: reward, accuracy, staleness, samples/s."""

    def __init__(self, file=sys.stderr):
        self.file = file
        self.bar = None

    def on_start(self, info: dict[str, Any]) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=info.get("total_rounds"), initial=info["start_round"], unit="round",
                        desc=f"{info['algorithm']} B={info['inference_batch']} U={info['batch_ratio']}",
                        file=self.file, dynamic_ncols=True)

    def on_eval(self, phase: str, metrics: dict[str, Any]) -> None:
        k = next((key for key in metrics if key.startswith("pass@") and key != "pass@1"), None)
        extra = f", {k} {metrics[k]:.3f}" if k else ""
        msg = f"eval {phase}: pass@1 {metrics.get('pass@1', 0):.3f}{extra} on {metrics.get('problems')} held-out problems"
        (self.bar.write if self.bar else print)(msg, file=self.file)

    def on_round(self, m: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix(reward=f"{m['reward_mean']:.3f}", acc=f"{m['accuracy']:.3f}",
                             stale=f"{m['staleness_mean']:.1f}/{m['staleness_max']}",
                             sps=f"{m['samples_per_s']:.1f}", refresh=False)
        self.bar.update(1)

    def on_end(self, summary: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
