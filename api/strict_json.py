"""Strict JSON for everything the API reads (request bodies, uploaded JSONL lines).

Python's ``json`` accepts what the service must not store or compute with: ``NaN`` and
``Infinity`` (and ``1e400``, which overflows to infinity), NUL characters (PostgreSQL refuses them
in text) and nesting so deep that a later step recurses past its limit. ``loads`` refuses each
with a ``JsonError`` whose ``path`` names the field (``method.reinforcement.hyperparameters.x``).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # objects and arrays inside one another
MAX_INT = 2**63 - 1  # the widest integer a database column or the trainer takes


class JsonError(ValueError):
    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.message, self.path = message, path


class _NotFinite(str):
    """Stands in for NaN, Infinity or an overflowing number until ``check`` finds where it is."""


def _float(text: str) -> float | _NotFinite:
    value = float(text)
    return value if math.isfinite(value) else _NotFinite(text)


def loads(data: bytes | str) -> Any:
    """Parse ``data``; JsonError for invalid JSON, non-finite numbers, NUL, deep nesting, huge ints."""
    try:
        value = json.loads(data, parse_float=_float, parse_constant=_NotFinite)
    except JsonError:
        raise
    except RecursionError:
        raise JsonError(f"JSON is nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError, as is a 5000-digit int
        raise JsonError(str(err)) from None
    check(value)
    return value


def check(value: Any, path: str = "") -> None:
    """Depth, NUL characters and integer range of an already parsed value (iterative: no recursion)."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict | list) and depth >= MAX_DEPTH:
            raise JsonError(f"JSON is nested more than {MAX_DEPTH} levels deep", where or None)
        if isinstance(node, dict):
            for key, item in node.items():
                child = f"{where}.{key}" if where else str(key)
                if "\x00" in key:
                    raise JsonError("keys must not contain NUL characters", child.replace("\x00", "\\u0000"))
                stack.append((item, child, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{n}]", depth + 1) for n, item in enumerate(node))
        elif isinstance(node, _NotFinite):
            raise JsonError(f"{node} is not allowed: numbers must be finite", where or None)
        elif isinstance(node, str) and "\x00" in node:
            raise JsonError("strings must not contain NUL characters", where or None)
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_INT:
            raise JsonError(f"{node} is out of range (at most {MAX_INT} in magnitude)", where or None)
