"""``multi``: several named graders combined by a ``calculate_output`` formula.

The formula is parsed with ``ast`` and walked against a whitelist (numbers, grader names,
+ - * /, parentheses, min/max/abs); nothing is ever passed to ``eval``.
"""

from __future__ import annotations

import ast
import operator
import time
from collections.abc import Callable
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import FAILURES, Grade, Grader, build_grader, register_grader

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}


def parse_formula(formula: str, names: set[str]) -> ast.expr:
    """Parse and check a formula once; GraderError names what is not allowed."""
    try:
        tree = ast.parse(formula, mode="eval").body
    except SyntaxError:
        raise GraderError(f"grader.calculate_output is not a valid formula: {formula!r}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp | ast.UnaryOp):
            op = type(node.op)
            if op not in _BINARY and op not in _UNARY:
                raise GraderError(f"grader.calculate_output: operator {op.__name__} is not allowed")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                raise GraderError(f"grader.calculate_output: only {sorted(_FUNCTIONS)} may be called")
            if not node.args:
                raise GraderError(f"grader.calculate_output: {node.func.id}() needs arguments")
        elif isinstance(node, ast.Name):
            if node.id not in names and node.id not in _FUNCTIONS:
                raise GraderError(
                    f"grader.calculate_output: unknown name {node.id!r}; graders: {sorted(names)}"
                )
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float) or isinstance(node.value, bool):
                raise GraderError(f"grader.calculate_output: constant {node.value!r} is not a number")
        elif not isinstance(node, ast.operator | ast.unaryop | ast.Load):
            raise GraderError(f"grader.calculate_output: {type(node).__name__} is not allowed")
    return tree


def evaluate(node: ast.expr, values: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](evaluate(node.left, values), evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](evaluate(node.operand, values))
    if isinstance(node, ast.Call):
        return float(_FUNCTIONS[node.func.id](*(evaluate(a, values) for a in node.args)))  # type: ignore[union-attr]
    raise GraderError(f"unexpected {type(node).__name__} in formula")  # parse_formula rules this out


@register_grader("multi")
class MultiGrader(Grader):
    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec)
        unknown = set(spec) - {"type", "name", "graders", "calculate_output", "pass_threshold"}
        if unknown:
            raise GraderError(f"unknown field(s) for multi grader: {', '.join(sorted(unknown))}")
        graders = spec.get("graders")
        if not isinstance(graders, dict) or not graders:
            raise GraderError("grader.graders must be an object of name -> grader spec")
        self.graders: dict[str, Grader] = {}
        for name, sub in graders.items():
            if not str(name).isidentifier() or name in _FUNCTIONS:
                raise GraderError(f"grader.graders: {name!r} must be an identifier usable in the formula")
            try:
                self.graders[name] = build_grader(sub)
            except GraderError as err:
                raise GraderError(f"grader.graders.{name}: {err}") from None
        formula = spec.get("calculate_output")
        if not isinstance(formula, str):
            raise GraderError("grader.calculate_output must be a formula over the grader names")
        self.formula = parse_formula(formula, set(self.graders))
        self.pass_threshold = float(spec.get("pass_threshold", 1.0))

    def required_fields(self) -> set[str]:
        return set().union(*(g.required_fields() for g in self.graders.values()))

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        return self.grade_batch([item], [output_text])[0]

    def grade_batch(self, items: list[dict[str, Any]], output_texts: list[str]) -> list[Grade]:
        # Each sub-grader grades the whole batch, so code-running ones use their parallel pool.
        start = time.perf_counter()
        by_name = {name: g.grade_batch(items, output_texts) for name, g in self.graders.items()}
        per_item = (time.perf_counter() - start) / max(1, len(items))
        return [self._combine({n: gs[i] for n, gs in by_name.items()}, per_item) for i in range(len(items))]

    def _combine(self, subs: dict[str, Grade], seconds: float) -> Grade:
        detail = ", ".join(
            f"{n}={g.score:g}" + (f" ({g.status})" if g.status in FAILURES else "") for n, g in subs.items()
        )
        try:
            score = evaluate(self.formula, {n: g.score for n, g in subs.items()})
        except (ZeroDivisionError, OverflowError) as err:
            return Grade(0.0, "error", f"calculate_output: {err}; {detail}", seconds)
        failed = next((g.status for g in subs.values() if g.status in FAILURES), None)
        return Grade(score, failed or self.classify(score), detail, seconds)
