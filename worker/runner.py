"""Run one stored job through the core trainer, under a lease, recording everything it does.

Every status change goes through the store's compare-and-set (``Jobs.move``), fenced by the lease:
a job cancelled or paused while it trains, even during the final evaluation, never turns succeeded.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rapid_core.config import RunPaths, TrainConfig
from rapid_core.errors import Cancelled, RapidError
from rapid_core.model_source import download_model
from store.artifacts import Artifacts, LocalArtifacts, put_directory_archive
from store.db import StoreUnavailable, transact
from store.models import TERMINAL, Job, now
from store.repos import Checkpoints, Events, Files, Jobs
from store.settings import Settings
from worker.callback import JobRecorder, LeaseKeeper, checkpoint_key, jsonable

log = logging.getLogger("rapid.worker")
CHECKPOINT_PREFIX = "round-"  # the trainer's checkpoints/round-000004/
# torch.save reports a full disk as an "enforce fail" RuntimeError: a failure with this little room
# left where the job writes is a full disk, whatever the exception says.
DISK_FULL_BYTES = 16 << 20


@dataclass
class Claimed:
    """What the worker needs of the job row, read in the transaction that took the job."""

    config: dict
    training_key: str
    validation_key: str | None
    checkpoint_name: str


def run_job(job_id: str, settings: Settings, sessions: sessionmaker[Session]) -> str:
    """Returns what happened: skipped, succeeded, failed or stopped."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    retry = settings.db_retry_seconds
    claimed = transact(sessions, lambda s: _claim(s, job_id, owner, settings.lease_seconds), retry_for=retry)
    if claimed is None:
        return "skipped"

    artifacts = LocalArtifacts(settings.artifacts_dir)
    output_dir = settings.runs_dir / job_id
    with LeaseKeeper(job_id, owner, sessions, settings.lease_seconds) as lease:
        recorder = JobRecorder(job_id, sessions, artifacts, lease, claimed.checkpoint_name, retry)
        try:
            reconcile_checkpoints(recorder, artifacts, output_dir)
            cfg = TrainConfig.model_validate(claimed.config)  # the API validated and stored it: no re-mapping
            paths = RunPaths(
                output_dir=output_dir,
                data_path=str(artifacts.local_path(claimed.training_key)),
                eval_path=str(artifacts.local_path(claimed.validation_key))
                if claimed.validation_key
                else None,
            )
            download_model(cfg.model, progress=lambda message: _event(recorder, message))  # once, as events
            from rapid_core.trainer import train  # torch loads here, in the worker only

            summary = train(cfg, paths, callbacks=[recorder], progress=False)
            return _finish(recorder, artifacts, output_dir, summary)
        except Cancelled as err:
            if not lease.lost:
                _event(recorder, f"Training stopped at step {recorder.step} ({err.request})")
            return "stopped"
        except Exception as err:
            log.exception("job %s failed", job_id)
            if not lease.lost:
                _fail(recorder, failure(err, output_dir))
            return "failed"


def _claim(s: Session, job_id: str, owner: str, lease_seconds: float) -> Claimed | None:
    jobs = Jobs(s)
    job = jobs.by_id(job_id)
    if job is None or job.status in TERMINAL or job.status == "paused":
        return None
    if not jobs.acquire_lease(job_id, owner, lease_seconds):
        Events(s).add(job_id, f"A second delivery of this job was ignored: worker {job.lease_owner} runs it")
        return None
    last = Checkpoints(s).final(job_id)
    note = f"; continuing after the checkpoint of round {last.round}" if last else ""
    started = jobs.move(
        job_id,
        "start",
        when=[Job.lease_owner == owner],
        started_at=func.coalesce(Job.started_at, now()),
        event=f"Job running on worker {owner} (attempt {job.attempts + 1}){note}",
    )
    if not started:
        s.rollback()
        return None
    validation = Files(s).by_id(job.validation_file) if job.validation_file else None
    return Claimed(
        config=dict(job.config),
        training_key=Files(s).by_id(job.training_file).storage_key,
        validation_key=validation.storage_key if validation else None,
        checkpoint_name=f"ft:{job.model}:{job.suffix or 'rapid'}:{job.id}",
    )


def reconcile_checkpoints(recorder: JobRecorder, artifacts: Artifacts, output_dir: Path) -> None:
    """A checkpoint directory is written before its row; one without a row (the database went away in
    between) is removed with its archive, so the trainer resumes from the newest recorded checkpoint."""
    folder = output_dir / "checkpoints"
    if not folder.is_dir():
        return
    recorded = recorder.write(lambda s: Checkpoints(s).rounds(recorder.job_id))
    for path in sorted(folder.glob(f"{CHECKPOINT_PREFIX}*")):
        round_index = int(path.name.removeprefix(CHECKPOINT_PREFIX))
        if round_index not in recorded:
            shutil.rmtree(path)
            artifacts.delete(checkpoint_key(recorder.job_id, round_index))
            _event(
                recorder,
                f"The checkpoint of round {round_index} was never recorded; it is dropped and redone",
            )


def _event(recorder: JobRecorder, message: str) -> None:
    try:
        recorder.write(lambda s: Events(s).add(recorder.job_id, message))
    except (StoreUnavailable, Cancelled):
        log.warning("job %s: could not record the event %r", recorder.job_id, message)


def _disk_full(err: Exception, output_dir: Path) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(output_dir).free < DISK_FULL_BYTES
    except OSError:
        return False


def failure(err: Exception, output_dir: Path) -> dict:
    """The job's ``error`` object: what went wrong, without SQL, paths of other jobs or stack frames."""
    if isinstance(err, StoreUnavailable):
        code, message = (
            "database_unavailable",
            f"{err}; the job stopped. Its records and checkpoints are kept.",
        )
    elif isinstance(err, SQLAlchemyError):
        code, message = "internal_error", f"The job store refused a write ({type(err).__name__})"
    elif _disk_full(err, output_dir):
        code, message = "disk_full", "The worker ran out of disk space while writing the job's files"
    elif isinstance(err, RapidError):
        code, message = "invalid_job", f"{type(err).__name__}: {err}"
    else:
        code, message = "internal_error", f"{type(err).__name__}: {err}"
    return {"code": code, "message": message, "param": getattr(err, "field", None)}


def _fail(recorder: JobRecorder, error: dict) -> None:
    try:
        recorder.write(
            lambda s: Jobs(s).move(
                recorder.job_id,
                "fail",
                when=[Job.lease_owner == recorder.lease.owner],
                error=error,
                event=f"Job failed: {error['message']}",
                level="error",
            )
        )
    except (
        StoreUnavailable,
        Cancelled,
    ):  # still no database, or no longer ours: the lease runs out, a sweep requeues
        log.error("could not record the failure of job %s", recorder.job_id)


def _finish(recorder: JobRecorder, artifacts: Artifacts, output_dir: Path, summary: dict) -> str:
    """Record the final adapter and succeed, in one transaction, only if the job is still running."""
    job_id = recorder.job_id
    key = f"jobs/{job_id}/adapter.tar.gz"
    put_directory_archive(artifacts, key, output_dir / "adapter")
    summary = jsonable(summary or {})
    tokens = summary.get("trained_tokens")
    round_index = int(summary.get("rounds", recorder.last_round.get("round", 0)) or 0)

    def succeed(s: Session) -> str | None:
        won = Jobs(s).move(
            job_id,
            "succeed",
            when=[Job.lease_owner == recorder.lease.owner],
            summary=summary,
            trained_tokens=int(tokens) if isinstance(tokens, int | float) else None,
            fine_tuned_model=recorder.checkpoint_name,
        )
        if not won:
            return Jobs(s).status(job_id) or "gone"
        recorder.record_checkpoint(s, key, round_index, final=True)
        Events(s).add(job_id, "The job has successfully completed")
        return None

    lost_to = recorder.write(succeed)
    if lost_to is None:
        return "succeeded"
    artifacts.delete(key)  # no final row: no final archive either
    then = " Resume it to record the final adapter." if lost_to == "paused" else ""
    _event(recorder, f"Training finished, but the job was {lost_to} first; it stays {lost_to}.{then}")
    return "stopped"
