"""``python``: the user's own ``grade(sample, item) -> float``, always run in the sandbox.

The source is parsed and compiled on the host (safe: nothing runs) so that a program that cannot
even load is refused when the grader is built; ``self_check`` loads it once in the sandbox.
OpenAI's limit on the source size (256 kB) applies.
"""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, register_grader, threshold
from rapid_core.graders.harness import make_job, read_verdict
from rapid_core.graders.templates import sample_namespace
from rapid_core.sandbox import Limits, SandboxPool, SandboxResult, default_pool

MAX_SOURCE_BYTES = 256 * 1024
LOAD_SECONDS = 10.0


@register_grader("python")
class PythonGrader(Grader):
    fields = {"source", "image_tag", "pass_threshold", "timeout"}

    def __init__(self, spec: dict[str, Any], pool: SandboxPool | None = None):
        super().__init__(spec)
        self.source = spec.get("source")
        if not isinstance(self.source, str) or not self.source.strip():
            raise GraderError("grader.source must be Python source defining grade(sample, item)", "source")
        size = len(self.source.encode("utf-8", "surrogatepass"))
        if size > MAX_SOURCE_BYTES:
            raise GraderError(f"grader.source is {size} bytes; the limit is {MAX_SOURCE_BYTES}", "source")
        _check_source(self.source)
        if not isinstance(spec.get("image_tag", ""), str):
            raise GraderError(
                "grader.image_tag must be a string (it is accepted and not used here)", "image_tag"
            )
        self.pass_threshold = threshold(spec)
        timeout = spec.get("timeout", 10.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 120:
            raise GraderError("grader.timeout must be a number of seconds in (0, 120]", "timeout")
        self.limits = Limits(timeout_s=float(timeout))
        self.pool = pool

    def self_check(self, item: dict[str, Any] | None = None) -> None:
        """Run the source's top level once in the sandbox: it must finish and define grade()."""
        # At most LOAD_SECONDS: this runs while a request waits, whatever the grader's own timeout.
        limits = replace(self.limits, timeout_s=min(self.limits.timeout_s, LOAD_SECONDS))
        job, nonce = make_job({"mode": "load", "code": self.source}, limits)
        result = (self.pool or default_pool()).submit(job).result()
        if result.status == "sandbox_failure":
            return  # the sandbox, not the grader, is broken: the job's health check reports it
        if result.status == "timeout":
            raise GraderError(f"grader.source: its top-level code did not finish: {result.detail}", "source")
        verdict = read_verdict(result, nonce) or {}
        if verdict.get("loaded") is not True:
            why = verdict.get("crash") or result.detail or "grade is not a function"
            raise GraderError(f"grader.source failed to load: {why}", "source")

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        return self.grade_batch([item], [output_text])[0]

    def grade_batch(self, items: list[dict[str, Any]], output_texts: list[str]) -> list[Grade]:
        pool = self.pool or default_pool()
        runs = []
        for item, text in zip(items, output_texts, strict=True):
            job = {"mode": "grade", "code": self.source, "sample": sample_namespace(text), "item": item}
            sjob, nonce = make_job(job, self.limits)
            runs.append((nonce, pool.submit(sjob)))
        return [self._grade(future.result(), nonce) for nonce, future in runs]

    def _grade(self, result: SandboxResult, nonce: str) -> Grade:
        if result.status == "timeout":
            return Grade(0.0, "timeout", result.detail, result.seconds, "unresponsive_reward_error")
        if result.status == "sandbox_failure":
            return Grade(0.0, "sandbox_failure", result.detail, result.seconds, "python_grader_server_error")
        verdict = read_verdict(result, nonce) or {}
        score = verdict.get("score")
        if not isinstance(score, float) or not math.isfinite(score):  # the user's grader broke
            why = verdict.get("crash") or result.detail or "grade() did not return"
            return Grade(0.0, "error", str(why), result.seconds, "python_grader_runtime_error")
        return Grade(score, self.classify(score), "", result.seconds)


def _check_source(source: str) -> None:
    """Parse and compile (never run) the source: syntax, size of nesting, a grade(sample, item)."""
    try:
        tree = ast.parse(source)
        compile(tree, "grader.py", "exec")
    except SyntaxError as err:
        where = f" on line {err.lineno}" if err.lineno else ""
        raise GraderError(f"grader.source has a syntax error{where}: {err.msg}", "source") from None
    except (RecursionError, MemoryError):
        raise GraderError("grader.source is nested too deeply to compile", "source") from None
    except ValueError as err:  # e.g. a NUL byte
        raise GraderError(f"grader.source cannot be compiled: {err}", "source") from None
    grade = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "grade"), None)
    if grade is None:
        raise GraderError("grader.source must define a top-level function grade(sample, item)", "source")
    args = grade.args
    positional = len(args.posonlyargs) + len(args.args)
    required_kw = [a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    required = positional - len(args.defaults)
    if (positional < 2 and args.vararg is None) or required > 2 or required_kw:
        raise GraderError(
            "grader.source: grade must take two positional arguments, grade(sample, item)", "source"
        )
