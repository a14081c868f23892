"""/v1/fine_tuning/preflights (ours): a dry run of a job body on a worker, and its report."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from api.deps import Runtime, project_id, runtime, session
from api.request_checks import StrictRoute
from api.routes import ERROR_RESPONSES
from api.schemas import PreflightCreate, PreflightObject, preflight_object
from api.services import preflights

router = APIRouter(
    prefix="/v1/fine_tuning/preflights",
    tags=["fine-tuning"],
    route_class=StrictRoute,
    responses=ERROR_RESPONSES,
)


@router.post("")
def create_preflight(
    req: PreflightCreate,
    rt: Runtime = Depends(runtime),
    s: Session = Depends(session),
    project: str = Depends(project_id),
) -> PreflightObject:
    """Validate a job body as POST /v1/fine_tuning/jobs does, then sample ``prompts`` x group_size with the
    base model on a worker of the job's queue and grade them. Poll GET .../{id} for the report."""
    return preflight_object(preflights.create_preflight(s, rt, project, req))


@router.get("/{preflight_id}")
def retrieve_preflight(
    preflight_id: str,
    rt: Runtime = Depends(runtime),
    s: Session = Depends(session),
    project: str = Depends(project_id),
) -> PreflightObject:
    return preflight_object(preflights.get_preflight(s, rt, project, preflight_id))
