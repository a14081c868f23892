"""Grader validation and trial runs, shaped like OpenAI's ``/fine_tuning/alpha/graders`` answers.

Grading never runs user or model code in this process: the ``python``, ``code_tests`` and ``lean``
graders hand each program to the bubblewrap sandbox, a separate process tree. The core is imported
lazily, and the grader modules load no torch.
"""

from __future__ import annotations

from typing import Any

from api.errors import InvalidRequest, grader_param

GRADER_PARAM = "grader"
# OpenAI's error flags on a run; each is False unless the grade says otherwise.
ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


def build(spec: dict[str, Any], param: str = GRADER_PARAM, item: dict[str, Any] | None = None):
    """The core Grader of a spec, checked so it cannot fail on every sample, or a 400 naming the
    field that is wrong (``param`` is where the grader sits in the request)."""
    from rapid_core.errors import GraderError
    from rapid_core.graders import build_grader

    try:
        grader = build_grader(spec)
        grader.self_check(item)
    except GraderError as err:
        raise InvalidRequest(f"Invalid grader: {err}", grader_param(param, err), "invalid_grader") from None
    return grader


def check_for_job(spec: dict[str, Any], first_record: dict[str, Any]) -> None:
    """Job creation: the grader must run on the training file's first record (and load, if code)."""
    build(spec, "method.reinforcement.grader", first_record)


def validate_grader(spec: dict[str, Any]) -> dict[str, Any]:
    build(spec)
    return {"grader": spec}


def run_grader(spec: dict[str, Any], samples: list[str], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score each sample against its item; one OpenAI-shaped run result per sample."""
    grader = build(spec)
    needed = sorted(grader.required_fields())
    for n, item in enumerate(items):
        missing = [f for f in needed if f not in item]
        if missing:
            where = "item" if len(items) == 1 else f"item[{n}]"
            raise InvalidRequest(
                f"{where} lacks field {missing[0]!r}, which the grader reads", where, "missing_grader_fields"
            )
    graded = grader.grade_with_parts(items, samples)
    return [_result(grader, grade, parts) for grade, parts in graded]


def _result(grader, grade, subs: dict[str, Any]) -> dict[str, Any]:
    return {
        "reward": grade.score,
        "metadata": {
            "name": grader.name,
            "type": grader.type,
            "errors": _errors(grade),
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


def _errors(grade) -> dict[str, Any]:
    errors: dict[str, Any] = dict.fromkeys(ERROR_FLAGS, False)
    errors.update(
        model_grader_server_error_details=None,
        python_grader_runtime_error_details=None,
        python_grader_server_error_type=None,
    )
    if grade.status == "ok" or grade.status == "wrong":
        return errors
    flag = grade.error or ("unresponsive_reward_error" if grade.status == "timeout" else "other_error")
    errors[flag if flag in ERROR_FLAGS else "other_error"] = True
    if flag == "python_grader_runtime_error":
        errors["python_grader_runtime_error_details"] = grade.detail
    elif flag == "python_grader_server_error":
        errors["python_grader_server_error_type"] = grade.status
    return errors
