"""Run one stored job through the core trainer, under a lease, recording everything it does."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select

from rapid_core.config import RunPaths, TrainConfig
from rapid_core.errors import Cancelled, RapidError
from rapid_core.model_source import download_model
from store.artifacts import LocalArtifacts, put_directory_archive
from store.db import make_engine, make_sessionmaker
from store.models import TERMINAL, File, Job, now
from store.repos import Checkpoints, Events, Jobs
from store.settings import Settings
from worker.callback import JobRecorder, LeaseKeeper, jsonable

log = logging.getLogger("rapid.worker")


@lru_cache
def _sessions(url: str):
    return make_sessionmaker(make_engine(Settings(database_url=url)))


def run_job(job_id: str, settings: Settings) -> str:
    """Returns what happened: skipped, succeeded, failed or stopped."""
    sessions = _sessions(settings.database_url)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    with sessions() as s:
        jobs = Jobs(s)
        job = jobs.by_id(job_id)
        if job is None or job.status in TERMINAL or job.status == "paused":
            return "skipped"
        if not jobs.acquire_lease(job_id, owner, settings.lease_seconds):
            s.rollback()
            Events(s).add(job_id, f"A second delivery of this job was ignored: worker {job.lease_owner} runs it")
            s.commit()
            return "skipped"
        jobs.set_status(job_id, "running", only_from=("queued", "running"), started_at=job.started_at or now())
        last = Checkpoints(s).final(job_id)
        note = f"; continuing after the checkpoint of round {last.round}" if last else ""
        Events(s).add(job_id, f"Job running on worker {owner} (attempt {job.attempts}){note}")
        s.commit()
        config, training, validation = dict(job.config), _file(s, job.training_file), _file(s, job.validation_file)
        checkpoint_name = f"ft:{job.model}:{job.suffix or 'rapid'}:{job.id}"

    artifacts = LocalArtifacts(settings.artifacts_dir)
    output_dir = settings.runs_dir / job_id
    with LeaseKeeper(job_id, owner, sessions, settings.lease_seconds) as lease:
        recorder = JobRecorder(job_id, sessions, artifacts, lease, checkpoint_name)
        try:
            cfg = TrainConfig.model_validate(config)  # the API validated and stored it: no re-mapping here
            paths = RunPaths(
                output_dir=output_dir, data_path=str(artifacts.local_path(training.storage_key)),
                eval_path=str(artifacts.local_path(validation.storage_key)) if validation else None,
            )  # fmt: skip
            download_model(cfg.model, progress=lambda message: _event(sessions, job_id, message))
            from rapid_core.trainer import train  # torch loads here, in the worker only

            summary = train(cfg, paths, callbacks=[recorder], progress=False)
        except Cancelled as err:
            if not lease.lost:
                _event(sessions, job_id, f"Training stopped at step {recorder.step} ({getattr(err, 'request', 'cancel')})")
            return "stopped"
        except Exception as err:
            log.exception("job %s failed", job_id)
            if not lease.lost:
                _fail(sessions, job_id, err)
            return "failed"
        _succeed(sessions, job_id, recorder, artifacts, output_dir, summary)
    return "succeeded"


def _file(s, file_id: str | None) -> File | None:
    return s.scalar(select(File).where(File.id == file_id)) if file_id else None


def _event(sessions, job_id: str, message: str, **kw) -> None:
    with sessions() as s:
        Events(s).add(job_id, message, **kw)
        s.commit()


def _fail(sessions, job_id: str, err: Exception) -> None:
    code = "invalid_job" if isinstance(err, RapidError) else "internal_error"
    with sessions() as s:
        error = {"code": code, "message": f"{type(err).__name__}: {err}", "param": getattr(err, "field", None)}
        Jobs(s).set_status(job_id, "failed", only_from=("queued", "running"), error=error, finished_at=now())
        Events(s).add(job_id, f"Job failed: {error['message']}", level="error")
        s.commit()


def _succeed(sessions, job_id: str, recorder: JobRecorder, artifacts, output_dir: Path, summary: dict) -> None:
    key = f"jobs/{job_id}/adapter.tar.gz"
    put_directory_archive(artifacts, key, output_dir / "adapter")
    summary = jsonable(summary or {})
    recorder.record_checkpoint(key, int(summary.get("rounds", recorder.last_round.get("round", 0)) or 0), final=True)
    tokens = summary.get("trained_tokens")
    with sessions() as s:
        job: Job = Jobs(s).by_id(job_id)
        Jobs(s).set_status(
            job_id, "succeeded", only_from=("running",), finished_at=now(), summary=summary,
            trained_tokens=int(tokens) if isinstance(tokens, int | float) else None,
            fine_tuned_model=f"ft:{job.model}:{job.suffix or 'rapid'}:{job.id}",
        )  # fmt: skip
        Events(s).add(job_id, "The job has successfully completed")
        s.commit()
