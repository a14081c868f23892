"""A service data directory outside /tmp, and a python grader that hunts for it from the sandbox.

Shared by the sandbox's isolation test (the grader run directly) and the service's (the grader run
through ``/v1/fine_tuning/alpha/graders/run``).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Reports everything of the service it can see (by raising, so the words reach the caller) and
# otherwise returns 0.5: proof that it ran, in a sandbox that does show what a program needs.
PROBE = r"""
import os

def grade(sample, item):
    found = []
    for path in item["secrets"]:
        if os.path.lexists(path):
            found.append("exists " + path)
        try:
            with open(path, "rb") as f:
                found.append("read " + path + ": " + repr(f.read(80)))
        except OSError:
            pass
        try:
            found.append("listed " + path + ": " + repr(os.listdir(path)[:5]))
        except OSError:
            pass
    # The checkout may hold the interpreter's venv, mounted alone; nothing else of it is there.
    if os.path.isdir(item["checkout"]):
        extra = sorted(set(os.listdir(item["checkout"])) - set(item["checkout_allowed"]))
        if extra:
            found.append("listed checkout: " + repr(extra))
    # Everything the sandbox shows but /usr (the system, shown whole by design) and its own trees.
    for root, dirs, files in os.walk("/"):
        if root == "/":
            dirs[:] = [d for d in dirs if d not in ("usr", "proc", "dev", "sys")]
        for name in dirs + files:
            if item["marker"] in name or name == "rapid.db":
                found.append("walked to " + os.path.join(root, name))
    others = sorted(set(os.listdir("/tmp")) - {"prog"})
    if others:
        found.append("other runs' files in /tmp: " + repr(others))
    if found:
        raise RuntimeError("SEEN " + "; ".join(found)[:3000])
    assert os.path.isfile("/usr/bin/env") and os.access("/tmp", os.W_OK)
    return 0.5
"""


@dataclass
class DataDir:
    """A service's data: a SQLite database with a project and key hash, an upload, a job's run."""

    root: Path
    marker: str
    db: Path
    upload: Path
    run_dir: Path

    def item(self, checkout: Path) -> dict:
        """The probe's record: paths the sandbox must not show (the data's and the checkout's) and
        which entries of the checkout it may show (the directory of a venv inside it)."""
        secrets = [
            self.root,
            self.db,
            self.upload,
            self.run_dir,
            self.run_dir / "config.json",
            checkout / "pyproject.toml",
            checkout / "api" / "app.py",
            checkout / "rapid_core",
        ]
        from rapid_core.sandbox.backend import python_executable, visible_paths

        venv = {
            Path(v).relative_to(checkout).parts[0]
            for v in visible_paths(python_executable())
            if Path(v).is_relative_to(checkout)
        }
        return {
            "secrets": [str(p) for p in secrets],
            "marker": self.marker,
            "checkout": str(checkout),
            "checkout_allowed": sorted(venv),
        }


@contextmanager
def data_dir(parent: Path) -> Iterator[DataDir]:
    """A data directory named with a fresh marker under ``parent``, removed afterwards. World-
    readable, as the default umask leaves it: only the sandbox's walls may hide it."""
    marker = f"rapid-test-{uuid.uuid4().hex[:12]}"
    root = parent / marker
    (root / "artifacts" / "files").mkdir(parents=True)
    run_dir = root / "runs" / "ftjob-other-tenant"
    run_dir.mkdir(parents=True)
    db = root / "rapid.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE projects (id TEXT, name TEXT, key_hash TEXT)")
        conn.execute("INSERT INTO projects VALUES ('proj-1', ?, 'f00d')", (f"secret-project-{marker}",))
    upload = root / "artifacts" / "files" / "file-other.jsonl"
    upload.write_text(json.dumps({"messages": [{"role": "user", "content": f"secret {marker}"}]}) + "\n")
    (run_dir / "config.json").write_text(json.dumps({"secret": marker}))
    for p in (root, *root.rglob("*")):
        p.chmod(0o777 if p.is_dir() else 0o666)
    try:
        yield DataDir(root, marker, db, upload, run_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)
