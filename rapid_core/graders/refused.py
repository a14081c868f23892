"""Grader types in OpenAI's API that this service does not run yet: refused with a clear error."""

from __future__ import annotations

from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, register_grader


class _Refused(Grader):
    why = ""

    def __init__(self, spec: dict[str, Any]):
        raise GraderError(self.why, "type")

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:  # pragma: no cover - never built
        raise NotImplementedError


@register_grader("score_model")
class ScoreModelGrader(_Refused):
    why = (
        "score_model graders (an LLM judge) are not supported yet; "
        "use string_check, text_similarity, python, multi, math or code_tests"
    )


@register_grader("label_model")
class LabelModelGrader(_Refused):
    why = (
        "label_model graders (an LLM judge) are not supported yet; "
        "use string_check, text_similarity, python, multi, math or code_tests"
    )
