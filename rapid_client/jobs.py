"""Job operations on top of the official client: upload-or-reference files, create a job, read its
metrics, download and unpack an adapter."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

import openai
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from rapid_client.connection import ClientError, get_bytes, get_json

TERMINAL = ("succeeded", "failed", "cancelled")
BEST = "best"  # the checkpoint id the server resolves to the job's best checkpoint


def upload(client: openai.OpenAI, path: str | Path) -> FileObject:
    """Upload a JSONL file of records for fine-tuning."""
    try:
        with Path(path).open("rb") as f:
            return client.files.create(file=f, purpose="fine-tune")
    except OSError as err:
        raise ClientError(f"cannot read {str(path)!r}: {err.strerror}") from None


def file_id(client: openai.OpenAI, path_or_id: str, what: str = "training file") -> str:
    """The id of an uploaded file: a local JSONL path is uploaded first, a ``file-...`` id is used as is."""
    if Path(path_or_id).is_file():
        return upload(client, path_or_id).id
    if path_or_id.startswith("file-"):
        return path_or_id
    raise ClientError(f"{what} {path_or_id!r} is neither a local file nor a file id (file-...)")


def create_job(
    client: openai.OpenAI,
    *,
    model: str,
    training_file: str,
    grader: dict[str, Any],
    hyperparameters: dict[str, Any] | None = None,
    validation_file: str | None = None,
    seed: int | None = None,
    suffix: str | None = None,
) -> FineTuningJob:
    """A reinforcement fine-tuning job; the files may be local paths (uploaded here) or file ids."""
    training = file_id(client, training_file, "training file")
    validation = file_id(client, validation_file, "validation file") if validation_file else None
    method = {
        "type": "reinforcement",
        "reinforcement": {"grader": grader, "hyperparameters": hyperparameters or {}},
    }
    extra = {
        k: v
        for k, v in {"validation_file": validation, "seed": seed, "suffix": suffix}.items()
        if v is not None
    }
    return client.fine_tuning.jobs.create(model=model, training_file=training, method=method, **extra)


def preflight(
    client: openai.OpenAI,
    *,
    model: str,
    training_file: str,
    grader: dict[str, Any],
    hyperparameters: dict[str, Any] | None = None,
    seed: int | None = None,
    prompts: int | None = None,
    timeout_s: int | None = None,
    interval: float = 1.0,
) -> dict[str, Any]:
    """Pre-flight a job body (RAPID's extension): queue it, then poll until it has succeeded or failed.
    The server fails it once ``timeout_s`` (and a grace period) have passed, so this wait is bounded."""
    training = file_id(client, training_file, "training file")
    method = {
        "type": "reinforcement",
        "reinforcement": {"grader": grader, "hyperparameters": hyperparameters or {}},
    }
    extra = {
        k: v for k, v in {"seed": seed, "prompts": prompts, "timeout_s": timeout_s}.items() if v is not None
    }
    body = {"model": model, "training_file": training, "method": method, **extra}
    run = client.post("/fine_tuning/preflights", body=body, cast_to=object)
    while run["status"] in ("queued", "running"):
        time.sleep(interval)
        run = get_json(client, f"/fine_tuning/preflights/{run['id']}")
    return run


def metrics(
    client: openai.OpenAI, job_id: str, kind: str | None = None, step_min: int | None = None
) -> list[dict]:
    """The job's metric records (RAPID's extension): kind "step", "round" or "eval", oldest first."""
    page = get_json(
        client, f"/fine_tuning/jobs/{job_id}/metrics", kind=kind, step_min=step_min, limit=100_000
    )
    return page["data"]


def held_out(client: openai.OpenAI, job_id: str) -> dict[str, dict[str, Any]]:
    """Held-out evaluations by phase ("before", "after"; of the periodic "interval" ones, the last)."""
    return {m["phase"]: m["metrics"] for m in metrics(client, job_id, "eval") if m.get("phase")}


def best_checkpoint(client: openai.OpenAI, job_id: str) -> FineTuningJobCheckpoint | None:
    """The checkpoint the server marked best (jobs with eval_interval), if any."""
    page = client.fine_tuning.jobs.checkpoints.list(job_id, limit=1000)
    return next((c for c in page.data if (c.model_extra or {}).get("best")), None)


def total_rounds(job: FineTuningJob) -> int | None:
    """Rounds the job runs, from the hyperparameters the server echoes back resolved."""
    hp = (
        job.method.reinforcement.hyperparameters.model_dump()
        if job.method and job.method.reinforcement
        else {}
    )
    limits = [hp["rounds"]] if hp.get("rounds") else []
    if hp.get("max_samples"):
        batch = (
            hp["prompts_per_round"] * hp["group_size"]
            if hp.get("algorithm") == "rapid"
            else hp["mini_batch_size"]
        )
        limits.append(-(-hp["max_samples"] // batch))
    return min(limits) if limits else None


def download_adapter(
    client: openai.OpenAI, job_id: str, dest: str | Path, checkpoint_id: str | None = None
) -> Path:
    """Unpack the job's final adapter (or a checkpoint's; ``BEST``: the best one) into ``dest``, a
    directory that ``peft.PeftModel.from_pretrained(base_model, dest)`` loads."""
    path = f"/fine_tuning/jobs/{job_id}/adapter"
    if checkpoint_id:
        path = f"/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}/adapter"
    archive = get_bytes(client, path)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")  # refuses absolute paths, .. and links out of dest
    except tarfile.TarError as err:
        raise ClientError(f"the adapter archive of {job_id} could not be unpacked: {err}") from None
    return dest
