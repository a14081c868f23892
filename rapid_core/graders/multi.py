"""``multi``: named graders combined by a ``calculate_output`` formula (see ``formula``).

``graders`` is an object of name -> grader, and the formula reads each sub-grader's score by its
name. As in OpenAI's API a multi grader cannot contain another multi grader.
"""

from __future__ import annotations

import time
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import FAILURES, Grade, Grader, Parts, build_grader, register_grader, threshold
from rapid_core.graders.formula import FUNCTIONS, evaluate, parse_formula


@register_grader("multi")
class MultiGrader(Grader):
    fields = {"graders", "calculate_output", "pass_threshold"}

    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec)
        graders = spec.get("graders")
        if not isinstance(graders, dict) or not graders:
            raise GraderError(
                "grader.graders must be an object of name -> grader, the names the "
                "calculate_output formula reads",
                "graders",
            )
        self.graders: dict[str, Grader] = {}
        for name, sub in graders.items():
            if not name.isidentifier() or name in FUNCTIONS:
                raise GraderError(
                    f"grader.graders: {name!r} must be a name usable in the formula "
                    "(letters, digits, _; not a function name)",
                    f"graders.{name}",
                )
            if isinstance(sub, dict) and sub.get("type") == "multi":
                raise GraderError(
                    "a multi grader cannot contain another multi grader", f"graders.{name}.type"
                )
            try:
                self.graders[name] = build_grader(sub)
            except GraderError as err:
                field = f"graders.{name}" + (f".{err.field}" if err.field else "")
                raise GraderError(f"grader.graders.{name}: {err}", field) from None
        self.formula = parse_formula(spec.get("calculate_output"), set(self.graders))
        self.pass_threshold = threshold(spec)
        # A formula that has no value at all-zero nor at all-one scores (sqrt(-1 - a)) has none anywhere.
        trials = [dict.fromkeys(self.graders, v) for v in (0.0, 1.0)]
        if not any(_value_or_none(self.formula, t) is not None for t in trials):
            raise GraderError(
                "grader.calculate_output has no finite value when the graders score 0 or 1",
                "calculate_output",
            )

    def required_fields(self) -> set[str]:
        return set().union(*(g.required_fields() for g in self.graders.values()))

    def self_check(self, item: dict[str, Any] | None = None) -> None:
        for name, grader in self.graders.items():
            try:
                grader.self_check(item)
            except GraderError as err:
                field = f"graders.{name}" + (f".{err.field}" if err.field else "")
                raise GraderError(f"grader.graders.{name}: {err}", field) from None

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        return self.grade_batch([item], [output_text])[0]

    def grade_batch(self, items: list[dict[str, Any]], output_texts: list[str]) -> list[Grade]:
        return [grade for grade, _ in self.grade_with_parts(items, output_texts)]

    def grade_with_parts(
        self, items: list[dict[str, Any]], output_texts: list[str]
    ) -> list[tuple[Grade, Parts]]:
        # Each sub-grader grades the whole batch, so code-running ones use their parallel pool.
        start = time.perf_counter()
        by_name = {name: g.grade_batch(items, output_texts) for name, g in self.graders.items()}
        seconds = (time.perf_counter() - start) / max(1, len(items))
        parts = [{name: grades[i] for name, grades in by_name.items()} for i in range(len(items))]
        return [(self._combine(p, seconds), p) for p in parts]

    def _combine(self, parts: Parts, seconds: float) -> Grade:
        detail = ", ".join(
            f"{n}={g.score:g}" + (f" ({g.status})" if g.status in FAILURES else "") for n, g in parts.items()
        )
        try:
            score = evaluate(self.formula, {n: g.score for n, g in parts.items()})
        except (ArithmeticError, ValueError) as err:
            return Grade(0.0, "error", f"calculate_output: {err}; {detail}", seconds, "formula_parse_error")
        failed = next((g for g in parts.values() if g.status in FAILURES), None)
        if failed is not None:
            return Grade(score, failed.status, detail, seconds, failed.error)
        return Grade(score, self.classify(score), detail, seconds)


def _value_or_none(formula, values: dict[str, float]) -> float | None:
    try:
        return evaluate(formula, values)
    except (ArithmeticError, ValueError):
        return None
