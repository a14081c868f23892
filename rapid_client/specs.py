"""Grader and hyperparameter specs from the command line: files, inline JSON, or short forms."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from rapid_client.connection import ClientError

SHORT_GRADER = re.compile(r"^(?P<type>[a-z][a-z0-9_]*)(?::(?P<reference>.*))?$", re.DOTALL)


def load_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ClientError(f"cannot read {what} file {str(p)!r}: {err.strerror}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ClientError(
            f"{what} file {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {err}"
        ) from None
    if not isinstance(data, dict):
        raise ClientError(f"{what} file {p} must hold a mapping, not {type(data).__name__}")
    return data


def parse_grader(text: str) -> dict[str, Any]:
    """A grader from a .json / .yaml file, inline JSON, or a short form:
    ``numeric:{{item.answer}}`` -> {"type": "numeric", "reference": "{{item.answer}}"},
    ``python:grader.py`` -> {"type": "python", "source": <the file>}, ``TYPE`` -> {"type": TYPE}."""
    if text.lstrip().startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise ClientError(f"--grader: not valid JSON: {err}") from None
        if not isinstance(spec, dict):
            raise ClientError("--grader: JSON must be an object")
        return spec
    if Path(text).suffix in (".json", ".yaml", ".yml"):
        return load_mapping(text, "grader")
    match = SHORT_GRADER.match(text)
    if not match:
        raise ClientError(
            f"--grader {text!r}: give a .json / .yaml file, inline JSON, or TYPE:REFERENCE "
            "such as numeric:{{item.answer}}"
        )
    kind, reference = match["type"], match["reference"]
    if reference is None:
        return {"type": kind}
    if kind == "python":
        try:
            return {"type": "python", "source": Path(reference).read_text()}
        except OSError as err:
            raise ClientError(f"--grader python:{reference}: cannot read {err.strerror}") from None
    return {"type": kind, "reference": reference}


def parse_value(text: str) -> Any:
    """A flag value: JSON where it parses (3e-4, true, null, [1, 2]), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_hyperparameters(pairs: list[str], file: str | None = None) -> dict[str, Any]:
    """Hyperparameters from a JSON / YAML file, then ``key=value`` pairs over it."""
    values = load_mapping(file, "hyperparameters") if file else {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ClientError(f"--hp {pair!r}: expected KEY=VALUE, e.g. --hp learning_rate=3e-4")
        values[key.strip()] = parse_value(raw)
    return values
