"""Host side of ``code_harness``: package a job for the sandbox and read back its verdict."""

from __future__ import annotations

import json
import re
import secrets
from functools import cache
from pathlib import Path
from typing import Any

from rapid_core.sandbox import Limits, SandboxJob, SandboxResult

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str:
    """The completion's fenced ```python blocks (joined), else the whole text."""
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    return "\n\n".join(blocks) if blocks else text


@cache
def harness_source() -> str:
    return (Path(__file__).with_name("code_harness.py")).read_text()


def make_job(job: dict[str, Any], limits: Limits, binds: tuple[str, ...] = ()) -> tuple[SandboxJob, str]:
    """A sandbox job running the harness on ``job``, and the nonce its verdict line must carry.
    ``binds``: host paths the run must read besides the sandbox's allow-list (a Lean project)."""
    nonce = secrets.token_hex(16)
    return SandboxJob(harness_source(), json.dumps({**job, "nonce": nonce}), {}, limits, binds), nonce


def read_verdict(result: SandboxResult, nonce: str) -> dict[str, Any] | None:
    """The verdict the harness wrote, or None when the program never got that far."""
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(nonce + " "):
            try:
                verdict = json.loads(line[len(nonce) + 1 :])
            except json.JSONDecodeError:
                return None
            return verdict if isinstance(verdict, dict) else None
    return None
