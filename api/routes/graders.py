"""/v1/fine_tuning/alpha/graders: validate a grader spec, or score samples with it."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import Runtime, project_id, runtime
from api.errors import InvalidRequest
from api.request_checks import StrictRoute
from api.routes import ERROR_RESPONSES
from api.schemas import GraderRun, GraderRunList, GraderRunResponse, GraderValidate, GraderValidateResponse
from api.services import graders

router = APIRouter(
    prefix="/v1/fine_tuning/alpha/graders",
    tags=["graders"],
    route_class=StrictRoute,
    responses=ERROR_RESPONSES,
)


@router.post("/validate")
def validate_grader(req: GraderValidate, _: str = Depends(project_id)) -> GraderValidateResponse:
    return GraderValidateResponse(**graders.validate_grader(req.grader))


@router.post("/run")
async def run_grader(
    req: GraderRun, rt: Runtime = Depends(runtime), project: str = Depends(project_id)
) -> GraderRunResponse | GraderRunList:
    """OpenAI's shape for one ``model_sample``; ours: a list of samples gets a list of those results.
    Runs on the grader gate's threads, as the project's share of them, with no database session."""
    samples = [req.model_sample] if isinstance(req.model_sample, str) else req.model_sample
    items = req.item if isinstance(req.item, list) else [req.item] * len(samples)
    if len(items) != len(samples):
        raise InvalidRequest(
            f"item has {len(items)} entries for {len(samples)} samples; give one item, or one per sample",
            "item",
            "invalid_value",
        )
    results = await rt.graders.run(project, graders.run_grader, req.grader, samples, items)
    if isinstance(req.model_sample, str):
        return GraderRunResponse(**results[0])
    return GraderRunList(data=[GraderRunResponse(**r) for r in results], has_more=False)
