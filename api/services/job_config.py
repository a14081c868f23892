"""Turn a job request into validated TrainConfig values, before any row is written.

OpenAI's reinforcement hyperparameters are mapped where they have a meaning here; every
TrainConfig field is accepted as an extra hyperparameter. ``make_config`` validates the result,
so a bad value is a 400 naming the field. The core is imported lazily and never loads torch here.
"""

from __future__ import annotations

import math
from typing import Any

from api.errors import InvalidRequest
from api.services.files import read_records
from rapid_core.config import TrainConfig, make_config
from rapid_core.errors import ConfigError, DatasetError
from store.artifacts import Artifacts
from store.models import File
from store.settings import Settings

HP = "method.reinforcement.hyperparameters"
# Set by the service from the request and the stored files, never by a hyperparameter.
RESERVED = {"model", "task", "data_path", "eval_path", "grader", "output_dir", "seed"}
# OpenAI fields that have no meaning here: accepted only as "auto" / null.
IGNORED = {"compute_multiplier", "eval_interval", "reasoning_effort"}
# Bounds TrainConfig leaves open, but that no single job on this service should exceed.
SERVICE_LIMITS = {
    "group_size": 1024, "prompts_per_round": 65536, "mini_batch_size": 65536, "rounds": 1_000_000,
    "eval_problems": 100_000, "max_samples": 10**9, "gen_micro_batch": 65536, "n_epochs": 1000,
}  # fmt: skip
BASE_LEARNING_RATE = TrainConfig.model_fields["learning_rate"].default


def _fail(message: str, field: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", f"{HP}.{field}", "invalid_hyperparameter")


def _openai_values(hp: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """TrainConfig values from OpenAI's fields, and which OpenAI field each came from."""
    values, source = {}, {}
    if hp.get("batch_size", "auto") != "auto":
        values["mini_batch_size"], source["mini_batch_size"] = hp["batch_size"], "batch_size"
    mult = hp.get("learning_rate_multiplier", "auto")
    if mult != "auto":
        if not isinstance(mult, int | float) or isinstance(mult, bool) or mult <= 0:
            raise _fail("must be a positive number or 'auto'", "learning_rate_multiplier")
        values["learning_rate"], source["learning_rate"] = BASE_LEARNING_RATE * mult, "learning_rate_multiplier"
    if hp.get("eval_samples", "auto") != "auto":
        values["eval_problems"], source["eval_problems"] = hp["eval_samples"], "eval_samples"
    for name in IGNORED:
        if hp.get(name, "auto") not in ("auto", None, "default"):
            raise _fail("is not supported by this service; leave it 'auto'", name)
    return values, source


def _check_limits(hp: dict[str, Any]) -> None:
    for field, limit in SERVICE_LIMITS.items():
        value = hp.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
            raise _fail(f"{value} is above this service's limit of {limit}", field)


def build_job_config(
    *, model: str, grader: dict[str, Any], hyperparameters: dict[str, Any], seed: int,
    training: File, validation: File | None, settings: Settings, artifacts: Artifacts | None = None,
) -> tuple[dict[str, Any], str]:  # fmt: skip
    """Validated TrainConfig values (without paths) and the queue the job goes to. With ``artifacts``,
    a file that lacks a field the grader reads is refused naming its first such line."""
    _check_grader(grader, training, validation, artifacts)
    _check_model(model)
    hp = dict(hyperparameters)
    reserved = sorted(RESERVED & set(hp))
    if reserved:
        raise _fail("is set by the service from the job request, not as a hyperparameter", reserved[0])
    _check_limits(hp)
    n_epochs = hp.pop("n_epochs", "auto")
    openai_keys = {"batch_size", "learning_rate_multiplier", "eval_samples"} | IGNORED
    mapped, source = _openai_values(hp)
    extras = {k: v for k, v in hp.items() if k not in openai_keys}
    values = {**mapped, **extras, "model": model, "task": "jsonl", "grader": grader, "seed": seed}
    cfg = _make(values, source)
    if n_epochs != "auto" and "rounds" not in extras:
        if not isinstance(n_epochs, int) or isinstance(n_epochs, bool) or n_epochs < 1:
            raise _fail("must be a positive integer or 'auto'", "n_epochs")
        values["rounds"] = max(1, math.ceil(n_epochs * training.lines / cfg.round_prompts))
        cfg = _make(values, source)
    config = cfg.model_dump(mode="json")
    queue = settings.default_queue if cfg.device == "auto" else cfg.device
    return config, queue


def _make(values: dict[str, Any], source: dict[str, str]) -> TrainConfig:
    try:
        return make_config(**values)
    except ConfigError as err:
        field = source.get(err.field or "", err.field)
        if field is None:
            raise InvalidRequest(f"hyperparameters: {err.reason}", HP, "invalid_hyperparameter") from None
        raise _fail(err.reason, field) from None


def _check_grader(
    grader: dict[str, Any], training: File, validation: File | None, artifacts: Artifacts | None
) -> None:
    from rapid_core.graders import GRADERS, build_grader

    kind = grader.get("type")
    if kind not in GRADERS:
        raise InvalidRequest(
            f"Grader type {kind!r} is not supported; supported: {', '.join(GRADERS.names())}",
            "method.reinforcement.grader.type", "unsupported_grader",
        )  # fmt: skip
    built = build_grader(grader)
    needed = built.required_fields()
    for param, file in (("training_file", training), ("validation_file", validation)):
        # Upload stored the fields every record has: only a file that lacks one is read again.
        if file is None or needed <= set(file.fields):
            continue
        message = f"The grader reads field(s) {sorted(needed - set(file.fields))} that not every record has"
        if artifacts is not None:
            message = _first_bad_record(artifacts, file, built) or message
        raise InvalidRequest(f"{param} {file.id}: {message}", param, "missing_grader_fields")


def _first_bad_record(artifacts: Artifacts, file: File, grader: Any) -> str | None:
    """The first line of ``file`` that lacks a field ``grader`` reads, as rapid_core words it."""
    from rapid_core.datasets import validate_records_for_grader

    try:
        validate_records_for_grader(read_records(artifacts, file), grader)
    except DatasetError as err:
        return str(err)
    return None


def _check_model(model: str) -> None:
    from rapid_core.model_source import resolve_model  # raises ModelError -> 400 naming the model

    resolve_model(model)
