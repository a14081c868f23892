"""Requeues jobs whose worker died: their lease ran out while they were queued or running.

Every worker runs this in a background thread; the compare-and-set in the store lets exactly one
of them requeue a given job, and the job's lease keeps duplicate messages harmless.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from sqlalchemy import update

from store.broker import enqueue_job
from store.db import make_engine, make_sessionmaker
from store.models import Job
from store.repos import Events, Jobs
from store.settings import Settings

log = logging.getLogger("rapid.worker")


def sweep_once(sessions, celery: Celery) -> list[str]:
    requeued = []
    with sessions() as s:
        for job_id in Jobs(s).orphaned():
            job = Jobs(s).by_id(job_id)
            taken = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == job.lease_owner, Job.status.in_(("queued", "running")))
                .values(lease_owner=None, lease_expires_at=None, status="queued")
            )
            if taken.rowcount != 1:
                continue
            Events(s).add(job_id, f"Worker {job.lease_owner} stopped answering; job requeued to resume", level="warn")
            s.commit()
            enqueue_job(celery, job_id, job.queue)
            requeued.append(job_id)
    return requeued


def start(celery: Celery, settings: Settings) -> threading.Thread:
    sessions = make_sessionmaker(make_engine(settings))

    def loop() -> None:
        while True:
            try:
                for job_id in sweep_once(sessions, celery):
                    log.warning("requeued orphaned job %s", job_id)
            except Exception:
                log.exception("sweep failed")
            stop.wait(max(1.0, settings.lease_seconds / 2))

    stop = threading.Event()
    thread = threading.Thread(target=loop, name="rapid-sweeper", daemon=True)
    thread.start()
    return thread
