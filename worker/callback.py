"""The trainer callback that records a job as it runs: events, metrics, checkpoints, stop requests."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from rapid_core.callbacks import Callback
from rapid_core.errors import Cancelled
from rapid_core.graders.base import FAILURES
from store.artifacts import Artifacts, put_directory_archive
from store.db import transact
from store.models import Checkpoint
from store.repos import Checkpoints, Events, Jobs, Metrics

log = logging.getLogger("rapid.worker")
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


def batch_decision(metrics: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(message, data) of the batch ratio batch_ratio_control=auto picked for a round, and why."""
    reason = metrics.get("batch_decision")
    if not reason:
        return None
    data = {k: metrics.get(k) for k in ("round", "batch_ratio", "batch_decision")}
    return f"Round {metrics.get('round')}: batch ratio U={metrics.get('batch_ratio')}: {reason}", data


def grader_trouble(metrics: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(message, data) of a round in which the grader timed out, crashed or lost its sandbox."""
    counts = metrics.get("grader_status") or {}
    failed = {s: counts[s] for s in FAILURES if counts.get(s)}
    if not failed:
        return None
    latency = metrics.get("grader_latency_s") or {}
    total = sum(v for v in counts.values() if isinstance(v, int))
    what = ", ".join(f"{s} {n}" for s, n in failed.items())
    times = ", ".join(
        f"{p} {latency[p]:.3g}s" for p in PERCENTILES if isinstance(latency.get(p), int | float)
    )
    message = f"Round {metrics.get('round')}: the grader failed on {sum(failed.values())} of {total} samples"
    message += f" ({what})" + (f"; grader latency {times}" if times else "")
    data = {
        "round": metrics.get("round"),
        "grader_status": counts,
        "grader_latency_s": {p: latency.get(p) for p in PERCENTILES},
    }
    return message, data


class LeaseLost(Exception):
    """Another worker took the job over: this one must stop without writing anything more."""


class JobRecorder(Callback):
    """Writes what the trainer reports. Every write is one transaction fenced by the job's lease (a
    worker that lost the job writes nothing) and retried through a database outage of up to
    ``retry_for`` seconds; the trainer waits meanwhile."""

    def __init__(
        self,
        job_id: str,
        sessions: sessionmaker[Session],
        artifacts: Artifacts,
        lease: LeaseKeeper,
        checkpoint_name: str,
        retry_for: float,
    ):
        self.job_id, self.sessions, self.artifacts, self.lease = job_id, sessions, artifacts, lease
        self.checkpoint_name, self.retry_for = checkpoint_name, retry_for
        self.step = 0
        self.last_step: dict[str, Any] = {}
        self.last_round: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}  # the last held-out evaluation: its checkpoint carries it
        self.best: dict[str, Any] | None = None  # the trainer's best periodic evaluation (Progress.best)
        self._polled_at = 0.0
        self._stop: str | None = None

    def write(self, work: Callable[[Session], Any]) -> Any:
        def fenced(s: Session) -> Any:
            if not Jobs(s).renew_lease(self.job_id, self.lease.owner, self.lease.seconds):
                raise LeaseLost
            return work(s)

        try:
            return transact(self.sessions, fenced, retry_for=self.retry_for)
        except LeaseLost:
            self.lease.lost = True
            raise Cancelled("cancel") from None

    def on_start(self, info: dict[str, Any]) -> None:
        info = jsonable(info)
        resumed = int(info.get("start_round") or 0)

        def record(s: Session) -> None:
            Metrics(s).drop_from_round(self.job_id, resumed)  # rounds this run does (again)
            message = (
                f"Training resumed from the checkpoint of round {resumed}" if resumed else "Training started"
            )
            Events(s).add(self.job_id, message, data=info)

        self.write(record)

    def on_eval(self, phase: str, metrics: dict[str, Any]) -> None:
        metrics = jsonable(metrics)
        self.last_eval = metrics
        step, round_index = metrics.get("step", self.step), metrics.get("round")
        summary = _fmt(metrics, (*[k for k in metrics if k.startswith("pass@")], "mean_reward"))
        message = f"Evaluation {phase}: {summary}"
        if phase == "interval":
            message = f"Step {step}: held-out pass@1 {metrics.get('pass@1', 0):.3g} on {metrics.get('problems')} problems"

        def record(s: Session) -> None:
            Metrics(s).put(self.job_id, "eval", metrics, phase=phase, step=step, round=round_index)
            Events(s).add(self.job_id, message, type="metrics", data=metrics)

        self.write(record)

    def on_step(self, metrics: dict[str, Any]) -> None:
        metrics = jsonable(metrics)
        self.step = int(metrics.get("step", self.step + 1))
        self.last_step = metrics
        self.write(
            lambda s: Metrics(s).put(self.job_id, "step", metrics, step=self.step, round=metrics.get("round"))
        )

    def on_round(self, metrics: dict[str, Any]) -> None:
        metrics = jsonable(metrics)
        self.last_round = metrics
        round_index = metrics.get("round")
        summary = _fmt(metrics, ("reward_mean", "accuracy", "frac_zero_std", "samples_per_s"))
        trouble = grader_trouble(metrics)
        decision = batch_decision(metrics)

        def record(s: Session) -> None:
            Metrics(s).put(self.job_id, "round", metrics, step=self.step, round=round_index)
            Events(s).add(self.job_id, f"Round {round_index}: {summary}", type="metrics", data=metrics)
            if decision:
                Events(s).add(self.job_id, decision[0], data=decision[1])
            if trouble:
                Events(s).add(self.job_id, trouble[0], level="warn", data=trouble[1])

        self.write(record)

    def on_round_end(self, state: Any) -> None:
        self.best = jsonable(state.progress.best)  # before the Checkpointer saves this boundary

    def on_checkpoint(self, path: Path, round_index: int) -> None:
        # The trainer's directory exists first, then the archive, then the row: a directory or an
        # archive without a row is removed when the job resumes (runner.reconcile_checkpoints).
        key = checkpoint_key(self.job_id, round_index)
        put_directory_archive(self.artifacts, key, Path(path) / "adapter")
        self.write(lambda s: self.record_checkpoint(s, key, round_index, final=False))

    def record_checkpoint(self, s: Session, key: str, round_index: int, *, final: bool) -> None:
        merged = {**self.last_round, **self.last_step}
        metrics = {k: v for k, v in merged.items() if isinstance(v, int | float) and k != "round"}
        metrics.update(held_out_metrics(self.last_eval, round_index))
        suffix = "final" if final else f"ckpt-step-{self.step}"
        checkpoints = Checkpoints(s)
        checkpoints.put(
            Checkpoint(
                job_id=self.job_id,
                round=round_index,
                step_number=self.step,
                final=final,
                name=f"{self.checkpoint_name}:{suffix}",
                metrics=metrics,
                storage_key=key,
            )
        )
        what = "Final adapter" if final else f"Checkpoint of round {round_index}"
        Events(s).add(self.job_id, f"{what} saved at step {self.step}")
        best = self.best
        if (
            not final
            and best
            and best.get("round") == round_index
            and checkpoints.mark_best(self.job_id, round_index)
        ):
            Events(s).add(
                self.job_id,
                f"New best checkpoint: step {best['step']} (round {round_index}), held-out "
                f"pass@1 {best['pass@1']:.3g} on {best.get('problems')} problems",
                data={k: best.get(k) for k in ("step", "round", "pass@1", "problems")},
            )  # no worker paths

    def should_stop(self) -> str | None:
        if self.lease.lost:
            return "cancel"  # another worker owns the job now: stop without writing
        now = time.monotonic()
        if self._stop is None and now - self._polled_at >= STOP_POLL_SECONDS:
            self._polled_at = now
            found = transact(
                self.sessions, lambda s: Jobs(s).status_and_owner(self.job_id), retry_for=self.retry_for
            )
            status, owner = found or ("cancelled", None)
            if owner != self.lease.owner:
                self.lease.lost = True
                return "cancel"
            self._stop = {"running": None, "paused": "pause"}.get(status, "cancel")
        return self._stop


def held_out_metrics(evaluation: dict[str, Any], round_index: int) -> dict[str, Any]:
    """A checkpoint's held-out scores, named as OpenAI names full-validation-set checkpoint metrics,
    when the last evaluation scored exactly its weights (same round)."""
    if not evaluation or evaluation.get("round") != round_index:
        return {}
    pass_at = {f"full_valid_{k}": v for k, v in evaluation.items() if k.startswith("pass@")}
    return {
        **pass_at,
        "full_valid_mean_reward": evaluation.get("mean_reward"),
        "full_valid_problems": evaluation.get("problems"),
    }


def checkpoint_key(job_id: str, round_index: int) -> str:
    return f"jobs/{job_id}/checkpoints/round-{round_index:06d}.tar.gz"


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
        try:
            transact(
                self.sessions,
                lambda s: Jobs(s).release_lease(self.job_id, self.owner),
                retry_for=self.seconds,
            )
        except Exception:  # the lease runs out by itself
            log.warning("could not release the lease of %s", self.job_id)

    def _run(self) -> None:
        wait = self.seconds / 4
        while not self._done.wait(wait):
            try:
                renewed = transact(
                    self.sessions, lambda s: Jobs(s).renew_lease(self.job_id, self.owner, self.seconds)
                )
            except Exception:  # a database blip: try again soon, before the lease runs out
                wait = min(1.0, self.seconds / 4)
                continue
            wait = self.seconds / 4
            if not renewed:
                self.lost = True
                return
