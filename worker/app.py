"""The worker's Celery app and its one task. Start it with ``python -m worker``."""

from __future__ import annotations

from celery.signals import worker_ready

from store.broker import RUN_JOB_TASK, make_celery
from store.settings import get_settings
from worker import runner, sweeper

celery = make_celery(get_settings())


@celery.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    """Idempotent: a redelivered message finds the job's lease or its checkpoints and does the right thing."""
    runner.run_job(job_id, get_settings())


@worker_ready.connect
def _start_sweeper(**_) -> None:
    sweeper.start(celery, get_settings())
