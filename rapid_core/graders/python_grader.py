"""``python``: the user's own ``grade(sample, item) -> float``, always run in the sandbox."""

from __future__ import annotations

import ast
import json
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, register_grader
from rapid_core.graders.harness import make_job, read_verdict
from rapid_core.sandbox import Limits, SandboxPool, default_pool


@register_grader("python")
class PythonGrader(Grader):
    def __init__(self, spec: dict[str, Any], pool: SandboxPool | None = None):
        super().__init__(spec)
        unknown = set(spec) - {"type", "name", "source", "image_tag", "pass_threshold", "timeout"}
        if unknown:
            raise GraderError(f"unknown field(s) for python grader: {', '.join(sorted(unknown))}")
        source = spec.get("source")
        if not isinstance(source, str) or not source.strip():
            raise GraderError("grader.source must be Python source defining grade(sample, item)")
        try:  # parsing is safe on the host; running is not, and only ever happens in the sandbox
            tree = ast.parse(source)
        except SyntaxError as err:
            raise GraderError(f"grader.source has a syntax error on line {err.lineno}: {err.msg}") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == "grade" for n in tree.body):
            raise GraderError("grader.source must define a top-level function grade(sample, item)")
        self.source = source
        self.pass_threshold = float(spec.get("pass_threshold", 1.0))
        timeout = spec.get("timeout", 10.0)
        if not isinstance(timeout, int | float) or not 0 < timeout <= 120:
            raise GraderError("grader.timeout must be a number of seconds in (0, 120]")
        self.limits = Limits(timeout_s=float(timeout))
        self.pool = pool

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        return self.grade_batch([item], [output_text])[0]

    def grade_batch(self, items: list[dict[str, Any]], output_texts: list[str]) -> list[Grade]:
        pool = self.pool or default_pool()
        runs = []
        for item, text in zip(items, output_texts, strict=True):
            job = {"mode": "grade", "code": self.source, "sample": sample(text), "item": item}
            sjob, nonce = make_job(job, self.limits)
            runs.append((nonce, pool.submit(sjob)))
        return [self._grade(future.result(), nonce) for nonce, future in runs]

    def _grade(self, result, nonce: str) -> Grade:
        if result.status in ("timeout", "sandbox_failure"):
            return Grade(0.0, result.status, result.detail, result.seconds)
        verdict = read_verdict(result, nonce)
        if verdict is None or "score" not in verdict:  # the user's grader broke: the checker's fault
            why = (verdict or {}).get("crash") or result.detail or "grade() did not return"
            return Grade(0.0, "error", why, result.seconds)
        score = float(verdict["score"])
        return Grade(score, self.classify(score), "", result.seconds)


def sample(output_text: str) -> dict[str, Any]:
    """The ``sample`` argument, as OpenAI's python graders receive it."""
    try:
        output_json = json.loads(output_text)
    except (json.JSONDecodeError, ValueError):
        output_json = None
    return {"output_text": output_text, "output_json": output_json, "output_tools": [], "choices": []}
