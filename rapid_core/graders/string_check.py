"""``string_check``: compare two rendered templates with eq, ne, like (contains) or ilike."""

from __future__ import annotations

import time
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, failed_grade, register_grader
from rapid_core.graders.templates import check_record, render, template_fields, template_spec

OPERATIONS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "like": lambda a, b: b in a,
    "ilike": lambda a, b: b.lower() in a.lower(),
}


@register_grader("string_check")
class StringCheckGrader(Grader):
    fields = {"input", "reference", "operation"}

    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec)
        self.input = template_spec(spec, "input", "{{sample.output_text}}")
        self.reference = template_spec(spec, "reference")
        self.operation = spec.get("operation")
        if self.operation not in OPERATIONS:
            raise GraderError(
                f"grader.operation must be one of {sorted(OPERATIONS)}, not {self.operation!r}", "operation"
            )

    def required_fields(self) -> set[str]:
        return template_fields(self.input) | template_fields(self.reference)

    def self_check(self, item: dict[str, Any] | None = None) -> None:
        if item is not None:
            check_record({"input": self.input, "reference": self.reference}, item)

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        start = time.perf_counter()
        try:
            a, b = render(self.input, item, output_text), render(self.reference, item, output_text)
        except Exception as err:
            return failed_grade(err, start)
        score = float(OPERATIONS[self.operation](a, b))
        return Grade(score, self.classify(score), "", time.perf_counter() - start)
