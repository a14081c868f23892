"""``{{item.<field>}}`` and ``{{sample.output_text}}`` templates, as OpenAI's graders write them."""

from __future__ import annotations

import json
import re
from typing import Any

from rapid_core.errors import GraderError

_TEMPLATE = re.compile(r"\{\{\s*([a-zA-Z_][\w.]*)\s*\}\}")


def template_fields(template: str) -> set[str]:
    """Top-level record fields a template reads: ``{{item.answer}}`` -> {"answer"}."""
    fields = set()
    for path in _TEMPLATE.findall(template):
        root, _, rest = path.partition(".")
        if root == "item" and rest:
            fields.add(rest.split(".")[0])
        elif root not in ("item", "sample"):
            raise GraderError(f"template {{{{{path}}}}} must start with item. or sample.")
    return fields


def _lookup(path: str, item: dict[str, Any], output_text: str) -> Any:
    root, _, rest = path.partition(".")
    if root == "sample":
        if rest in ("output_text", ""):
            return output_text
        raise GraderError(f"unknown sample field {rest!r}; known: output_text")
    value: Any = item
    for key in rest.split(".") if rest else []:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise GraderError(f"record has no field {rest!r}")
    return value


def render(template: str, item: dict[str, Any], output_text: str) -> str:
    """Substitute every ``{{...}}``; non-string values are written as JSON."""

    def sub(m: re.Match[str]) -> str:
        value = _lookup(m.group(1), item, output_text)
        return value if isinstance(value, str) else json.dumps(value)

    return _TEMPLATE.sub(sub, template)
