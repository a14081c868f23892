"""Request bodies and the OpenAI-shaped response objects."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from store.models import Checkpoint, Event, File, Job, Metric

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
    hyper = j.method.get("hyperparameters", {})
    return {
        "id": j.id,
        "object": "fine_tuning.job",
        "created_at": j.created_at,
        "error": j.error,
        "fine_tuned_model": j.fine_tuned_model,
        "finished_at": j.finished_at,
        "hyperparameters": {
            "batch_size": j.config.get("mini_batch_size"),
            "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
            "n_epochs": hyper.get("n_epochs", "auto"),
        },
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
            "reinforcement": {"grader": j.method["grader"], "hyperparameters": {**hyper, **_echoed(j.config)}},
        },
    }


def _echoed(config: dict) -> dict:
    """The resolved TrainConfig values, less those the job object carries elsewhere."""
    return {k: v for k, v in config.items() if k not in ("model", "task", "grader", "seed")}


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
