"""Fine-tuning jobs: create (validate, store with its outbox row, publish), cancel, pause, resume, read.

Status changes go through the store's one compare-and-set (``Jobs.move``): of two requests racing
for the same job, one wins and writes its event; the other is refused, naming the status it found.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from sqlalchemy import or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import Runtime
from api.errors import ApiError, IdempotencyKeyReused, InvalidRequest, NotFound
from api.schemas import JobCreate
from api.services.files import get_file, read_records
from api.services.graders import check_for_job
from api.services.job_config import JobConfig, build_job_config
from store.dispatch import publish
from store.models import Checkpoint, Event, File, Job, Metric
from store.repos import Checkpoints, Events, Jobs, Metrics, Outboxes, UnknownCursor

log = logging.getLogger("rapid.api")
PARAM = "fine_tuning_job_id"
BEST = "best"  # the checkpoint id that names the job's best checkpoint


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _earlier(s: Session, project_id: str, key: str, digest: str) -> Job | None:
    """The job an earlier request with this idempotency key created; refused if its body differed."""
    job = Jobs(s).by_idempotency_key(project_id, key)
    if job is not None and job.request_hash != digest:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was used for a different job request (job {job.id})"
        )
    return job


def create_job(
    s: Session, rt: Runtime, project_id: str, req: JobCreate, idempotency_key: str | None = None
) -> Job:
    """Store the job and its outbox row in one transaction; ``deliver`` then publishes it. A retry with
    the same ``idempotency_key`` and body returns the job the first request created."""
    digest = request_hash(req.model_dump(mode="json")) if idempotency_key else None
    if idempotency_key and (earlier := _earlier(s, project_id, idempotency_key, digest)):
        return earlier
    training, validation, seed, built = validate_job(s, rt, project_id, req)
    r = req.method.reinforcement
    job = Job(
        project_id=project_id,
        model=req.model,
        training_file=training.id,
        validation_file=validation.id if validation else None,
        seed=seed,
        suffix=req.suffix,
        meta=req.metadata,
        method=r.model_dump(),
        config=built.config,
        queue=built.queue,
        status="queued",
        idempotency_key=idempotency_key,
        request_hash=digest,
    )
    try:
        Jobs(s).add(job)
        Outboxes(s).add(job.id, built.queue)
        Events(s).add(job.id, f"Created fine-tuning job {job.id} on queue {built.queue}")
        for note in built.notes:  # what each OpenAI hyperparameter the request set does here
            Events(s).add(job.id, f"Hyperparameter {note}")
        s.commit()
    except IntegrityError:  # a concurrent request with the same idempotency key committed first
        s.rollback()
        if idempotency_key and (earlier := _earlier(s, project_id, idempotency_key, digest)):
            return earlier
        raise
    return job


def validate_job(
    s: Session, rt: Runtime, project_id: str, req: JobCreate
) -> tuple[File, File | None, int, JobConfig]:
    """A job request's files, seed and validated config (with its queue), or the 4xx naming the field.
    Job creation and the pre-flight both validate a body here."""
    training = get_file(s, project_id, req.training_file, "training_file")
    validation = (
        get_file(s, project_id, req.validation_file, "validation_file") if req.validation_file else None
    )
    seed = req.seed if req.seed is not None else int(time.time()) % 2**31
    r = req.method.reinforcement
    built = build_job_config(
        model=req.model,
        grader=r.grader,
        hyperparameters=r.hyperparameters,
        seed=seed,
        training=training,
        validation=validation,
        settings=rt.settings,
        artifacts=rt.artifacts,
    )
    check_for_job(r.grader, next(read_records(rt.artifacts, training)))
    return training, validation, seed, built


def deliver(rt: Runtime, job_id: str) -> None:
    """Publish the job's outbox row, after the response. With the broker down the row stays, and a
    worker's sweep publishes it once the broker is back: the job is committed, so it is never lost."""
    try:
        publish(rt.sessions, rt.celery, job_id=job_id)
    except Exception as err:
        log.warning("job %s waits in the outbox: the broker is unreachable (%s)", job_id, type(err).__name__)


def get_job(s: Session, project_id: str, job_id: str) -> Job:
    job = Jobs(s).get(project_id, job_id)
    if job is None:
        raise NotFound("fine-tuning job", job_id, PARAM)
    return job


def list_jobs(
    s: Session,
    project_id: str,
    after: str | None,
    limit: int,
    metadata: dict[str, str] | None = None,
    *,
    without_metadata: bool = False,
) -> tuple[list[Job], bool]:
    """Newest first; filtered by metadata pairs (all must match) or to jobs without metadata."""
    try:
        return Jobs(s).page(project_id, after, limit, metadata, without_metadata=without_metadata)
    except UnknownCursor:
        raise NotFound("fine-tuning job", after or "", "after") from None


def _moved(s: Session, job: Job, won: bool) -> bool:
    s.commit()
    s.refresh(job)  # the winner's status, whoever won
    return won


def _has(status: str) -> str:
    return "been cancelled" if status == "cancelled" else status


def cancel_job(s: Session, project_id: str, job_id: str) -> Job:
    job = get_job(s, project_id, job_id)
    # The worker polls the status between optimizer steps and stops; a queued job never starts.
    if not _moved(s, job, Jobs(s).move(job.id, "cancel", event="Job cancelled by request")):
        raise InvalidRequest(
            f"Job {job.id} has already {_has(job.status)}; it cannot be cancelled",
            PARAM,
            "job_not_cancellable",
        )
    return job


def pause_job(s: Session, project_id: str, job_id: str) -> Job:
    job = get_job(s, project_id, job_id)
    if not _moved(s, job, Jobs(s).move(job.id, "pause", event="Job paused by request")):
        raise InvalidRequest(
            f"Job {job.id} is {job.status}; only a queued or running job can be paused",
            PARAM,
            "job_not_pausable",
        )
    return job


def resume_job(s: Session, project_id: str, job_id: str) -> Job:
    """Queue a paused job again (``deliver`` publishes it); refused while its worker is still stopping."""
    job = get_job(s, project_id, job_id)
    lease_free = or_(Job.lease_owner.is_(None), Job.lease_expires_at < time.time())
    won = Jobs(s).move(
        job.id,
        "resume",
        when=[lease_free],
        event="Job resumed by request; it continues from its last checkpoint",
    )
    if won:
        Outboxes(s).add(job.id, job.queue)
    if not _moved(s, job, won):
        if job.status == "paused":
            raise InvalidRequest(
                f"Job {job.id} is still stopping at its next step; retry in a moment", PARAM, "job_pausing"
            )
        raise InvalidRequest(
            f"Job {job.id} is {job.status}; only a paused job can be resumed", PARAM, "job_not_paused"
        )
    return job


def list_events(
    s: Session, project_id: str, job_id: str, after: str | None, limit: int
) -> tuple[list[Event], bool]:
    job = get_job(s, project_id, job_id)
    try:
        return Events(s).page(job.id, after, limit)
    except UnknownCursor:
        raise NotFound("event of this job", after or "", "after") from None


def list_checkpoints(
    s: Session, project_id: str, job_id: str, after: str | None, limit: int
) -> tuple[list[Checkpoint], bool]:
    job = get_job(s, project_id, job_id)
    try:
        return Checkpoints(s).page(job.id, after, limit)
    except UnknownCursor:
        raise NotFound("checkpoint of this job", after or "", "after") from None


def list_metrics(
    s: Session,
    project_id: str,
    job_id: str,
    *,
    kind: str | None,
    step_min: int | None,
    step_max: int | None,
    limit: int,
) -> list[Metric]:
    job = get_job(s, project_id, job_id)
    return Metrics(s).query(job.id, kind=kind, step_min=step_min, step_max=step_max, limit=limit)


class NoBestCheckpoint(NotFound):
    def __init__(self, job_id: str):
        ApiError.__init__(
            self,
            f"Job {job_id} has no best checkpoint (yet): checkpoints are scored only with the "
            "hyperparameter eval_interval, from its first evaluation on",
            "checkpoint_id",
            "not_found",
        )


def get_checkpoint(s: Session, project_id: str, job_id: str, checkpoint_id: str | None) -> Checkpoint:
    """A checkpoint of the job, its final (else newest) one when ``checkpoint_id`` is None, or the one
    marked best by the periodic held-out evaluations when it is ``"best"``."""
    job = get_job(s, project_id, job_id)
    repo = Checkpoints(s)
    if checkpoint_id == BEST:
        ckpt = repo.best(job.id)
        if ckpt is None:
            raise NoBestCheckpoint(job.id)
        return ckpt
    ckpt = repo.final(job.id) if checkpoint_id is None else repo.get(job.id, checkpoint_id)
    if ckpt is None:
        raise NotFound("checkpoint", checkpoint_id or f"of job {job.id}", "checkpoint_id")
    return ckpt
