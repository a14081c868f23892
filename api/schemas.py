"""Request bodies and the OpenAI-shaped response objects, as typed models so that the OpenAPI schema
describes what each route really takes and returns. Fields marked "ours" are RAPID's extensions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from api.services.job_config import openai_hyperparameters
from store.models import Checkpoint, Event, File, Job, Metric, Preflight

METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512  # OpenAI's documented bounds

# --- requests -------------------------------------------------------------------------------------

GraderSpec = Annotated[
    dict[str, Any],
    Field(
        description="A grader object (string_check, text_similarity, "
        "python, multi, or ours: numeric, exact, math, "
        "code_tests, lean)"
    ),
]
MAX_SAMPLES = 64  # one /run request grades at most this many samples (the list form, ours)
Sample = Annotated[str, Field(max_length=1_000_000)]


class Reinforcement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: GraderSpec
    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["reinforcement"]
    reinforcement: Reinforcement


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. integrations: accepted, unused
    model: str = Field(min_length=1, max_length=255)
    training_file: str = Field(max_length=64)
    validation_file: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    suffix: str | None = Field(None, max_length=64)
    metadata: dict[str, str] | None = None
    method: Method
    # Deprecated by OpenAI in favour of method.<type>.hyperparameters; refused rather than ignored.
    hyperparameters: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > METADATA_KEYS:
            raise PydanticCustomError("metadata", f"at most {METADATA_KEYS} keys, got {len(value)}")
        for key, item in value.items():
            if len(key) > METADATA_KEY_CHARS:
                raise PydanticCustomError("metadata", f"a key is longer than {METADATA_KEY_CHARS} characters")
            if len(item) > METADATA_VALUE_CHARS:
                limit = METADATA_VALUE_CHARS
                raise PydanticCustomError(
                    "metadata", f"the value of {key!r} is longer than {limit} characters"
                )
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _deprecated_hyperparameters(cls, value: dict[str, Any] | None) -> None:
        if value is not None:
            raise PydanticCustomError(
                "deprecated",
                "the top-level hyperparameters field is deprecated and not read here; send them as "
                "method.reinforcement.hyperparameters",
            )
        return None


PREFLIGHT_PROMPTS, PREFLIGHT_TIMEOUT_S = 64, 600  # a pre-flight's bounds (ours)


class PreflightCreate(JobCreate):
    """A job body (validated as POST /v1/fine_tuning/jobs validates it) plus how much to sample."""

    prompts: int = Field(
        8, ge=1, le=PREFLIGHT_PROMPTS, description="Prompts to sample, each group_size times"
    )
    timeout_s: int = Field(
        300,
        ge=10,
        le=PREFLIGHT_TIMEOUT_S,
        description="Seconds from now after which it "
        "stops sampling and, unfinished, fails (a worker must take it before then)",
    )


class GraderValidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: GraderSpec


class GraderRun(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. the older reference_answer: accepted, unused
    grader: GraderSpec
    model_sample: Sample | Annotated[list[Sample], Field(min_length=1, max_length=MAX_SAMPLES)] = Field(
        description="The completion to grade; ours: a list of up to 64 completions"
    )
    item: dict[str, Any] | Annotated[list[dict[str, Any]], Field(max_length=MAX_SAMPLES)] = Field(
        default_factory=dict, description="The dataset record; ours: one record per sample of a list"
    )


# --- responses ------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    status_details: str | None = None
    expires_at: int | None = None
    lines: int = Field(description="Ours: the number of records in the file")


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class JobError(BaseModel):
    code: str | None
    message: str
    param: str | None = None


class JobHyperparameters(BaseModel):
    batch_size: int | str | None
    learning_rate_multiplier: float | str | None
    n_epochs: int | str | None


class ReinforcementOut(BaseModel):
    grader: dict[str, Any]
    hyperparameters: dict[str, Any]


class MethodOut(BaseModel):
    type: Literal["reinforcement"] = "reinforcement"
    reinforcement: ReinforcementOut


class JobObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: JobHyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: str = Field(
        description="validating_files, queued, running, succeeded, failed, cancelled, "
        "or (as in OpenAI's pause) paused"
    )
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[dict[str, Any]]
    metadata: dict[str, str] | None
    user_provided_suffix: str | None
    method: MethodOut


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class EventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str = Field(description="info, warn or error")
    message: str
    data: dict[str, Any] | None
    type: str = Field(description="message or metrics")


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EventObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, Any]
    round: int = Field(description="Ours: the RAPID round the checkpoint ends")
    final: bool = Field(description="Ours: the job's final adapter")
    best: bool = Field(
        False,
        description="Ours: the checkpoint with the highest held-out pass@1 of the "
        "evaluations every eval_interval steps (the earlier on a tie); its adapter is also at "
        "/v1/fine_tuning/jobs/{id}/checkpoints/best/adapter",
    )
    adapter_url: str = Field(description="Ours: where to download the adapter (.tar.gz)")


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class MetricObject(BaseModel):
    kind: str
    step: int | None
    round: int | None
    phase: str | None
    created_at: int
    metrics: dict[str, Any]


class MetricList(BaseModel):
    """Ours: a job's metric records."""

    object: Literal["list"] = "list"
    data: list[MetricObject]
    has_more: bool


class GraderValidateResponse(BaseModel):
    grader: dict[str, Any]


class GraderRunMetadata(BaseModel):
    name: str
    type: str
    errors: dict[str, Any]
    execution_time: float
    scores: dict[str, Any]
    token_usage: int | None
    sampled_model_name: str | None
    status: str = Field(description="Ours: ok, wrong, timeout, error or sandbox_failure")
    detail: str = Field(description="Ours: what went wrong, when something did")
    sub_metadata: dict[str, Any] = Field(description="Ours: status and detail of each part of a multi grader")


class GraderRunResponse(BaseModel):
    reward: float
    metadata: GraderRunMetadata
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]


class GraderRunList(BaseModel):
    """Ours: the answer to a list of samples."""

    object: Literal["list"] = "list"
    data: list[GraderRunResponse]
    has_more: bool


# --- building responses from rows -----------------------------------------------------------------


def id_page(items: list, has_more: bool) -> dict[str, Any]:
    """The fields of a cursor page: data, first_id, last_id, has_more."""
    return {
        "data": items,
        "first_id": items[0].id if items else None,
        "last_id": items[-1].id if items else None,
        "has_more": has_more,
    }


def file_object(f: File) -> FileObject:
    return FileObject(
        id=f.id, bytes=f.bytes, created_at=f.created_at, filename=f.filename, purpose=f.purpose, lines=f.lines
    )


def job_object(j: Job) -> JobObject:
    hyper = openai_hyperparameters(j.config, j.method.get("hyperparameters", {}))
    return JobObject(
        id=j.id,
        created_at=j.created_at,
        error=j.error,
        fine_tuned_model=j.fine_tuned_model,
        finished_at=j.finished_at,
        hyperparameters={k: hyper[k] for k in ("batch_size", "learning_rate_multiplier", "n_epochs")},
        model=j.model,
        organization_id=j.project_id,
        result_files=[],
        seed=j.seed,
        status=j.status,
        trained_tokens=j.trained_tokens,
        training_file=j.training_file,
        validation_file=j.validation_file,
        estimated_finish=None,
        integrations=[],
        metadata=j.meta,
        user_provided_suffix=j.suffix,
        method={
            "reinforcement": {"grader": j.method["grader"], "hyperparameters": hyper},
        },
    )


def event_object(e: Event) -> EventObject:
    return EventObject(
        id=e.id, created_at=e.created_at, level=e.level, message=e.message, data=e.data, type=e.type
    )


def checkpoint_object(c: Checkpoint) -> CheckpointObject:
    return CheckpointObject(
        id=c.id,
        created_at=c.created_at,
        fine_tuned_model_checkpoint=c.name,
        fine_tuning_job_id=c.job_id,
        step_number=c.step_number,
        metrics={
            "step": c.step_number,
            "train_loss": c.metrics.get("loss"),
            **{k: v for k, v in c.metrics.items() if k != "best"},
        },
        round=c.round,
        final=c.final,
        best=bool(c.metrics.get("best")),
        adapter_url=f"/v1/fine_tuning/jobs/{c.job_id}/checkpoints/{c.id}/adapter",
    )


def metric_object(m: Metric) -> MetricObject:
    return MetricObject(
        kind=m.kind, step=m.step, round=m.round, phase=m.phase, created_at=m.created_at, metrics=m.values
    )


class PreflightObject(BaseModel):
    """A pre-flight (ours): queued, running, then succeeded with its ``report`` or failed with ``error``."""

    id: str
    object: Literal["fine_tuning.preflight"] = "fine_tuning.preflight"
    status: str = Field(description="queued, running, succeeded or failed")
    model: str
    training_file: str
    queue: str = Field(description="The worker class (queue) the job would run on, where this one ran")
    prompts: int
    timeout_s: int
    created_at: int
    started_at: int | None
    finished_at: int | None
    report: dict[str, Any] | None = Field(
        description="reward, zero_variance_share, grader, completions, timing, "
        "eta and warnings; see docs/preflight.md"
    )
    error: JobError | None


def preflight_object(p: Preflight) -> PreflightObject:
    return PreflightObject(
        id=p.id,
        status=p.status,
        model=p.model,
        training_file=p.training_file,
        queue=p.queue,
        prompts=p.prompts,
        timeout_s=p.timeout_s,
        created_at=p.created_at,
        started_at=p.started_at,
        finished_at=p.finished_at,
        report=p.report,
        error=p.error,
    )
