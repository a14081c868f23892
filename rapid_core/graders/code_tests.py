"""``code_tests``: run the completion's code against the record's tests, in the sandbox.

Styles: ``mbpp`` (``test_list`` asserts after ``test_setup_code`` / ``test_imports``),
``humaneval`` (``prompt`` + code, then ``test`` and ``check(<entry_point>)``) and ``evalplus``
(the function named ``entry_point`` must give the reference ``canonical_solution``'s outputs on
``base_input`` + ``plus_input``, floats within ``atol``).

Failures of the completion (syntax errors, exceptions, failed asserts, exiting early, blowing a
memory or output limit) are ``wrong``: that is the policy's mistake, not the checker's. ``timeout``
and ``sandbox_failure`` stay distinct so the health check can see a checker that cannot run.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, register_grader
from rapid_core.graders.harness import extract_code, make_job, read_verdict
from rapid_core.sandbox import Limits, SandboxPool, SandboxResult, default_pool

STYLES = {
    "mbpp": {"test_list"},
    "humaneval": {"prompt", "test", "entry_point"},
    "evalplus": {"task_id", "entry_point", "canonical_solution", "base_input"},
}


@register_grader("code_tests")
class CodeTestsGrader(Grader):
    fields = {"style", "tests_field", "timeout", "memory_mb"}

    def __init__(self, spec: dict[str, Any], pool: SandboxPool | None = None):
        super().__init__(spec)
        self.style = spec.get("style", "mbpp")
        if self.style not in STYLES:
            raise GraderError(f"grader.style must be one of {sorted(STYLES)}, not {self.style!r}", "style")
        self.tests_field = spec.get("tests_field", "test_list")
        if not isinstance(self.tests_field, str):
            raise GraderError("grader.tests_field must be a record field name", "tests_field")
        timeout = spec.get("timeout", 20.0 if self.style == "evalplus" else 10.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 300:
            raise GraderError("grader.timeout must be a number of seconds in (0, 300]", "timeout")
        memory = spec.get("memory_mb", 1024)
        if not isinstance(memory, int) or isinstance(memory, bool) or not 64 <= memory <= 16384:
            raise GraderError("grader.memory_mb must be an integer in [64, 16384]", "memory_mb")
        self.limits = Limits(timeout_s=float(timeout), memory_mb=memory)
        self.pool = pool
        # evalplus: record digest -> (pickled reference outputs, seconds the reference took)
        self._references: dict[str, tuple[str, float]] = {}
        self._ref_lock = threading.Lock()

    def required_fields(self) -> set[str]:
        fields = set(STYLES[self.style])
        return fields - {"test_list"} | {self.tests_field} if self.style == "mbpp" else fields

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        return self.grade_batch([item], [output_text])[0]

    def grade_batch(self, items: list[dict[str, Any]], output_texts: list[str]) -> list[Grade]:
        pool = self.pool or default_pool()
        if self.style == "evalplus":
            self._ensure_references(items, pool)
        grades: list[Grade | None] = [None] * len(items)
        pending = []
        for i, (item, text) in enumerate(zip(items, output_texts, strict=True)):
            try:
                job, nonce = make_job(self._job(item, extract_code(text)), self._limits_for(item))
            except Exception as err:  # a record without its tests: the checker's fault
                grades[i] = Grade(0.0, "error", f"bad record: {type(err).__name__}: {err}")
                continue
            pending.append((i, nonce, pool.submit(job)))
        for i, nonce, future in pending:
            grades[i] = verdict_grade(future.result(), nonce)
        return grades  # type: ignore[return-value]

    # --- one program per style ---------------------------------------------------------------

    def _job(self, item: dict[str, Any], code: str) -> dict[str, Any]:
        if self.style == "mbpp":
            tests = item[self.tests_field]
            if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests) or not tests:
                raise ValueError(f"{self.tests_field} must be a non-empty list of test statements")
            imports = "\n".join(item.get("test_imports") or [])
            after = item.get("test_setup_code") or ""
            return {"mode": "asserts", "setup": imports, "code": code, "after": after, "tests": tests}
        if self.style == "humaneval":
            program = f"{item['prompt']}\n{code}"  # a bare body completes the prompt's def
            check = f"{item['test']}\ncheck({item['entry_point']})\n"
            return {"mode": "asserts", "code": program, "tests": [check]}
        expected, _ = self._references.get(_digest(item), (None, 0.0))
        if expected is None:
            raise ValueError("the record's canonical_solution failed on its own inputs")
        return {
            "mode": "compare",
            "code": code,
            "entry_point": item["entry_point"],
            "task_id": item["task_id"],
            "inputs": _inputs(item),
            "atol": float(item.get("atol") or 0),
            "expected": expected,
        }

    def _ensure_references(self, items: list[dict[str, Any]], pool: SandboxPool) -> None:
        """Run each new record's reference solution once (sandboxed too) and keep its outputs."""
        with self._ref_lock:
            todo = {_digest(it): it for it in items if _digest(it) not in self._references}
            # The pickled outputs come back through stdout, so they get a larger file-size limit;
            # some MBPP+ references take tens of seconds on their biggest inputs.
            limits = Limits(
                timeout_s=max(60.0, 3 * self.limits.timeout_s),
                memory_mb=self.limits.memory_mb,
                file_size_mb=64,
                output_bytes=2 * 64 * 2**20,
            )
            jobs = {}
            for key, it in todo.items():
                job = {
                    "mode": "outputs",
                    "code": it["canonical_solution"],
                    "task_id": it["task_id"],
                    "entry_point": it["entry_point"],
                    "inputs": _inputs(it),
                }
                sjob, nonce = make_job(job, limits)
                jobs[key] = (nonce, pool.submit(sjob))
            for key, (nonce, future) in jobs.items():
                result = future.result()
                verdict = read_verdict(result, nonce)
                if verdict and "outputs" in verdict:
                    self._references[key] = (verdict["outputs"], result.seconds)

    def _limits_for(self, item: dict[str, Any]) -> Limits:
        """EvalPlus-style: a candidate may take a few times what the reference took."""
        if self.style != "evalplus":
            return self.limits
        _, ref_seconds = self._references.get(_digest(item), (None, 0.0))
        return replace(self.limits, timeout_s=max(self.limits.timeout_s, 3 * ref_seconds + 1))


def _inputs(item: dict[str, Any]) -> list:
    return list(item.get("base_input") or []) + list(item.get("plus_input") or [])


def _digest(item: dict[str, Any]) -> str:
    key = [
        item.get("task_id"),
        item.get("canonical_solution"),
        item.get("base_input"),
        item.get("plus_input"),
    ]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def verdict_grade(result: SandboxResult, nonce: str) -> Grade:
    """Classify one harness run of a completion."""
    if result.status in ("timeout", "sandbox_failure"):
        return Grade(0.0, result.status, result.detail, result.seconds)
    verdict = read_verdict(result, nonce)
    if verdict is None:  # died or exited before the harness could report: never a pass
        why = result.detail or "the program exited before its tests finished"
        return Grade(0.0, "wrong", why, result.seconds)
    if "crash" in verdict:
        return Grade(0.0, "wrong", verdict["crash"], result.seconds)
    passed, total = int(verdict.get("passed", 0)), int(verdict.get("total", 0))
    ok = total > 0 and passed == total
    detail = f"{passed}/{total} tests passed" + ("" if ok else f"; {verdict.get('failure', '')}")
    return Grade(1.0 if ok else 0.0, "ok" if ok else "wrong", detail, result.seconds)
