"""Request bodies and the OpenAI-shaped response objects."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from api.services.job_config import openai_hyperparameters
from store.models import Checkpoint, Event, File, Job, Metric

METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512  # OpenAI's documented bounds

# --- requests -------------------------------------------------------------------------------------


class Reinforcement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]
    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["reinforcement"]
    reinforcement: Reinforcement


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. integrations: accepted, unused
    model: str = Field(min_length=1, max_length=255)
    training_file: str
    validation_file: str | None = None
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
                raise PydanticCustomError("metadata", f"the value of {key!r} is longer than {limit} characters")
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


# --- responses ------------------------------------------------------------------------------------


def page(data: list[dict], has_more: bool) -> dict:
    return {"object": "list", "data": data, "has_more": has_more}


def file_object(f: File) -> dict:
    return {
        "id": f.id, "object": "file", "bytes": f.bytes, "created_at": f.created_at,
        "filename": f.filename, "purpose": f.purpose, "status": "processed",
        "status_details": None, "expires_at": None, "lines": f.lines,
    }  # fmt: skip


def job_object(j: Job) -> dict:
    hyper = openai_hyperparameters(j.config, j.method.get("hyperparameters", {}))
    return {
        "id": j.id,
        "object": "fine_tuning.job",
        "created_at": j.created_at,
        "error": j.error,
        "fine_tuned_model": j.fine_tuned_model,
        "finished_at": j.finished_at,
        "hyperparameters": {k: hyper[k] for k in ("batch_size", "learning_rate_multiplier", "n_epochs")},
        "model": j.model,
        "organization_id": j.project_id,
        "result_files": [],
        "seed": j.seed,
        "status": j.status,
        "trained_tokens": j.trained_tokens,
        "training_file": j.training_file,
        "validation_file": j.validation_file,
        "estimated_finish": None,
        "integrations": [],
        "metadata": j.meta,
        "suffix": j.suffix,
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": j.method["grader"], "hyperparameters": hyper},
        },
    }


def event_object(e: Event) -> dict:
    return {
        "id": e.id, "object": "fine_tuning.job.event", "created_at": e.created_at,
        "level": e.level, "message": e.message, "data": e.data, "type": e.type,
    }  # fmt: skip


def checkpoint_object(c: Checkpoint) -> dict:
    return {
        "id": c.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": c.created_at,
        "fine_tuned_model_checkpoint": c.name,
        "fine_tuning_job_id": c.job_id,
        "step_number": c.step_number,
        "metrics": {"step": c.step_number, "train_loss": c.metrics.get("loss"), **c.metrics},
        "round": c.round,
        "final": c.final,
        "adapter_url": f"/v1/fine_tuning/jobs/{c.job_id}/checkpoints/{c.id}/adapter",
    }


def metric_object(m: Metric) -> dict:
    return {"kind": m.kind, "step": m.step, "round": m.round, "phase": m.phase, "created_at": m.created_at,
            "metrics": m.values}  # fmt: skip
