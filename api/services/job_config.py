"""A job request's hyperparameters: OpenAI's names to ours and back, and the one validation.

``config_values`` maps OpenAI's documented reinforcement hyperparameters onto TrainConfig values
(enforcing their documented bounds, working ``n_epochs`` out as rounds) and passes RAPID's own
settings through; ``openai_hyperparameters`` maps a stored config back for the response. That pair
is the only translation. ``build_job_config`` validates the values once into a TrainConfig (no
paths: the worker adds them) and returns its dump, which the store keeps and the worker runs.
The core is imported lazily where it could load torch; it never does here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from api.errors import InvalidRequest
from api.services.files import read_records
from rapid_core.config import TrainConfig, inference_batch, make_config
from rapid_core.errors import ConfigError, DatasetError, ModelError
from store.artifacts import Artifacts
from store.models import File
from store.settings import Settings

HP = "method.reinforcement.hyperparameters"
# Set by the service from the request and the stored files, never by a hyperparameter.
RESERVED = {"model", "task", "data_path", "eval_path", "grader", "output_dir", "seed"}
# OpenAI's documented reinforcement hyperparameters, in the order a response lists them.
OPENAI_KEYS = (
    "batch_size",
    "learning_rate_multiplier",
    "n_epochs",
    "reasoning_effort",
    "compute_multiplier",
    "eval_interval",
    "eval_samples",
)
REASONING_EFFORTS = ("default", "low", "medium", "high")  # "auto" (or null) leaves it unset
MAX_EPOCHS = 50  # OpenAI's documented bound
# Bounds TrainConfig leaves open, but that no single job on this service should exceed.
SERVICE_LIMITS = {
    "group_size": 1024,
    "prompts_per_round": 65536,
    "mini_batch_size": 65536,
    "batch_ratio_max": 65536,
    "rounds": 1_000_000,
    "eval_problems": 100_000,
    "max_samples": 10**9,
    "gen_micro_batch": 65536,
}
BASE_LEARNING_RATE = TrainConfig.model_fields["learning_rate"].default


@dataclass(frozen=True)
class JobConfig:
    config: dict[str, Any]  # TrainConfig.model_dump(mode="json"): stored, and validated again by the worker
    queue: str
    notes: list[str]  # what each OpenAI hyperparameter the request set does here, for the job's events


def _fail(message: str, field: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", f"{HP}.{field}", "invalid_hyperparameter")


def _unset(value: Any) -> bool:
    return value is None or value == "auto"


def _integer(hp: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = hp.get(name)
    if _unset(value):
        return None
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )
    if not ok:
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise _fail(f"must be 'auto' or an integer {bounds}, got {value!r}", name)
    return value


def _positive(hp: dict[str, Any], name: str) -> float | None:
    value = hp.get(name)
    if _unset(value):
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _fail(f"must be 'auto' or a positive number, got {value!r}", name)
    return float(value)


def _round_prompts(values: dict[str, Any]) -> int | None:
    """Prompts per round of the config ``values`` will make, from just the four fields it depends on;
    None when one of them is invalid (the validation that follows names it)."""
    terms = {}
    for name in ("algorithm", "prompts_per_round", "group_size", "mini_batch_size"):
        field = TrainConfig.model_fields[name]
        try:
            terms[name] = TypeAdapter(field.annotation).validate_python(values.get(name, field.default))
        except ValidationError:
            return None
    return inference_batch(**terms) // terms["group_size"] if terms["group_size"] > 0 else None


def _auto_batch(values: dict[str, Any]) -> bool:
    """Whether the config ``values`` make has batch_ratio_control=auto pick each round's size."""
    fields = TrainConfig.model_fields
    algorithm = values.get("algorithm", fields["algorithm"].default)
    return (
        algorithm == "rapid"
        and values.get("batch_ratio_control", fields["batch_ratio_control"].default) == "auto"
    )


def config_values(
    hp: dict[str, Any], training_lines: int
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """OpenAI's hyperparameters -> TrainConfig values. Returns the values (RAPID's own settings pass
    through), which OpenAI name each mapped value came from (to name it in errors), and one note per
    OpenAI setting saying what it does here."""
    values = {k: v for k, v in hp.items() if k not in OPENAI_KEYS}
    source: dict[str, str] = {}
    notes: list[str] = []

    def put(ours: str, value: Any, theirs: str, note: str) -> None:
        values[ours], source[ours] = value, theirs
        notes.append(f"{theirs}={hp[theirs]!r}: {note}")

    if (batch := _integer(hp, "batch_size", 1)) is not None:
        put("mini_batch_size", batch, "batch_size", f"{batch} samples per optimizer step (mini_batch_size)")
    if (mult := _positive(hp, "learning_rate_multiplier")) is not None:
        lr = BASE_LEARNING_RATE * mult
        put(
            "learning_rate",
            lr,
            "learning_rate_multiplier",
            f"learning rate {lr:g} ({mult:g} x {BASE_LEARNING_RATE:g})",
        )
    if (samples := _integer(hp, "eval_samples", 1)) is not None:
        put(
            "eval_problems",
            samples,
            "eval_samples",
            f"{samples} held-out problems evaluated before and after training, and every eval_interval "
            "steps (eval_problems)",
        )
    if (every := _integer(hp, "eval_interval", 1)) is not None:
        put(
            "eval_interval",
            every,
            "eval_interval",
            f"held-out evaluation every {every} optimizer steps on the validation file (eval_interval), at the "
            "first round boundary at or after each multiple and at the end; the best checkpoint is marked",
        )
    if (effort := hp.get("reasoning_effort")) is not None and effort != "auto":
        if effort not in REASONING_EFFORTS:
            raise _fail(
                f"must be one of auto, {', '.join(REASONING_EFFORTS)}; got {effort!r}", "reasoning_effort"
            )
        notes.append(
            f"reasoning_effort={effort!r}: recorded; it changes nothing here (the models trained here "
            "have no reasoning-effort setting; completions follow temperature and max_new_tokens)"
        )
    if _positive(hp, "compute_multiplier") is not None:
        notes.append(
            f"compute_multiplier={hp['compute_multiplier']!r}: recorded; it changes nothing here (the "
            "sampling budget is rounds x prompts_per_round x group_size)"
        )
    if (epochs := _integer(hp, "n_epochs", 1, MAX_EPOCHS)) is not None:
        if "rounds" in hp:
            raise _fail("set n_epochs or rounds, not both: n_epochs is worked out as rounds", "n_epochs")
        prompts = _round_prompts(values)
        if prompts and _auto_batch(values):  # the rounds' sizes vary: the passes bound the samples
            samples = (
                epochs
                * training_lines
                * values.get("group_size", TrainConfig.model_fields["group_size"].default)
            )
            note = f"{epochs} passes over {training_lines} records: {samples} samples (max_samples)"
            put("max_samples", samples, "n_epochs", note)
            values["rounds"] = None
        elif prompts:  # else the validation names the bad field
            rounds = max(1, math.ceil(epochs * training_lines / prompts))
            note = f"{epochs} passes over {training_lines} records: {rounds} rounds of {prompts} prompts"
            put("rounds", rounds, "n_epochs", note)
    return values, source, notes


def openai_hyperparameters(config: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A stored job's ``method.reinforcement.hyperparameters`` for the response: OpenAI's seven
    documented keys always ("auto" where the request left them unset, and ``reasoning_effort``
    "default", the unset value its type allows), then RAPID's own settings the request set, with
    their validated values (a typed client keeps them as extra fields)."""

    def chosen(*names: str) -> bool:
        return any(not _unset(given.get(n)) for n in names)

    multiplier = given.get("learning_rate_multiplier")
    if _unset(multiplier):
        multiplier = config["learning_rate"] / BASE_LEARNING_RATE if chosen("learning_rate") else "auto"
    out = {
        "batch_size": config["mini_batch_size"] if chosen("batch_size", "mini_batch_size") else "auto",
        "learning_rate_multiplier": multiplier,
        "n_epochs": given["n_epochs"] if chosen("n_epochs") else "auto",
        "reasoning_effort": given["reasoning_effort"] if chosen("reasoning_effort") else "default",
        "compute_multiplier": given["compute_multiplier"] if chosen("compute_multiplier") else "auto",
        "eval_interval": config.get("eval_interval") or "auto",
        "eval_samples": config["eval_problems"] if chosen("eval_samples", "eval_problems") else "auto",
    }
    return out | {k: config[k] for k in given if k in config and k not in out}


def build_job_config(
    *,
    model: str,
    grader: dict[str, Any],
    hyperparameters: dict[str, Any],
    seed: int,
    training: File,
    validation: File | None,
    settings: Settings,
    artifacts: Artifacts | None = None,
) -> JobConfig:
    """The job's validated config (without paths), its queue and its notes. With ``artifacts``, a
    file that lacks a field the grader reads is refused naming its first such line."""
    _check_grader(grader, training, validation, artifacts)
    _check_model(model)
    hp = dict(hyperparameters)
    reserved = sorted(RESERVED & set(hp))
    if reserved:
        raise _fail("is set by the service from the job request, not as a hyperparameter", reserved[0])
    _check_limits(hp)
    values, source, notes = config_values(hp, training.lines)
    values |= {"model": model, "task": "jsonl", "grader": grader, "seed": seed}
    try:
        cfg = make_config(**values)
    except ConfigError as err:
        field = source.get(err.field or "", err.field)
        if field is None:
            raise InvalidRequest(f"hyperparameters: {err.reason}", HP, "invalid_hyperparameter") from None
        raise _fail(err.reason, field) from None
    queue = settings.default_queue if cfg.device == "auto" else cfg.device
    return JobConfig(cfg.model_dump(mode="json"), queue, notes)


def _check_limits(hp: dict[str, Any]) -> None:
    for field, limit in SERVICE_LIMITS.items():
        value = hp.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
            raise _fail(f"{value} is above this service's limit of {limit}", field)


def _check_grader(
    grader: dict[str, Any], training: File, validation: File | None, artifacts: Artifacts | None
) -> None:
    from rapid_core.graders import GRADERS, build_grader

    kind = grader.get("type")
    if kind not in GRADERS:
        raise InvalidRequest(
            f"Grader type {kind!r} is not supported; supported: {', '.join(GRADERS.names())}",
            "method.reinforcement.grader.type",
            "unsupported_grader",
        )
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
    """A model the service can load, or one 400 whose words never depend on the API host's files: a
    tenant must not learn which paths exist there by naming them (``/etc``, ``/root/x.gguf``) as a
    model. So a local path is accepted only when it holds a model (GGUF magic, or a config.json of a
    model), and every refusal reads the same. The alias errors stay precise (they are about the
    service's install), and so does the local CLI (``rapid train``)."""
    from rapid_core.hub import check_hub_id, looks_like_hub_id
    from rapid_core.model_source import ALIASES, resolve_model

    # Hub-shaped names are hub ids here whatever the API host holds: their shape only, no network and
    # no look at local files; the worker downloads them.
    if model not in ALIASES and looks_like_hub_id(model):
        check_hub_id(model)
        return
    try:
        source = resolve_model(model)
        if model in ALIASES or _is_model(source):
            return
    except ModelError:
        if model in ALIASES:
            raise
    except (OSError, RuntimeError, ValueError):  # an unreadable path, "~nobody/x", a NUL byte
        pass
    raise InvalidRequest(
        f"Model {model!r} is not available on this service: use one of the aliases ({', '.join(ALIASES)}), "
        "or a model directory, .gguf file or Hugging Face model this service provides",
        "model",
        "model_not_found",
    )


def _is_model(source) -> bool:
    """A local source holds a model's first bytes; a hub id (no local path) is the hub's to answer."""
    path = Path(source.path)
    if source.gguf_file:
        with (path / source.gguf_file).open("rb") as f:
            return f.read(4) == b"GGUF"
    if not path.is_dir():
        return True
    config = path / "config.json"
    if config.stat().st_size > 2**20:
        return False
    values = json.loads(config.read_bytes())
    return isinstance(values, dict) and ("model_type" in values or "architectures" in values)
