"""Fine-tuning jobs: create (validate, store, then enqueue), cancel, pause, resume, read."""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session

from api.deps import Runtime
from api.errors import InvalidRequest, NotFound, Unavailable
from api.schemas import JobCreate
from api.services.files import get_file, read_records
from api.services.graders import check_for_job
from api.services.job_config import build_job_config
from store.broker import enqueue_job
from store.models import TERMINAL, Checkpoint, Job
from store.repos import Checkpoints, Events, Jobs, touch

log = logging.getLogger("rapid.api")


def create_job(s: Session, rt: Runtime, project_id: str, req: JobCreate) -> Job:
    training = get_file(s, project_id, req.training_file, "training_file")
    validation = get_file(s, project_id, req.validation_file, "validation_file") if req.validation_file else None
    seed = req.seed if req.seed is not None else int(time.time()) % 2**31
    r = req.method.reinforcement
    built = build_job_config(
        model=req.model, grader=r.grader, hyperparameters=r.hyperparameters, seed=seed,
        training=training, validation=validation, settings=rt.settings, artifacts=rt.artifacts,
    )  # fmt: skip
    check_for_job(r.grader, next(read_records(rt.artifacts, training)))
    job = Job(project_id=project_id, model=req.model, training_file=training.id,
              validation_file=validation.id if validation else None, seed=seed, suffix=req.suffix,
              meta=req.metadata, method=r.model_dump(), config=built.config, queue=built.queue,
              status="queued")  # fmt: skip
    Jobs(s).add(job)
    Events(s).add(job.id, f"Created fine-tuning job {job.id} on queue {built.queue}")
    for note in built.notes:  # what each OpenAI hyperparameter the request set does here
        Events(s).add(job.id, f"Hyperparameter {note}")
    s.commit()  # the worker reads this row: commit before the message can arrive
    _enqueue(s, rt, job)
    return job


def _enqueue(s: Session, rt: Runtime, job: Job) -> None:
    try:
        enqueue_job(rt.celery, job.id, job.queue)
    except Exception as err:
        log.exception("enqueue of %s failed", job.id)
        touch(job, status="failed", error={"code": "broker_unavailable", "message": str(err), "param": None})
        s.commit()
        raise Unavailable("The job queue is unreachable; the job was marked failed", code="broker_unavailable") from None


def get_job(s: Session, project_id: str, job_id: str) -> Job:
    job = Jobs(s).get(project_id, job_id)
    if job is None:
        raise NotFound("fine-tuning job", job_id, "fine_tuning_job_id")
    return job


def cancel_job(s: Session, project_id: str, job_id: str) -> Job:
    job = get_job(s, project_id, job_id)
    if job.status in TERMINAL:
        raise InvalidRequest(f"Job {job.id} has already {job.status}; it cannot be cancelled", "fine_tuning_job_id",
                             "job_not_cancellable")  # fmt: skip
    # The worker polls the status between optimizer steps and stops; a queued job never starts.
    touch(job, status="cancelled")
    Events(s).add(job.id, "Job cancelled by request")
    s.commit()
    return job


def pause_job(s: Session, project_id: str, job_id: str) -> Job:
    job = get_job(s, project_id, job_id)
    if job.status not in ("queued", "running"):
        raise InvalidRequest(f"Job {job.id} is {job.status}; only a queued or running job can be paused",
                             "fine_tuning_job_id", "job_not_pausable")  # fmt: skip
    touch(job, status="paused")
    Events(s).add(job.id, "Job paused by request")
    s.commit()
    return job


def resume_job(s: Session, rt: Runtime, project_id: str, job_id: str) -> Job:
    job = get_job(s, project_id, job_id)
    if job.status != "paused":
        raise InvalidRequest(f"Job {job.id} is {job.status}; only a paused job can be resumed",
                             "fine_tuning_job_id", "job_not_paused")  # fmt: skip
    if job.lease_owner is not None and (job.lease_expires_at or 0) > time.time():
        raise InvalidRequest(f"Job {job.id} is still stopping at its next step; retry in a moment",
                             "fine_tuning_job_id", "job_pausing")  # fmt: skip
    touch(job, status="queued")
    Events(s).add(job.id, "Job resumed by request; it continues from its last checkpoint")
    s.commit()
    _enqueue(s, rt, job)
    return job


def get_checkpoint(s: Session, project_id: str, job_id: str, checkpoint_id: str | None) -> Checkpoint:
    """A checkpoint of the job, or its final (else newest) one when ``checkpoint_id`` is None."""
    job = get_job(s, project_id, job_id)
    repo = Checkpoints(s)
    ckpt = repo.final(job.id) if checkpoint_id is None else repo.get(job.id, checkpoint_id)
    if ckpt is None:
        raise NotFound("checkpoint", checkpoint_id or f"of job {job.id}", "checkpoint_id")
    return ckpt
