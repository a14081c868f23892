"""Grader validation and trial runs, shaped like OpenAI's ``/fine_tuning/alpha/graders`` answers.

Grading never runs user or model code in this process: the ``python``, ``code_tests`` and ``lean``
graders hand each program to the bubblewrap sandbox, a separate process tree. The core is imported
lazily, and the grader modules load no torch.
"""

from __future__ import annotations

import time
from typing import Any

from api.errors import InvalidRequest

GRADER_PARAM = "grader"
# OpenAI's error flags on a run; each is False unless the grade says otherwise.
ERROR_FLAGS = (
    "formula_parse_error", "invalid_variable_error", "model_grader_parse_error", "model_grader_refusal_error",
    "model_grader_server_error", "other_error", "python_grader_runtime_error", "python_grader_server_error",
    "sample_parse_error", "truncated_observation_error", "unresponsive_reward_error",
)  # fmt: skip


def build(spec: dict[str, Any]):
    """The core Grader of a spec, or a 400 naming what is wrong with it."""
    from rapid_core.errors import GraderError
    from rapid_core.graders import build_grader

    try:
        return build_grader(spec)
    except GraderError as err:
        raise InvalidRequest(f"Invalid grader: {err}", GRADER_PARAM, "invalid_grader") from None


def validate_grader(spec: dict[str, Any]) -> dict[str, Any]:
    build(spec)
    return {"grader": spec}


def run_grader(spec: dict[str, Any], samples: list[str], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score each sample against its item; one OpenAI-shaped run result per sample."""
    from rapid_core.graders.multi import MultiGrader

    grader = build(spec)
    needed = sorted(grader.required_fields())
    for n, item in enumerate(items):
        missing = [f for f in needed if f not in item]
        if missing:
            where = "item" if len(items) == 1 else f"item[{n}]"
            raise InvalidRequest(f"{where} lacks field {missing[0]!r}, which the grader reads", where,
                                 "missing_grader_fields")  # fmt: skip
    start = time.perf_counter()
    if isinstance(grader, MultiGrader):
        # Grade each part once and combine, so the parts' scores come back as sub_rewards.
        parts = {name: g.grade_batch(items, samples) for name, g in grader.graders.items()}
        per_item = (time.perf_counter() - start) / max(1, len(samples))
        subs = [{name: grades[i] for name, grades in parts.items()} for i in range(len(samples))]
        grades = [grader._combine(sub, per_item) for sub in subs]
    else:
        grades, subs = grader.grade_batch(items, samples), [{} for _ in samples]
    return [_result(grader, grade, sub) for grade, sub in zip(grades, subs, strict=True)]


def _result(grader, grade, subs: dict[str, Any]) -> dict[str, Any]:
    return {
        "reward": grade.score,
        "metadata": {
            "name": grader.name,
            "type": grader.type,
            "errors": _errors(grader.type, grade),
            "execution_time": grade.seconds,
            "scores": {name: g.score for name, g in subs.items()},
            "token_usage": None,
            "sampled_model_name": None,
            # Ours: the classification the trainer counts, and what went wrong.
            "status": grade.status,
            "detail": grade.detail,
            "sub_metadata": {name: _sub(g) for name, g in subs.items()},
        },
        "sub_rewards": {name: g.score for name, g in subs.items()},
        "model_grader_token_usage_per_model": {},
    }


def _sub(grade) -> dict[str, Any]:
    return {"status": grade.status, "detail": grade.detail, "execution_time": grade.seconds}


def _errors(kind: str, grade) -> dict[str, Any]:
    errors: dict[str, Any] = dict.fromkeys(ERROR_FLAGS, False)
    errors.update(model_grader_server_error_details=None, python_grader_runtime_error_details=None,
                  python_grader_server_error_type=None)  # fmt: skip
    if grade.status == "timeout":
        errors["unresponsive_reward_error"] = True
    elif grade.status == "sandbox_failure":
        errors["python_grader_server_error"] = True
        errors["python_grader_server_error_type"] = "sandbox_failure"
    elif grade.status == "error" and kind == "python":
        errors["python_grader_runtime_error"] = True
        errors["python_grader_runtime_error_details"] = grade.detail
    elif grade.status == "error" and grade.detail.startswith("calculate_output"):
        errors["formula_parse_error"] = True
    elif grade.status == "error":
        errors["other_error"] = True
    return errors
