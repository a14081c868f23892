"""Keeps every committed job moving: each pass requeues jobs whose worker died (their lease ran
out), publishes outbox rows nobody published (the API died after its commit, or the broker was down),
and republishes queued jobs whose message the broker lost.

Every worker runs this in a background thread of its main process. The compare-and-set in the store
lets exactly one of them requeue a given job; a message published twice is harmless (the job's lease).
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from store.db import transact
from store.dispatch import publish, recover_lost
from store.repos import Jobs
from store.settings import Settings

log = logging.getLogger("rapid.worker")
OUTBOX_GRACE_S = 5.0  # the API publishes its own rows at once; the sweeper takes those it did not


def requeue_orphans(sessions: sessionmaker[Session], celery: Celery) -> list[str]:
    requeued = []
    for job_id, owner in transact(sessions, lambda s: Jobs(s).orphaned()):
        if transact(sessions, lambda s, j=job_id, o=owner: Jobs(s).requeue_orphan(j, o)):
            publish(sessions, celery, job_id=job_id)
            requeued.append(job_id)
    return requeued


class Sweeper:
    def __init__(self, sessions: sessionmaker[Session], celery: Celery):
        self.sessions, self.celery = sessions, celery
        self.suspects: set[str] = set()  # waiting jobs whose message was missing on the last pass

    def sweep_once(self) -> None:
        for job_id in requeue_orphans(self.sessions, self.celery):
            log.warning("requeued orphaned job %s", job_id)
        for job_id in publish(self.sessions, self.celery, older_than=OUTBOX_GRACE_S):
            log.warning("published job %s from the outbox", job_id)
        lost, self.suspects = recover_lost(self.sessions, self.celery, self.suspects)
        for job_id in lost:
            log.warning("republished job %s: the broker lost its message", job_id)


def start(celery: Celery, settings: Settings, sessions: sessionmaker[Session]) -> threading.Thread:
    sweeper = Sweeper(sessions, celery)

    def loop() -> None:
        while True:
            try:
                sweeper.sweep_once()
            except Exception as err:  # the database or the broker is down: try again next time
                log.warning("sweep failed: %s: %s", type(err).__name__, err)
            stop.wait(settings.sweep_seconds)

    stop = threading.Event()
    thread = threading.Thread(target=loop, name="rapid-sweeper", daemon=True)
    thread.start()
    return thread
