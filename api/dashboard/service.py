"""The dashboard's reads: a project's jobs with their latest round, and everything one job page
shows. Only through the store's repositories and the job services, scoped to the caller's project."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from api.dashboard import views
from api.schemas import checkpoint_object, event_object
from api.services import jobs
from rapid_core.config import TrainConfig
from store.models import Job
from store.repos import Checkpoints, Events, Jobs, Metrics

EVENTS_SHOWN = 50
CHECKPOINTS_SHOWN = 100
MAX_METRIC_RECORDS = 100_000


@dataclass
class JobRow:
    job: Job
    last_round: dict[str, Any] | None
    progress: views.Progress


def _steps_per_round(job: Job) -> int:
    cfg = TrainConfig.model_construct(**job.config)
    return max(cfg.batch_ratio_max if cfg.auto_batch else cfg.batch_ratio, 1)  # auto: U varies up to max


def latest_round(s: Session, job: Job) -> dict[str, Any] | None:
    """The newest round record, found from the newest step: its round ended at most U steps earlier."""
    last = Metrics(s).last_step(job.id)
    if last is None or last.step is None:
        return None
    since = max(last.step - _steps_per_round(job), 0)
    rows = Metrics(s).query(job.id, kind="round", step_min=since)
    return {**rows[-1].values, "round": rows[-1].round} if rows else None


def job_rows(s: Session, project_id: str, after: str | None, limit: int) -> tuple[list[JobRow], bool]:
    items, more = Jobs(s).page(project_id, after, limit)
    now = time.time()
    rows = []
    for job in items:
        last = latest_round(s, job)
        rows.append(JobRow(job, last, views.progress(job, [last] if last else [], {}, now)))
    return rows, more


@dataclass
class JobPage:
    job: Job
    progress: views.Progress
    last_round: dict[str, Any] | None
    evals: dict[str, dict[str, Any]]
    health: list[tuple[str, str]]
    series: dict[str, Any]
    events: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]


def job_page(s: Session, project_id: str, job_id: str) -> JobPage:
    job = jobs.get_job(s, project_id, job_id)
    records = Metrics(s).query(job.id, limit=MAX_METRIC_RECORDS)
    rounds = [{**m.values, "round": m.round} for m in records if m.kind == "round"]
    steps = [{**m.values, "step": m.step, "round": m.round} for m in records if m.kind == "step"]
    evals = {m.phase: m.values for m in records if m.kind == "eval" and m.phase}
    interval = [{**m.values, "step": m.step} for m in records if m.kind == "eval" and m.phase == "interval"]
    final_step = steps[-1]["step"] if steps else 0
    events, _ = Events(s).page(job.id, None, EVENTS_SHOWN)
    checkpoints, _ = Checkpoints(s).page(job.id, None, CHECKPOINTS_SHOWN)
    return JobPage(
        job=job,
        progress=views.progress(job, rounds, evals, time.time()),
        last_round=rounds[-1] if rounds else None,
        evals=evals,
        health=views.health(rounds, steps),
        series=views.series(rounds, steps, evals, final_step, interval),
        events=[event_object(e) for e in events],
        checkpoints=[checkpoint_object(c) for c in checkpoints],
    )
