"""The grader interface: (dataset record, completion text) -> Grade, and the registry of grader types.

Grader specs are JSON objects in the shape of OpenAI's fine-tuning graders (``{"type": ..., ...}``)
plus our own types. A grader never raises while grading: a failure becomes a classified Grade with
score 0, so one bad sample cannot take a job down (RAPID.md: failures are counted, not fatal).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from rapid_core.errors import GraderError
from rapid_core.graders.templates import TemplateError
from rapid_core.registry import Registry

Status = Literal["ok", "wrong", "timeout", "error", "sandbox_failure"]
FAILURES: tuple[Status, ...] = ("timeout", "error", "sandbox_failure")


@dataclass(frozen=True)
class Grade:
    score: float
    status: Status
    detail: str = ""
    seconds: float = 0.0
    # For a failed grade, which of OpenAI's grader error flags it is: sample_parse_error,
    # invalid_variable_error, formula_parse_error, python_grader_runtime_error, other_error, ...
    error: str = ""


Parts = dict[str, Grade]  # a multi grader's sub-grades by name; empty for other graders


class Grader(ABC):
    """One grader type. Subclasses validate their spec in ``__init__`` and raise GraderError."""

    type: ClassVar[str]
    pass_threshold: float = 1.0

    fields: ClassVar[set[str]] = set()  # spec fields besides type and name

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        name = spec.get("name", spec.get("type", ""))
        if not isinstance(name, str):
            raise GraderError("grader.name must be a string", "name")
        self.name = name
        unknown = set(spec) - {"type", "name"} - self.fields
        if unknown:
            field = sorted(unknown)[0]
            raise GraderError(
                f"unknown field(s) for {spec['type']} grader: {', '.join(sorted(unknown))}", field
            )

    @abstractmethod
    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        """Score one completion against its record. Must not raise."""

    def grade_batch(self, items: list[dict[str, Any]], output_texts: list[str]) -> list[Grade]:
        """Score many completions; graders that run code override this to use a parallel pool."""
        return [self.grade(item, text) for item, text in zip(items, output_texts, strict=True)]

    def grade_with_parts(
        self, items: list[dict[str, Any]], output_texts: list[str]
    ) -> list[tuple[Grade, Parts]]:
        """Each completion's grade with the sub-grades it was combined from (only ``multi`` has parts)."""
        return [(grade, {}) for grade in self.grade_batch(items, output_texts)]

    def required_fields(self) -> set[str]:
        """Record fields this grader reads (checked at upload / job creation)."""
        return set()

    def self_check(self, item: dict[str, Any] | None = None) -> None:
        """Raise GraderError when the grader would fail on every sample (on ``item``, a record of the
        training file, when given). Cheap: graders that run code load it once in the sandbox."""
        return None  # nothing to check for graders without templates or code

    def classify(self, score: float) -> Status:
        return "ok" if score >= self.pass_threshold else "wrong"


def failed_grade(err: Exception, start: float) -> Grade:
    """The grade of a sample the grader could not score: a template path missing from this record
    or sample, or a broken checker. Counted as a checker failure, never fatal."""
    kind = "other_error"
    if isinstance(err, TemplateError):
        kind = "sample_parse_error" if err.namespace == "sample" else "invalid_variable_error"
    detail = str(err) if isinstance(err, GraderError) else f"{type(err).__name__}: {err}"
    return Grade(0.0, "error", detail, time.perf_counter() - start, kind)


def threshold(spec: dict[str, Any], default: float = 1.0) -> float:
    """``pass_threshold``: the score from which a grade counts as a pass (our ok / wrong split)."""
    value = spec.get("pass_threshold", default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise GraderError(f"grader.pass_threshold must be a number, not {value!r}", "pass_threshold")
    return float(value)


GRADERS: Registry[type[Grader]] = Registry("grader")


def register_grader(name: str):
    def add(cls: type[Grader]) -> type[Grader]:
        cls.type = name
        return GRADERS.register(name)(cls)

    return add


def build_grader(spec: dict[str, Any] | None) -> Grader:
    """Build a grader from its JSON spec; raises GraderError naming the bad field. The built-in
    types are registered: importing this module runs ``rapid_core/graders/__init__.py`` first."""
    if not isinstance(spec, dict):
        raise GraderError("grader must be a JSON object with a 'type' field")
    kind = spec.get("type")
    if not isinstance(kind, str):
        raise GraderError("grader.type is required", "type")
    if kind not in GRADERS:
        raise GraderError(f"unknown grader type {kind!r}; known: {', '.join(GRADERS.names())}", "type")
    return GRADERS.get(kind)(spec)


def status_counts(grades: list[Grade]) -> dict[str, int]:
    counts = Counter(g.status for g in grades)
    return {s: counts.get(s, 0) for s in ("ok", "wrong", "timeout", "error", "sandbox_failure")}
