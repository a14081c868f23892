"""/v1/fine_tuning/jobs: OpenAI's job routes plus metrics and adapter downloads."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.deps import Runtime, project_id, runtime, session
from api.schemas import JobCreate, checkpoint_object, event_object, job_object, metric_object, page
from api.services import jobs

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])
Session_ = Depends(session)
Project = Depends(project_id)
IdempotencyKey = Header(None, alias="Idempotency-Key", min_length=1, max_length=255,
                        description="A retry with the same key and body returns the job the first request made")  # fmt: skip


@router.post("")
def create_job(
    req: JobCreate, background: BackgroundTasks, idempotency_key: str | None = IdempotencyKey,
    rt: Runtime = Depends(runtime), s: Session = Session_, project: str = Project,
) -> dict:  # fmt: skip
    job = jobs.create_job(s, rt, project, req, idempotency_key)
    background.add_task(jobs.deliver, rt, job.id)  # after the response: a slow broker never delays it
    return job_object(job)


@router.get("")
def list_jobs(
    after: str | None = None, limit: int = Query(20, ge=1, le=1000), s: Session = Session_, project: str = Project
) -> dict:
    items, more = jobs.list_jobs(s, project, after, limit)
    return page([job_object(j) for j in items], more)


@router.get("/{job_id}")
def retrieve_job(job_id: str, s: Session = Session_, project: str = Project) -> dict:
    return job_object(jobs.get_job(s, project, job_id))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, s: Session = Session_, project: str = Project) -> dict:
    return job_object(jobs.cancel_job(s, project, job_id))


@router.post("/{job_id}/pause")
def pause_job(job_id: str, s: Session = Session_, project: str = Project) -> dict:
    return job_object(jobs.pause_job(s, project, job_id))


@router.post("/{job_id}/resume")
def resume_job(
    job_id: str, background: BackgroundTasks, rt: Runtime = Depends(runtime), s: Session = Session_,
    project: str = Project,
) -> dict:  # fmt: skip
    job = jobs.resume_job(s, project, job_id)
    background.add_task(jobs.deliver, rt, job.id)
    return job_object(job)


@router.get("/{job_id}/events")
def list_events(
    job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=1000),
    s: Session = Session_, project: str = Project,
) -> dict:  # fmt: skip
    items, more = jobs.list_events(s, project, job_id, after, limit)
    return page([event_object(e) for e in items], more)


@router.get("/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=1000),
    s: Session = Session_, project: str = Project,
) -> dict:  # fmt: skip
    items, more = jobs.list_checkpoints(s, project, job_id, after, limit)
    return page([checkpoint_object(c) for c in items], more)


@router.get("/{job_id}/metrics")
def list_metrics(
    job_id: str, kind: Literal["step", "round", "eval"] | None = None,
    step: int | None = Query(None, ge=0), step_min: int | None = Query(None, ge=0),
    step_max: int | None = Query(None, ge=0), limit: int = Query(1000, ge=1, le=100_000),
    s: Session = Session_, project: str = Project,
) -> dict:  # fmt: skip
    lo, hi = (step, step) if step is not None else (step_min, step_max)
    rows = jobs.list_metrics(s, project, job_id, kind=kind, step_min=lo, step_max=hi, limit=limit)
    return page([metric_object(m) for m in rows], False)


def _archive(rt: Runtime, key: str, name: str) -> StreamingResponse:
    headers = {"Content-Disposition": f'attachment; filename="{name}.tar.gz"'}
    return StreamingResponse(rt.artifacts.open(key), media_type="application/gzip", headers=headers)


@router.get("/{job_id}/adapter")
def download_adapter(job_id: str, rt: Runtime = Depends(runtime), s: Session = Session_, project: str = Project):
    """The job's final adapter (or its newest checkpoint's) as a .tar.gz for PeftModel.from_pretrained."""
    ckpt = jobs.get_checkpoint(s, project, job_id, None)
    return _archive(rt, ckpt.storage_key, f"{job_id}-adapter")


@router.get("/{job_id}/checkpoints/{checkpoint_id}/adapter")
def download_checkpoint_adapter(
    job_id: str, checkpoint_id: str, rt: Runtime = Depends(runtime), s: Session = Session_, project: str = Project
):
    ckpt = jobs.get_checkpoint(s, project, job_id, checkpoint_id)
    return _archive(rt, ckpt.storage_key, f"{job_id}-round-{ckpt.round}")
