"""Delivering committed jobs to the broker: the outbox drain, and the recovery of lost messages.

A change that needs a worker (create, resume, requeue) commits an outbox row with the job. ``publish``
sends the row's message, then deletes the row. A crash in between leaves the row for the next drain,
so a message may go out twice (the task's lease makes the second harmless) but never zero times.

A broker can also lose a message it accepted (Redis restarted without persistence). ``recover_lost``
looks for queued jobs that no worker holds, no outbox row will publish, and whose message is not in the
broker, and publishes them again.
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from store.broker import enqueue_job, jobs_in_broker
from store.db import transact
from store.models import Outbox
from store.repos import Events, Jobs, Outboxes

log = logging.getLogger("rapid.dispatch")


def publish(
    sessions: sessionmaker[Session], celery: Celery, *, job_id: str | None = None, older_than: float = 0.0
) -> list[str]:
    """Publish the outbox rows (of one job, or all older than ``older_than`` seconds); returns their jobs.
    Raises the broker's error when it is unreachable: the rows not yet sent stay for the next drain."""
    rows: list[Outbox] = transact(
        sessions, lambda s: Outboxes(s).pending(job_id=job_id, older_than=older_than)
    )
    sent = []
    for row in rows:
        enqueue_job(celery, row.job_id, row.queue)
        transact(sessions, lambda s, seq=row.seq: Outboxes(s).done(seq))
        sent.append(row.job_id)
    return sent


def recover_lost(
    sessions: sessionmaker[Session], celery: Celery, suspects: set[str]
) -> tuple[list[str], set[str]]:
    """Republish waiting jobs whose message is missing from the broker on this pass and the one before
    (``suspects``): a worker takes a message off the queue a moment before it takes the job's lease.
    Returns (republished jobs, this pass's suspects for the next call)."""
    waiting = transact(sessions, lambda s: Jobs(s).waiting())
    present = jobs_in_broker(celery)
    if present is None:
        return [], set()
    missing = {job_id for job_id in waiting if job_id not in present}
    lost = sorted(missing & suspects)

    def requeue(s: Session) -> None:
        jobs = Jobs(s)
        still = set(jobs.waiting())  # nobody took or republished them meanwhile
        for job_id in lost:
            if job_id in still:
                Outboxes(s).add(job_id, jobs.by_id(job_id).queue)
                Events(s).add(
                    job_id,
                    "The job's queue message was lost by the broker; it was published again",
                    level="warn",
                )

    if lost:
        transact(sessions, requeue)
        for job_id in lost:
            publish(sessions, celery, job_id=job_id)
    return lost, missing - set(lost)
