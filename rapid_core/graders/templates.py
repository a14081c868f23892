"""``{{ namespace.path }}`` templates, as OpenAI's graders write them.

Namespaces: ``item`` (the dataset record) and ``sample`` (the completion: ``output_text``,
``output_json`` when the text is valid JSON, ``output_tools`` and ``choices`` in the chat
completions shape). Paths are JSON-path-like: ``item.ground_truth.date``, ``item.labels[1]``.
Every ``{{ ... }}`` in a template must parse, so a typo is refused when the grader is built
instead of being left in the text unsubstituted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from rapid_core.errors import GraderError

_BRACES = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]")
_ROOT = re.compile(r"\s*(item|sample)((?:\.[A-Za-z_][\w-]*|\[\d+\])*)\s*$")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices")


class TemplateError(GraderError):
    """A template path that does not resolve for this record or sample. ``namespace`` says which."""

    def __init__(self, message: str, namespace: str):
        super().__init__(message)
        self.namespace = namespace


@dataclass(frozen=True)
class Path:
    namespace: str  # "item" or "sample"
    steps: tuple[str | int, ...]  # keys and list indices

    def __str__(self) -> str:
        return self.namespace + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in self.steps)


def parse_template(template: str) -> tuple[Path, ...]:
    """Every path the template reads; GraderError names the first ``{{...}}`` that is not one."""
    paths = []
    for inner in _BRACES.findall(template):
        m = _ROOT.match(inner)
        if m is None:
            raise GraderError(
                f"template {{{{{inner.strip()}}}}} is not item.<path> or sample.<path> "
                "(paths are names joined by '.', with [n] for list items)"
            )
        steps = tuple(key if key else int(index) for key, index in _STEP.findall(m.group(2)))
        path = Path(m.group(1), steps)
        if path.namespace == "sample" and (not steps or steps[0] not in SAMPLE_FIELDS):
            raise GraderError(f"template {{{{{path}}}}}: the sample namespace has {', '.join(SAMPLE_FIELDS)}")
        if path.namespace == "sample" and steps[0] == "output_tools" and len(steps) > 1:
            raise GraderError(
                f"template {{{{{path}}}}}: this service's models make no tool calls, so "
                "sample.output_tools is always empty"
            )
        if path.namespace == "item" and not steps:
            raise GraderError("template {{item}} must name a field, as in {{item.answer}}")
        paths.append(path)
    return tuple(paths)


def template_fields(template: str) -> set[str]:
    """Top-level record fields a template reads: ``{{item.answer}}`` -> {"answer"}."""
    return {str(p.steps[0]) for p in parse_template(template) if p.namespace == "item"}


def sample_namespace(output_text: str) -> dict[str, Any]:
    """The ``sample`` a grader sees for one completion (also the python grader's argument)."""
    try:
        output_json = json.loads(output_text)
    except (ValueError, RecursionError):
        output_json = None
    message = {"role": "assistant", "content": output_text}
    return {
        "output_text": output_text,
        "output_json": output_json,
        "output_tools": [],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }


def lookup(path: Path, item: dict[str, Any], sample: dict[str, Any]) -> Any:
    value: Any = item if path.namespace == "item" else sample
    for n, step in enumerate(path.steps):
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
        else:
            where = Path(path.namespace, path.steps[: n + 1])
            if (
                path.namespace == "sample"
                and path.steps[0] == "output_json"
                and sample["output_json"] is None
            ):
                raise TemplateError(f"{{{{{path}}}}}: the sample is not valid JSON", "sample")
            raise TemplateError(f"{{{{{path}}}}}: {where} does not exist", path.namespace)
    return value


def render(
    template: str, item: dict[str, Any], output_text: str, sample: dict[str, Any] | None = None
) -> str:
    """Substitute every ``{{...}}``; non-string values are written as JSON."""
    paths = parse_template(template)
    if not paths:
        return template
    sample = sample if sample is not None else sample_namespace(output_text)
    values = iter(paths)

    def sub(_: re.Match[str]) -> str:
        value = lookup(next(values), item, sample)
        return value if isinstance(value, str) else json.dumps(value)

    return _BRACES.sub(sub, template)


def template_spec(spec: dict[str, Any], key: str, default: str | None = None) -> str:
    """A template field of a spec, parsed once so a bad path is refused naming the field."""
    value = spec.get(key, default)
    if not isinstance(value, str):
        raise GraderError(f"grader.{key} must be a template string such as '{{{{item.answer}}}}'", key)
    try:
        parse_template(value)
    except GraderError as err:
        raise GraderError(f"grader.{key}: {err}", key) from None
    return value


def check_record(templates: dict[str, str], item: dict[str, Any]) -> None:
    """Refuse templates whose item paths do not resolve on ``item`` (a record of the training file):
    such a grader would fail on every sample of that record."""
    for key, template in templates.items():
        for path in parse_template(template):
            if path.namespace == "item":
                try:
                    lookup(path, item, {})
                except TemplateError as err:
                    raise GraderError(f"grader.{key}: {err} in the first training record", key) from None
