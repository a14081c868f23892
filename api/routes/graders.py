"""/v1/fine_tuning/alpha/graders: validate a grader spec, or score samples with it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Runtime, project_id, runtime
from api.errors import InvalidRequest
from api.schemas import page
from api.services import graders

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])
MAX_SAMPLES = 64  # one request grades at most this many samples (the list form)
Sample = Annotated[str, Field(max_length=1_000_000)]


class GraderValidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]


class GraderRun(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. the older reference_answer: accepted, unused
    grader: dict[str, Any]
    model_sample: Sample | Annotated[list[Sample], Field(min_length=1, max_length=MAX_SAMPLES)]
    item: dict[str, Any] | list[dict[str, Any]] = Field(default_factory=dict)


@router.post("/validate")
def validate_grader(req: GraderValidate, _: str = Depends(project_id)) -> dict:
    return graders.validate_grader(req.grader)


@router.post("/run")
async def run_grader(req: GraderRun, rt: Runtime = Depends(runtime), project: str = Depends(project_id)) -> dict:
    """OpenAI's shape for one ``model_sample``; a list of samples gets a list of those results.
    Runs on the grader gate's threads, as the project's share of them, with no database session."""
    samples = [req.model_sample] if isinstance(req.model_sample, str) else req.model_sample
    items = req.item if isinstance(req.item, list) else [req.item] * len(samples)
    if len(items) != len(samples):
        raise InvalidRequest(f"item has {len(items)} entries for {len(samples)} samples; give one item, "
                             "or one per sample", "item", "invalid_value")  # fmt: skip
    results = await rt.graders.run(project, graders.run_grader, req.grader, samples, items)
    return results[0] if isinstance(req.model_sample, str) else page(results, False)
