"""The ``calculate_output`` formulas of ``multi`` graders, as OpenAI documents them.

Operators ``+ - * /`` and ``^`` (power, binding tighter than ``*`` as in maths), parentheses,
numbers, the sub-graders' names, and the functions ``min max abs floor ceil exp sqrt log``.
The text is parsed with ``ast`` (``^`` read as ``**``) and checked against that grammar, its size,
depth and each function's number of arguments, so a formula that parses can always be evaluated;
nothing is ever passed to ``eval``. A result that is not a finite number is an error.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from rapid_core.errors import GraderError

MAX_CHARS = 1000
MAX_DEPTH = 32
MAX_NODES = 400
FIELD = "calculate_output"

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: math.pow,  # math.pow: a negative base with a fractional power raises, never a complex
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
# name -> (function, fewest arguments, most arguments)
FUNCTIONS: dict[str, tuple[Callable[..., float], int, int]] = {
    "min": (min, 2, 64),
    "max": (max, 2, 64),
    "abs": (abs, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "exp": (math.exp, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 1),
}
_OPS = ("+ - * / ^", ", ".join(FUNCTIONS))


def _fail(message: str) -> GraderError:
    return GraderError(f"grader.calculate_output: {message}", FIELD)


def parse_formula(formula: object, names: set[str]) -> ast.expr:
    """Parse and check a formula once; GraderError names what is not allowed."""
    if not isinstance(formula, str) or not formula.strip():
        raise _fail("must be a formula over the grader names, such as '0.5 * a + 0.5 * b'")
    if len(formula) > MAX_CHARS:
        raise _fail(f"is {len(formula)} characters long; the limit is {MAX_CHARS}")
    if "**" in formula:
        raise _fail("write powers with ^, as in 'a ^ 2'")
    try:
        tree = ast.parse(formula.replace("^", "**"), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _fail(f"is not a valid formula: {formula[:200]!r}") from None
    _check(tree, names)
    return tree


def _check(tree: ast.expr, names: set[str]) -> None:
    """Walk the tree (iteratively: its depth is what is being checked) against the grammar."""
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_NODES:
            raise _fail(f"is nested deeper than {MAX_DEPTH} levels or has more than {MAX_NODES} parts")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            stack += [(node.left, depth + 1), (node.right, depth + 1)]
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            stack.append((node.operand, depth + 1))
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in FUNCTIONS or node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise _fail(f"only the functions {_OPS[1]} may be called, with plain arguments")
            _, low, high = FUNCTIONS[name]
            if not low <= len(node.args) <= high:
                want = f"{low}" if low == high else f"{low} to {high}"
                raise _fail(f"{name}() takes {want} argument(s), not {len(node.args)}")
            stack += [(arg, depth + 1) for arg in node.args]
        elif isinstance(node, ast.Name):
            if node.id not in names:
                raise _fail(f"unknown name {node.id!r}; the graders are {sorted(names)}")
        elif isinstance(node, ast.Constant):
            value = node.value
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise _fail(f"{value!r} is not a finite number")
        else:
            what = type(getattr(node, "op", node)).__name__
            raise _fail(f"{what} is not allowed; operators: {_OPS[0]}; functions: {_OPS[1]}")


def evaluate(node: ast.expr, values: dict[str, float]) -> float:
    """The formula's value; ArithmeticError or ValueError (math domain) for what has none, and
    ArithmeticError for a result that is not a finite number."""
    result = _value(node, values)
    if not math.isfinite(result):
        raise ArithmeticError(f"the result is {result}, not a finite number")
    return result


def _value(node: ast.expr, values: dict[str, float]) -> float:
    # Recursion is bounded by MAX_DEPTH, checked when the formula was parsed.
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.BinOp):
        return float(_BINARY[type(node.op)](_value(node.left, values), _value(node.right, values)))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_value(node.operand, values))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return float(FUNCTIONS[node.func.id][0](*(_value(a, values) for a in node.args)))
