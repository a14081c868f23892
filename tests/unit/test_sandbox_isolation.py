"""The sandbox shows an allow-list of the host: a service data directory outside /tmp (its SQLite
database, uploads, other jobs' run directories) and the project checkout are invisible to graders,
while what Python, MBPP-style tests and a Lean toolchain need is there."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from rapid_core.graders import build_grader
from rapid_core.graders.harness import make_job, read_verdict
from rapid_core.sandbox import Limits, SandboxJob, backend, default_pool, run, sandbox_info
from rapid_core.settings import core_settings
from tests.conftest import REPO
from tests.isolation_probe import PROBE, data_dir

# Outside every tmpfs the sandbox mounts: a system directory, and inside the checkout (./rapid-data).
PARENTS = {"var-lib": Path("/var/lib"), "checkout": REPO}


@pytest.fixture(params=sorted(PARENTS))
def data(request):
    with data_dir(PARENTS[request.param]) as d:
        yield d


def test_a_python_grader_sees_no_data_directory_checkout_or_other_run(data):
    # Another run holds files in its own sandbox while the probe hunts.
    other = default_pool().submit(SandboxJob("import time; open('mine', 'w').write('x'); time.sleep(4)"))
    grader = build_grader({"type": "python", "source": PROBE, "timeout": 90})
    [grade] = grader.grade_batch([data.item(REPO)], ["anything"])
    assert (grade.score, grade.detail) == (0.5, ""), grade
    assert other.result().status == "ok"
    assert data.db.is_file() and data.upload.is_file()  # they were there all along, world-readable


def test_the_probe_does_find_a_data_directory_the_sandbox_shows(data):
    # The control: mounted on purpose, the same probe reports the database and the upload.
    job, nonce = make_job(
        {"mode": "grade", "code": PROBE, "sample": {}, "item": data.item(REPO)},
        Limits(timeout_s=90),
        binds=(str(data.root),),
    )
    crash = read_verdict(run(job), nonce)["crash"]
    assert f"walked to {data.db}" in crash and f"read {data.run_dir}/config.json" in crash, crash


def test_code_under_test_cannot_read_the_database_or_an_upload(data):
    grader = build_grader({"type": "code_tests", "style": "mbpp"})
    record = {"test_list": ["assert leak() > 0"]}
    leak = "```python\ndef leak():\n    return len(open({!r}, 'rb').read())\n```"
    grades = grader.grade_batch(
        [record] * 3, [leak.format(str(data.db)), leak.format(str(data.upload)), leak.format("/usr/bin/env")]
    )
    assert [g.score for g in grades] == [0.0, 0.0, 1.0], grades
    assert "No such file" in grades[0].detail


def test_only_the_allow_list_is_visible():
    python = backend.python_executable()
    visible = backend.visible_paths(python)
    assert "/" not in visible and "/usr" in visible
    # Nothing that holds the checkout (where ./rapid-data lives) or /var/lib, /home, /root, /srv.
    for hidden in (
        REPO / "rapid-data",
        REPO / "pyproject.toml",
        Path("/var/lib/x"),
        Path("/home/x"),
        Path("/root/x"),
        Path("/srv/x"),
        Path("/etc/shadow"),
    ):
        assert not any(str(hidden) == v or str(hidden).startswith(v.rstrip("/") + "/") for v in visible), (
            hidden
        )
    # The interpreter's own directories are there: its bin and lib, a venv's pyvenv.cfg.
    assert str(Path(python).parent) in visible


def test_unshare_is_never_chosen_on_its_own_and_says_what_it_lacks(monkeypatch, tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("unshare", "setpriv", "prlimit", "env"):  # everything but bwrap
        (tools / tool).symlink_to(shutil.which(tool))
    try:
        monkeypatch.setenv("PATH", str(tools))
        sandbox_info.cache_clear()
        info = sandbox_info()
        assert info.backend is None and "not falling back to unshare" in info.reason
        assert run(SandboxJob("print('ran')")).status == "sandbox_failure"
        monkeypatch.setenv("RAPID_SANDBOX_BACKEND", "unshare")
        core_settings.cache_clear()  # settings are read once per process
        sandbox_info.cache_clear()
        info = sandbox_info()
        # Forced, it runs where it can (as root, with an interpreter a fresh uid may execute), and
        # says what it lacks; it cannot here when the interpreter lives under /root (0700).
        assert "no file-system isolation" in info.reason if info.backend else "unshare failed" in info.reason
    finally:
        monkeypatch.undo()
        core_settings.cache_clear()
        sandbox_info.cache_clear()
    assert sandbox_info().backend == "bwrap"


FAKE_LAKE = """#!/bin/sh
# Stands in for `lake env lean FILE`: needs the project's lakefile, accepts a proof by rfl.
[ "$1 $2" = "env lean" ] || exit 2
cat lakefile.lean > /dev/null || exit 3
grep -q rfl "$3" && exit 0
echo "error: unsolved goals"
exit 1
"""


def test_lean_grader_reaches_its_toolchain_and_project(monkeypatch):
    root = Path(tempfile.mkdtemp(prefix=f"rapid-test-lean-{uuid.uuid4().hex[:6]}-", dir="/var/lib"))
    try:
        toolchain, project = root / "elan", root / "project"
        (toolchain / "bin").mkdir(parents=True)
        (project / ".lake" / "packages" / "mathlib").mkdir(parents=True)
        (project / "lakefile.lean").write_text("-- the project\n")
        lake = toolchain / "bin" / "lake"
        lake.write_text(FAKE_LAKE)
        for p in (root, *root.rglob("*")):
            p.chmod(0o755)
        monkeypatch.setenv("PATH", f"{toolchain / 'bin'}:{os.environ['PATH']}")
        monkeypatch.setenv("RAPID_SANDBOX_BIND", str(toolchain))
        core_settings.cache_clear()  # settings are read once per process
        grader = build_grader({"type": "lean", "project": str(project), "timeout": 30})
        item = {"formal_statement": "theorem t : 1 = 1 :=", "header": "import Mathlib\n"}
        good, bad = grader.grade_batch([item, item], ["```lean\ntheorem t : 1 = 1 := by rfl\n```", "by simp"])
        assert (good.score, good.status) == (1.0, "ok"), good
        assert (bad.score, bad.status) == (0.0, "wrong") and "unsolved goals" in bad.detail, bad
        monkeypatch.delenv("RAPID_SANDBOX_BIND")  # without it the toolchain is not in the sandbox
        core_settings.cache_clear()
        [hidden] = grader.grade_batch([item], ["```lean\ntheorem t : 1 = 1 := by rfl\n```"])
        assert hidden.score == 0.0 and "No such file" in hidden.detail, hidden
    finally:
        shutil.rmtree(root)
