"""Pre-flights: a job body validated as job creation validates it, then sampled and graded on a worker
of the job's queue (worker/preflight.py). Nothing here loads a model or runs grader code.

No job row, outbox row or event is written: the pre-flight's own row is its whole record. Its message
is published in the request; a broker that refuses it fails the pre-flight at once (503).
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session

from api.deps import Runtime
from api.errors import NotFound, Unavailable
from api.schemas import PreflightCreate
from api.services.jobs import validate_job
from store.broker import enqueue_preflight
from store.models import Preflight
from store.repos import Preflights

log = logging.getLogger("rapid.api")
PARAM = "preflight_id"


def create_preflight(s: Session, rt: Runtime, project_id: str, req: PreflightCreate) -> Preflight:
    training, _validation, _seed, built = validate_job(s, rt, project_id, req)
    row = Preflights(s).add(
        Preflight(
            project_id=project_id,
            model=req.model,
            training_file=training.id,
            config=built.config,
            queue=built.queue,
            prompts=req.prompts,
            timeout_s=req.timeout_s,
            status="queued",
            deadline=time.time() + req.timeout_s,
        )
    )
    s.commit()
    try:
        enqueue_preflight(rt.celery, row.id, row.queue)
    except Exception as err:
        log.warning("pre-flight %s: the broker is unreachable (%s)", row.id, type(err).__name__)
        Preflights(s).fail(row.id, {"code": "broker_unavailable", "message": "The broker is unreachable"})
        s.commit()
        raise Unavailable(
            "The broker is unreachable: the pre-flight could not be queued; retry shortly",
            None,
            "broker_unavailable",
        ) from None
    return row


def get_preflight(s: Session, rt: Runtime, project_id: str, preflight_id: str) -> Preflight:
    """The pre-flight; failed here if it is unfinished ``preflight_grace_seconds`` past its deadline (past
    it a worker finishes the chunk it samples and reports; later than the grace, no worker took it or it
    died)."""
    row = Preflights(s).get(project_id, preflight_id)
    if row is None:
        raise NotFound("pre-flight", preflight_id, PARAM)
    if Preflights(s).expire(row.id, rt.settings.preflight_grace_seconds):
        s.commit()
        s.refresh(row)
    return row
