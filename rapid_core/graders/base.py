"""The grader interface: (dataset record, completion text) -> Grade, and the registry of grader types.

Grader specs are JSON objects in the shape of OpenAI's fine-tuning graders (``{"type": ..., ...}``)
plus our own types. A grader never raises while grading: a failure becomes a classified Grade with
score 0, so one bad sample cannot take a job down (RAPID.md: failures are counted, not fatal).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from rapid_core.errors import GraderError
from rapid_core.registry import Registry

Status = Literal["ok", "wrong", "timeout", "error", "sandbox_failure"]
FAILURES: tuple[Status, ...] = ("timeout", "error", "sandbox_failure")


@dataclass(frozen=True)
class Grade:
    score: float
    status: Status
    detail: str = ""
    seconds: float = 0.0


class Grader(ABC):
    """One grader type. Subclasses validate their spec in ``__init__`` and raise GraderError."""

    type: ClassVar[str]
    pass_threshold: float = 1.0

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.name = str(spec.get("name", spec.get("type", "")))

    @abstractmethod
    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        """Score one completion against its record. Must not raise."""

    def grade_batch(self, items: list[dict[str, Any]], output_texts: list[str]) -> list[Grade]:
        """Score many completions; graders that run code override this to use a parallel pool."""
        return [self.grade(item, text) for item, text in zip(items, output_texts, strict=True)]

    def required_fields(self) -> set[str]:
        """Record fields this grader reads (checked at upload / job creation)."""
        return set()

    def classify(self, score: float) -> Status:
        return "ok" if score >= self.pass_threshold else "wrong"


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
        raise GraderError("grader.type is required")
    if kind not in GRADERS:
        raise GraderError(f"unknown grader type {kind!r}; known: {', '.join(GRADERS.names())}")
    return GRADERS.get(kind)(spec)


def status_counts(grades: list[Grade]) -> dict[str, int]:
    counts = Counter(g.status for g in grades)
    return {s: counts.get(s, 0) for s in ("ok", "wrong", "timeout", "error", "sandbox_failure")}
