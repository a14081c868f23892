"""The trainer callback that records a job as it runs: events, metrics, checkpoints, stop requests."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from rapid_core.callbacks import Callback
from rapid_core.graders.base import FAILURES
from store.artifacts import Artifacts, put_directory_archive
from store.models import Checkpoint
from store.repos import Checkpoints, Events, Jobs, Metrics

STOP_POLL_SECONDS = 0.25
PERCENTILES = ("p50", "p90", "p99")


def jsonable(value: Any) -> Any:
    """Plain JSON values: tensors and numpy scalars become numbers, NaN and inf become null."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "to_dict"):  # the core's typed metric records
            return obj.to_dict()
        if hasattr(obj, "item"):
            return obj.item()
        if hasattr(obj, "tolist"):
            return obj.tolist()
        return str(obj)

    def clean(obj: Any) -> Any:
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if isinstance(obj, dict):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return obj

    return clean(json.loads(json.dumps(value, default=default)))


def _fmt(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
    parts = [f"{k} {metrics[k]:.4g}" for k in keys if isinstance(metrics.get(k), int | float)]
    return ", ".join(parts)


def grader_trouble(metrics: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(message, data) of a round in which the grader timed out, crashed or lost its sandbox."""
    counts = metrics.get("grader_status") or {}
    failed = {s: counts[s] for s in FAILURES if counts.get(s)}
    if not failed:
        return None
    latency = metrics.get("grader_latency_s") or {}
    total = sum(v for v in counts.values() if isinstance(v, int))
    what = ", ".join(f"{s} {n}" for s, n in failed.items())
    times = ", ".join(f"{p} {latency[p]:.3g}s" for p in PERCENTILES if isinstance(latency.get(p), int | float))
    message = f"Round {metrics.get('round')}: the grader failed on {sum(failed.values())} of {total} samples"
    message += f" ({what})" + (f"; grader latency {times}" if times else "")
    data = {"round": metrics.get("round"), "grader_status": counts,
            "grader_latency_s": {p: latency.get(p) for p in PERCENTILES}}  # fmt: skip
    return message, data


class JobRecorder(Callback):
    def __init__(self, job_id: str, sessions: sessionmaker[Session], artifacts: Artifacts, lease: LeaseKeeper,
                 checkpoint_name: str):  # fmt: skip
        self.job_id, self.sessions, self.artifacts, self.lease = job_id, sessions, artifacts, lease
        self.checkpoint_name = checkpoint_name
        self.step = 0
        self.last_step: dict[str, Any] = {}
        self.last_round: dict[str, Any] = {}
        self.tokens = 0
        self._polled_at = 0.0
        self._stop: str | None = None

    def on_start(self, info: dict[str, Any]) -> None:
        info = jsonable(info)
        resumed = info["start_round"]
        with self.sessions() as s:
            if resumed:
                Metrics(s).drop_from_round(self.job_id, int(resumed))
                message = f"Training resumed from the checkpoint of round {resumed}"
            else:
                message = "Training started"
            Events(s).add(self.job_id, message, data=info)
            s.commit()

    def on_eval(self, phase: str, metrics: dict[str, Any]) -> None:
        metrics = jsonable(metrics)
        with self.sessions() as s:
            Metrics(s).add(self.job_id, "eval", metrics, phase=phase, step=self.step)
            summary = _fmt(metrics, (*[k for k in metrics if k.startswith("pass@")], "mean_reward"))
            Events(s).add(self.job_id, f"Evaluation {phase}: {summary}", type="metrics", data=metrics)
            s.commit()

    def on_step(self, metrics: dict[str, Any]) -> None:
        metrics = jsonable(metrics)
        self.step = int(metrics.get("step", self.step + 1))
        self.last_step = metrics
        with self.sessions() as s:
            Metrics(s).add(self.job_id, "step", metrics, step=self.step, round=metrics.get("round"))
            s.commit()

    def on_round(self, metrics: dict[str, Any]) -> None:
        metrics = jsonable(metrics)
        self.last_round = metrics
        round_index = metrics.get("round")
        with self.sessions() as s:
            Metrics(s).add(self.job_id, "round", metrics, step=self.step, round=round_index)
            summary = _fmt(metrics, ("reward_mean", "accuracy", "frac_zero_std", "samples_per_s"))
            Events(s).add(self.job_id, f"Round {round_index}: {summary}", type="metrics", data=metrics)
            trouble = grader_trouble(metrics)
            if trouble:
                Events(s).add(self.job_id, trouble[0], level="warn", data=trouble[1])
            s.commit()

    def on_checkpoint(self, path: Path, round_index: int) -> None:
        key = f"jobs/{self.job_id}/checkpoints/round-{round_index:06d}.tar.gz"
        put_directory_archive(self.artifacts, key, Path(path) / "adapter")
        self.record_checkpoint(key, round_index, final=False)

    def record_checkpoint(self, key: str, round_index: int, *, final: bool) -> None:
        merged = {**self.last_round, **self.last_step}
        metrics = {k: v for k, v in merged.items() if isinstance(v, int | float) and k != "round"}
        with self.sessions() as s:
            repo = Checkpoints(s)
            old = None if final else repo.for_round(self.job_id, round_index)
            if old is not None:  # a resumed run redid this round: the newer checkpoint wins
                s.delete(old)
                s.flush()
            suffix = "final" if final else f"ckpt-step-{self.step}"
            repo.add(Checkpoint(job_id=self.job_id, round=round_index, step_number=self.step, final=final,
                                name=f"{self.checkpoint_name}:{suffix}", metrics=metrics, storage_key=key))  # fmt: skip
            what = "Final adapter" if final else f"Checkpoint of round {round_index}"
            Events(s).add(self.job_id, f"{what} saved at step {self.step}")
            s.commit()

    def should_stop(self) -> str | None:
        if self.lease.lost:
            return "cancel"  # another worker owns the job now: stop without writing
        now = time.monotonic()
        if self._stop is None and now - self._polled_at >= STOP_POLL_SECONDS:
            self._polled_at = now
            with self.sessions() as s:
                status = Jobs(s).status(self.job_id)
            self._stop = {"cancelled": "cancel", "paused": "pause"}.get(status or "cancelled")
        return self._stop


class LeaseKeeper:
    """Renews the job's lease from a background thread while the trainer runs."""

    def __init__(self, job_id: str, owner: str, sessions: sessionmaker[Session], seconds: float):
        self.job_id, self.owner, self.sessions, self.seconds = job_id, owner, sessions, seconds
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        with self.sessions() as s:
            Jobs(s).release_lease(self.job_id, self.owner)
            s.commit()

    def _run(self) -> None:
        while not self._done.wait(self.seconds / 4):
            try:
                with self.sessions() as s:
                    renewed = Jobs(s).renew_lease(self.job_id, self.owner, self.seconds)
                    s.commit()
                if not renewed:
                    self.lost = True
                    return
            except Exception:  # a database blip: try again at the next beat
                continue
