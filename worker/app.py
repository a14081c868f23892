"""The worker's Celery app and its one task. Start it with ``python -m worker``.

One sessionmaker per process: the pool child forked for each job (``worker_max_tasks_per_child=1``)
inherits the parent's, and drops the parent's pooled connections before it opens its own.
"""

from __future__ import annotations

from celery.signals import worker_process_init, worker_ready

from store.broker import PREFLIGHT_TASK, RUN_JOB_TASK, make_celery
from store.db import make_engine, make_sessionmaker
from store.settings import get_settings
from worker import preflight, runner, sweeper

celery = make_celery(get_settings())
sessions = make_sessionmaker(make_engine(get_settings()))


@celery.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    """Idempotent: a redelivered message finds the job's lease or its checkpoints and does the right thing."""
    runner.run_job(job_id, get_settings(), sessions)


@celery.task(name=PREFLIGHT_TASK)
def run_preflight(preflight_id: str) -> None:
    """A dry run of a job body; a second delivery finds it started and does nothing."""
    preflight.run_preflight(preflight_id, get_settings(), sessions)


@worker_process_init.connect
def _own_connections(**_) -> None:
    sessions.kw["bind"].dispose(close=False)


@worker_ready.connect
def _start_sweeper(**_) -> None:
    sweeper.start(celery, get_settings(), sessions)
