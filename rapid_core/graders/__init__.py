"""Graders (reward checkers). Importing this package registers every built-in grader type."""

from rapid_core.graders import (  # noqa: F401  (each module registers its grader types)
    answers,
    code_tests,
    lean,
    multi,
    python_grader,
    refused,
    similarity,
    string_check,
)
from rapid_core.graders.base import GRADERS, Grade, Grader, build_grader, status_counts
from rapid_core.graders.harness import extract_code
from rapid_core.graders.health import checker_health, grade_latency_stats

__all__ = [
    "GRADERS",
    "Grade",
    "Grader",
    "build_grader",
    "checker_health",
    "extract_code",
    "grade_latency_stats",
    "status_counts",
]
