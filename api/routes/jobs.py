"""/v1/fine_tuning/jobs: OpenAI's job routes plus metrics and adapter downloads."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.deps import Runtime, project_id, runtime, session
from api.errors import InvalidRequest
from api.request_checks import StrictRoute
from api.routes import ERROR_RESPONSES
from api.schemas import (
    CheckpointList,
    EventList,
    JobCreate,
    JobList,
    JobObject,
    MetricList,
    checkpoint_object,
    event_object,
    id_page,
    job_object,
    metric_object,
)
from api.services import jobs

router = APIRouter(
    prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], route_class=StrictRoute, responses=ERROR_RESPONSES
)
Session_ = Depends(session)
Project = Depends(project_id)
MAX_STEP = 2**31 - 1  # the metrics table's integer column
IdempotencyKey = Header(
    None,
    alias="Idempotency-Key",
    min_length=1,
    max_length=255,
    description="A retry with the same key and body returns the job the first request made",
)
METADATA_FILTER = (
    "Optional metadata filter: metadata[k]=v (every pair must match), or metadata=null for jobs "
    "without metadata"
)


@router.post("")
def create_job(
    req: JobCreate,
    background: BackgroundTasks,
    idempotency_key: str | None = IdempotencyKey,
    rt: Runtime = Depends(runtime),
    s: Session = Session_,
    project: str = Project,
) -> JobObject:
    job = jobs.create_job(s, rt, project, req, idempotency_key)
    background.add_task(jobs.deliver, rt, job.id)  # after the response: a slow broker never delays it
    return job_object(job)


@router.get(
    "",
    openapi_extra={
        "parameters": [
            {
                "name": "metadata",
                "in": "query",
                "required": False,
                "style": "deepObject",
                "explode": True,
                "description": METADATA_FILTER,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        ]
    },
)
def list_jobs(
    request: Request,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=1000),
    s: Session = Session_,
    project: str = Project,
) -> JobList:
    filters, without = _metadata_filter(request)
    items, more = jobs.list_jobs(s, project, after, limit, filters, without_metadata=without)
    return JobList(**id_page([job_object(j) for j in items], more))


def _metadata_filter(request: Request) -> tuple[dict[str, str], bool]:
    """``metadata[k]=v`` pairs (the official clients' deepObject form), and whether ``metadata=null``."""
    pairs, without = {}, False
    for name, value in request.query_params.multi_items():
        if name == "metadata":
            if value != "null":
                raise InvalidRequest("metadata: use metadata[key]=value, or metadata=null", "metadata")
            without = True
        elif name.startswith("metadata[") and name.endswith("]") and len(name) > len("metadata[]"):
            pairs[name[len("metadata[") : -1]] = value
    if without and pairs:
        raise InvalidRequest("metadata=null cannot be combined with metadata[key]=value", "metadata")
    return pairs, without


@router.get("/{fine_tuning_job_id}")
def retrieve_job(fine_tuning_job_id: str, s: Session = Session_, project: str = Project) -> JobObject:
    return job_object(jobs.get_job(s, project, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel")
def cancel_job(fine_tuning_job_id: str, s: Session = Session_, project: str = Project) -> JobObject:
    return job_object(jobs.cancel_job(s, project, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/pause")
def pause_job(fine_tuning_job_id: str, s: Session = Session_, project: str = Project) -> JobObject:
    return job_object(jobs.pause_job(s, project, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/resume")
def resume_job(
    fine_tuning_job_id: str,
    background: BackgroundTasks,
    rt: Runtime = Depends(runtime),
    s: Session = Session_,
    project: str = Project,
) -> JobObject:
    job = jobs.resume_job(s, project, fine_tuning_job_id)
    background.add_task(jobs.deliver, rt, job.id)
    return job_object(job)


@router.get("/{fine_tuning_job_id}/events")
def list_events(
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=1000),
    s: Session = Session_,
    project: str = Project,
) -> EventList:
    items, more = jobs.list_events(s, project, fine_tuning_job_id, after, limit)
    return EventList(**id_page([event_object(e) for e in items], more))


@router.get("/{fine_tuning_job_id}/checkpoints")
def list_checkpoints(
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: int = Query(10, ge=1, le=1000),
    s: Session = Session_,
    project: str = Project,
) -> CheckpointList:
    items, more = jobs.list_checkpoints(s, project, fine_tuning_job_id, after, limit)
    return CheckpointList(**id_page([checkpoint_object(c) for c in items], more))


@router.get("/{fine_tuning_job_id}/metrics")
def list_metrics(
    fine_tuning_job_id: str,
    kind: Literal["step", "round", "eval"] | None = None,
    step: int | None = Query(None, ge=0, le=MAX_STEP),
    step_min: int | None = Query(None, ge=0, le=MAX_STEP),
    step_max: int | None = Query(None, ge=0, le=MAX_STEP),
    limit: int = Query(1000, ge=1, le=100_000),
    s: Session = Session_,
    project: str = Project,
) -> MetricList:
    """Ours: the job's metric records (RAPID.md), filtered by kind and step."""
    lo, hi = (step, step) if step is not None else (step_min, step_max)
    rows = jobs.list_metrics(s, project, fine_tuning_job_id, kind=kind, step_min=lo, step_max=hi, limit=limit)
    return MetricList(data=[metric_object(m) for m in rows], has_more=False)


def _archive(rt: Runtime, key: str, name: str) -> StreamingResponse:
    headers = {"Content-Disposition": f'attachment; filename="{name}.tar.gz"'}
    return StreamingResponse(rt.artifacts.open(key), media_type="application/gzip", headers=headers)


ARCHIVE = {
    200: {
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The adapter as a .tar.gz",
    }
}


@router.get("/{fine_tuning_job_id}/adapter", response_class=StreamingResponse, responses=ARCHIVE)
def download_adapter(
    fine_tuning_job_id: str, rt: Runtime = Depends(runtime), s: Session = Session_, project: str = Project
):
    """Ours: the job's final adapter (or its newest checkpoint's) as a .tar.gz for PeftModel.from_pretrained."""
    ckpt = jobs.get_checkpoint(s, project, fine_tuning_job_id, None)
    return _archive(rt, ckpt.storage_key, f"{fine_tuning_job_id}-adapter")


@router.get(
    "/{fine_tuning_job_id}/checkpoints/{checkpoint_id}/adapter",
    response_class=StreamingResponse,
    responses=ARCHIVE,
)
def download_checkpoint_adapter(
    fine_tuning_job_id: str,
    checkpoint_id: str,
    rt: Runtime = Depends(runtime),
    s: Session = Session_,
    project: str = Project,
):
    """Ours: one checkpoint's adapter as a .tar.gz; checkpoint id ``best`` names the checkpoint with the
    best held-out pass@1 of the evaluations every eval_interval steps."""
    ckpt = jobs.get_checkpoint(s, project, fine_tuning_job_id, checkpoint_id)
    return _archive(rt, ckpt.storage_key, f"{fine_tuning_job_id}-round-{ckpt.round}")
