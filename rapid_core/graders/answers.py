"""Final-answer graders of the core: ``numeric``, ``exact`` and ``math`` (math-verify equivalence)."""

from __future__ import annotations

import re
import time
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, failed_grade, register_grader
from rapid_core.graders.templates import check_record, render, template_fields, template_spec

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_HASHES = re.compile(r"####\s*(" + _NUMBER + ")")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*\$?(" + _NUMBER + ")", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)


def extract_final_answer(text: str) -> str | None:
    """The answer a completion commits to: \\boxed{}, '#### n', 'answer is n', else the last number."""
    for pattern in (_BOXED, _HASHES, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return found[-1].strip()
    numbers = _ANY_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def parse_number(text: str) -> float | None:
    s = text.strip().replace(",", "").rstrip(".").replace("$", "")
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return float(num) / float(den)
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


class _ReferenceGrader(Grader):
    """Shared spec handling: ``reference`` is a template, by default ``{{item.answer}}``."""

    fields = {"reference"}

    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec)
        self.reference = template_spec(spec, "reference", "{{item.answer}}")

    def required_fields(self) -> set[str]:
        return template_fields(self.reference)

    def self_check(self, item: dict[str, Any] | None = None) -> None:
        if item is not None:
            check_record({"reference": self.reference}, item)

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        start = time.perf_counter()
        try:
            reference = render(self.reference, item, output_text)
            score = self.score(reference, output_text)
        except Exception as err:  # a broken record or checker is counted, never fatal
            return failed_grade(err, start)
        return Grade(score, self.classify(score), "", time.perf_counter() - start)

    def score(self, reference: str, output_text: str) -> float:
        raise NotImplementedError


@register_grader("numeric")
class NumericGrader(_ReferenceGrader):
    """1.0 when the completion's final number equals the reference number (within ``tolerance``)."""

    fields = {"reference", "tolerance"}

    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec)
        tol = spec.get("tolerance", 1e-6)
        if not isinstance(tol, int | float) or isinstance(tol, bool) or not 0 <= tol < float("inf"):
            raise GraderError("grader.tolerance must be a non-negative number", "tolerance")
        self.tolerance = float(tol)

    def score(self, reference: str, output_text: str) -> float:
        ref_answer = extract_final_answer(reference)
        want = parse_number(ref_answer) if ref_answer is not None else None
        if want is None:
            raise ValueError(f"reference {reference!r} holds no number")
        got_text = extract_final_answer(output_text)
        got = parse_number(got_text) if got_text is not None else None
        return float(got is not None and abs(got - want) <= self.tolerance * max(1.0, abs(want)))


@register_grader("exact")
class ExactGrader(_ReferenceGrader):
    """1.0 when the completion's final answer equals the reference string (case and space folded)."""

    def score(self, reference: str, output_text: str) -> float:
        got = extract_final_answer(output_text) or output_text

        def norm(s: str) -> str:
            return " ".join(s.strip().strip(".").lower().split())

        return float(norm(got) == norm(reference) or norm(output_text) == norm(reference))


@register_grader("math")
class MathGrader(_ReferenceGrader):
    """Final-answer equivalence through math-verify: \\boxed{}, '#### n', fractions, LaTeX."""

    def score(self, reference: str, output_text: str) -> float:
        from math_verify import parse, verify

        gold_text = _math_text(reference)
        if "\\boxed" not in gold_text and "$" not in gold_text:
            gold_text = f"${gold_text}$"
        # Timeouts use SIGALRM, which works only in the main thread: disable them elsewhere.
        import threading

        main = threading.current_thread() is threading.main_thread()
        timeout = 5 if main else None
        gold = parse(gold_text, parsing_timeout=timeout)
        pred = parse(_math_text(output_text), parsing_timeout=timeout)
        if not gold:
            raise ValueError(f"reference {reference!r} could not be parsed")
        return float(bool(pred) and verify(gold, pred, timeout_seconds=timeout))


# 32,348 but not the pair (3,100): a number opening a bracket or list is left alone.
_THOUSANDS = re.compile(r"(?<![\d.(\[{,])\d{1,3}(?:,\d{3})+(?![\d,])")


def _math_text(text: str) -> str:
    """What math-verify should read: after GSM8K's '####' when present, without the LaTeX money
    and spacing marks ('\\$', '\\!') and thousands commas that would parse as tuples."""
    if "####" in text:
        text = "$" + text.rsplit("####", 1)[1].strip() + "$"
    text = text.replace("\\$", "").replace("\\!", "")
    return _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
