"""``lean``: MiniF2F-style proof checking with a Lean 4 toolchain and a Mathlib project.

Only where ``lake`` is on PATH and a project with Mathlib is named (``project`` in the spec or
RAPID_LEAN_PROJECT); otherwise the grader refuses at construction, i.e. at job creation. The proof
is checked by ``lake env lean`` inside the sandbox (Lean's ``#eval`` can run arbitrary code). The
sandbox shows only an allow-list of the host: the project is mounted (read-only) for each run, and a
toolchain outside /usr (``~/.elan``, say) must be listed in RAPID_SANDBOX_BIND to be visible there.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, register_grader
from rapid_core.graders.harness import make_job, read_verdict
from rapid_core.sandbox import Limits, SandboxPool, default_pool
from rapid_core.settings import core_settings

_LEAN_FENCE = re.compile(r"```[ \t]*lean4?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_CHEATS = re.compile(r"\b(sorry|admit|axiom|native_decide)\b")

# Runs in the sandbox through the code harness's ``grade`` mode: grade() shells out to Lean.
_CHECK_SOURCE = """
import json, subprocess
def grade(sample, item):
    with open("/tmp/Proof.lean", "w") as f:
        f.write(item["lean_source"])
    p = subprocess.run([item["lake"], "env", "lean", "/tmp/Proof.lean"], cwd=item["project"],
                       capture_output=True, text=True)
    out = p.stdout + p.stderr
    if p.returncode != 0 or "error" in out or "sorry" in out:
        raise RuntimeError("PROOF_REJECTED " + out[-1500:])
    return 1.0
"""


def extract_proof(text: str) -> str:
    blocks = _LEAN_FENCE.findall(text)
    return blocks[-1] if blocks else text


@register_grader("lean")
class LeanGrader(Grader):
    fields = {"project", "timeout"}

    def __init__(self, spec: dict[str, Any], pool: SandboxPool | None = None):
        super().__init__(spec)
        self.lake = shutil.which("lake")
        if self.lake is None:
            raise GraderError(
                "the lean grader needs a Lean 4 toolchain with Mathlib: 'lake' is not on PATH here"
            )
        project = spec.get("project") or core_settings().lean_project
        if project is not None and (not isinstance(project, str) or "\0" in project):
            raise GraderError("grader.project must be the path of a Lake project", "project")
        if not project or not (Path(project) / ".lake" / "packages" / "mathlib").is_dir():
            raise GraderError(
                "the lean grader needs a Lake project with Mathlib built: set grader.project "
                "or RAPID_LEAN_PROJECT to its directory"
            )
        self.project = str(Path(project).resolve())
        timeout = spec.get("timeout", 300)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
            raise GraderError("grader.timeout must be a number of seconds in (0, 3600]", "timeout")
        # Importing Mathlib maps gigabytes of .olean files: the address-space limit must allow it.
        self.limits = Limits(timeout_s=float(timeout), memory_mb=32768, processes=256)
        self.pool = pool

    def required_fields(self) -> set[str]:
        return {"formal_statement", "header"}

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        return self.grade_batch([item], [output_text])[0]

    def grade_batch(self, items: list[dict[str, Any]], output_texts: list[str]) -> list[Grade]:
        pool = self.pool or default_pool()
        runs: list[tuple[str, Any] | Grade] = []
        for item, text in zip(items, output_texts, strict=True):
            proof = extract_proof(text)
            if _CHEATS.search(proof):
                runs.append(Grade(0.0, "wrong", "the proof uses sorry, admit, axiom or native_decide"))
                continue
            statement = item["formal_statement"]
            body = proof if statement.split(":=")[0].strip() in proof else statement + proof
            lean_item = {
                "lean_source": item.get("header", "") + body,
                "lake": self.lake,
                "project": self.project,
            }
            job, nonce = make_job(
                {"mode": "grade", "code": _CHECK_SOURCE, "sample": {}, "item": lean_item},
                self.limits,
                binds=(self.project,),
            )
            runs.append((nonce, pool.submit(job)))
        return [r if isinstance(r, Grade) else self._grade(r[1].result(), r[0]) for r in runs]

    def _grade(self, result, nonce: str) -> Grade:
        if result.status in ("timeout", "sandbox_failure"):
            return Grade(0.0, result.status, result.detail, result.seconds)
        verdict = read_verdict(result, nonce) or {}
        if verdict.get("score") == 1.0:
            return Grade(1.0, "ok", "", result.seconds)
        crash = str(verdict.get("crash", result.detail))
        status = "wrong" if "PROOF_REJECTED" in crash else "error"
        return Grade(0.0, status, crash[-500:], result.seconds)
