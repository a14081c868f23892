"""/v1/fine_tuning/alpha/graders: validate a grader spec, or score samples with it."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import project_id
from api.errors import InvalidRequest
from api.request_checks import StrictRoute
from api.routes import ERROR_RESPONSES
from api.schemas import GraderRun, GraderRunList, GraderRunResponse, GraderValidate, GraderValidateResponse
from api.services import graders

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"], route_class=StrictRoute,
                   responses=ERROR_RESPONSES)  # fmt: skip


@router.post("/validate")
def validate_grader(req: GraderValidate, _: str = Depends(project_id)) -> GraderValidateResponse:
    return GraderValidateResponse(**graders.validate_grader(req.grader))


@router.post("/run")
def run_grader(req: GraderRun, _: str = Depends(project_id)) -> GraderRunResponse | GraderRunList:
    """OpenAI's shape for one ``model_sample``; ours: a list of samples gets a list of those results."""
    samples = [req.model_sample] if isinstance(req.model_sample, str) else req.model_sample
    items = req.item if isinstance(req.item, list) else [req.item] * len(samples)
    if len(items) != len(samples):
        raise InvalidRequest(f"item has {len(items)} entries for {len(samples)} samples; give one item, "
                             "or one per sample", "item", "invalid_value")  # fmt: skip
    results = graders.run_grader(req.grader, samples, items)
    if isinstance(req.model_sample, str):
        return GraderRunResponse(**results[0])
    return GraderRunList(data=[GraderRunResponse(**r) for r in results], has_more=False)
