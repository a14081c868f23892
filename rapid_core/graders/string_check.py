"""``string_check``: compare two rendered templates with eq, ne, like (contains) or ilike."""

from __future__ import annotations

import time
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, register_grader
from rapid_core.graders.templates import render, template_fields

OPERATIONS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "like": lambda a, b: b in a,
    "ilike": lambda a, b: b.lower() in a.lower(),
}


def template_spec(spec: dict[str, Any], key: str, default: str | None = None) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str):
        raise GraderError(f"grader.{key} must be a template string such as '{{{{item.answer}}}}'")
    template_fields(value)  # rejects roots other than item. / sample.
    return value


@register_grader("string_check")
class StringCheckGrader(Grader):
    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec)
        unknown = set(spec) - {"type", "name", "input", "reference", "operation"}
        if unknown:
            raise GraderError(f"unknown field(s) for string_check grader: {', '.join(sorted(unknown))}")
        self.input = template_spec(spec, "input", "{{sample.output_text}}")
        self.reference = template_spec(spec, "reference")
        self.operation = spec.get("operation")
        if self.operation not in OPERATIONS:
            raise GraderError(f"grader.operation must be one of {sorted(OPERATIONS)}, not {self.operation!r}")

    def required_fields(self) -> set[str]:
        return template_fields(self.input) | template_fields(self.reference)

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        start = time.perf_counter()
        try:
            a, b = render(self.input, item, output_text), render(self.reference, item, output_text)
        except Exception as err:
            return Grade(0.0, "error", f"{type(err).__name__}: {err}", time.perf_counter() - start)
        score = float(OPERATIONS[self.operation](a, b))
        return Grade(score, self.classify(score), "", time.perf_counter() - start)
