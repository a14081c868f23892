"""One sandboxed run: a fresh directory, the limits, the wall clock, the captured output, the verdict."""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rapid_core.sandbox import backend
from rapid_core.settings import core_settings

RunStatus = Literal["ok", "error", "timeout", "sandbox_failure"]
_LAUNCHERS = ("bwrap:", "setpriv:", "prlimit:", "unshare:", "env:")
_uids = random.SystemRandom()


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_size_mb: int = 16  # any one file, stdout and stderr included (RLIMIT_FSIZE)
    processes: int = 64  # processes and threads of the run's uid (RLIMIT_NPROC)
    open_files: int = 64
    tmp_mb: int = 64  # the writable tmpfs
    output_bytes: int = 64 * 1024  # kept from stdout and from stderr (head and tail)
    cpu_s: int | None = None  # default: the wall-clock limit, rounded up, plus one

    @property
    def cpu_seconds(self) -> int:
        return self.cpu_s if self.cpu_s is not None else int(self.timeout_s) + 1


@dataclass(frozen=True)
class SandboxJob:
    source: str
    stdin: str = ""
    files: dict[str, str] = field(default_factory=dict)  # extra read-only files beside main.py
    limits: Limits = Limits()
    # Host paths this run may read besides the sandbox's allow-list (a Lean project): set by a
    # grader from its own configuration, never from a request.
    binds: tuple[str, ...] = ()


@dataclass(frozen=True)
class SandboxResult:
    status: RunStatus
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    detail: str = ""
    uid: int | None = None


def run_python(
    source: str, *, stdin: str = "", files: dict[str, str] | None = None, limits: Limits | None = None
) -> SandboxResult:
    """Run ``source`` as a Python program in the sandbox and classify the run. Never raises."""
    return run(SandboxJob(source, stdin, files or {}, limits or Limits()))


def run(job: SandboxJob) -> SandboxResult:
    info = sandbox_info()
    if info.backend is None:
        return SandboxResult("sandbox_failure", None, "", "", 0.0, f"no sandbox available: {info.reason}")
    return run_with_backend(info.backend, job.source, job.limits, job.stdin, job.files, job.binds)


def run_with_backend(
    name: str,
    source: str,
    limits: Limits,
    stdin: str = "",
    files: dict[str, str] | None = None,
    binds: tuple[str, ...] = (),
) -> SandboxResult:
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="rapid-sbx-"))
    try:
        prog = root / "prog"
        prog.mkdir()
        for name_, text in {**(files or {}), "main.py": source}.items():
            (prog / Path(name_).name).write_text(text)
        (root / "stdin").write_text(stdin)
        os.chmod(root / "stdin", 0o600)  # the host opens it; the program must not reopen it by path
        uid = _uids.randrange(2**20, 2**30) if os.geteuid() == 0 else None
        if name == "unshare":  # no private tmpfs there: the program works in prog/, so it owns it
            os.chmod(root, 0o711)
            os.chown(prog, uid or os.getuid(), uid or os.getgid())
        # Not -I: that would ignore PYTHONHASHSEED; the environment is ours (cleared) anyway.
        argv = [backend.python_executable(), "-s", "-B", f"{_program_dir(name, prog)}/main.py"]
        cmd = backend.BUILDERS[name](argv, str(prog), limits, uid, binds)
        return _execute(cmd, root, limits, start, uid, cwd=str(prog))
    except OSError as err:
        return SandboxResult(
            "sandbox_failure", None, "", "", time.perf_counter() - start, f"could not start: {err}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _program_dir(name: str, prog: Path) -> str:
    return backend.PROGRAM_DIR if name == "bwrap" else str(prog)


def _execute(
    cmd: list[str], root: Path, limits: Limits, start: float, uid: int | None, cwd: str
) -> SandboxResult:
    with (
        open(root / "stdin", "rb") as fin,
        open(root / "out", "wb") as fout,
        open(root / "err", "wb") as ferr,
    ):
        # A session of its own: the timeout can kill the whole group, and the program's signals
        # to "its" group can never reach the caller.
        proc = subprocess.Popen(
            cmd,
            stdin=fin,
            stdout=fout,
            stderr=ferr,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        timed_out = False
        try:
            code = proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            code = proc.wait()
    seconds = time.perf_counter() - start
    stdout, stderr = (
        _read_capped(root / "out", limits.output_bytes),
        _read_capped(root / "err", limits.output_bytes),
    )
    status, detail = _classify(code, timed_out, stderr, limits)
    return SandboxResult(status, code, stdout, stderr, seconds, detail, uid)


def _kill_group(pid: int) -> None:
    # Killing the launcher is enough: its children die with it (--die-with-parent / --kill-child)
    # and the PID namespace takes every remaining process down with its first one.
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_capped(path: Path, cap: int) -> str:
    """The first and last ``cap // 2`` bytes: the start shows the error, the end the verdict line."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= cap:
            data = f.read()
        else:
            head = f.read(cap // 2)
            f.seek(size - cap // 2)
            data = head + f"\n...[{size - cap} bytes cut]...\n".encode() + f.read()
    return data.decode("utf-8", errors="replace")


def _classify(code: int, timed_out: bool, stderr: str, limits: Limits) -> tuple[RunStatus, str]:
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.timeout_s:g}s exceeded"
    if code == 0:
        return "ok", ""
    # bwrap reports a signal-killed program as 128 + signal; Popen reports -signal.
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if sig == signal.SIGXCPU:
        return "timeout", f"CPU time limit of {limits.cpu_seconds}s exceeded"
    if sig == signal.SIGXFSZ:
        return "error", f"output or file size limit of {limits.file_size_mb} MiB exceeded"
    if sig:
        return (
            "error",
            f"killed by signal {signal.Signals(sig).name}"
            if sig in signal.valid_signals()
            else f"exit {code}",
        )
    first = stderr.lstrip().split("\n", 1)[0]
    if first.startswith(_LAUNCHERS):
        return "sandbox_failure", first[:300]
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return "error", (lines[-1] if lines else f"exit status {code}")[:300]


@functools.cache
def sandbox_info() -> backend.SandboxInfo:
    """Pick the backend that actually starts a program here (checked once per process): bwrap, or
    unshare only when RAPID_SANDBOX_BACKEND forces it (see backend.py's docstring)."""
    python = backend.python_executable()
    forced = core_settings().sandbox_backend
    if forced and forced not in backend.BUILDERS:
        why = f"RAPID_SANDBOX_BACKEND={forced!r} is not one of {sorted(backend.BUILDERS)}"
        return backend.SandboxInfo(None, why, python)
    name = forced or "bwrap"
    if shutil.which(name) is None:
        reason = (
            f"{name} is not installed (Debian package {'bubblewrap' if name == 'bwrap' else 'util-linux'})"
        )
        return backend.SandboxInfo(None, reason + _no_fallback(forced), python)
    try:
        result = run_with_backend(name, "print('ok')", Limits(timeout_s=20))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        return backend.SandboxInfo(None, f"{name} failed to start: {err}{_no_fallback(forced)}", python)
    if result.status != "ok" or result.stdout.strip() != "ok":
        why = (result.stderr or result.detail).strip()[:300]
        return backend.SandboxInfo(None, f"{name} failed its self-test: {why}{_no_fallback(forced)}", python)
    if name == "unshare":
        return backend.SandboxInfo(
            name, f"forced by RAPID_SANDBOX_BACKEND; {backend.UNSHARE_WARNING}", python
        )
    return backend.SandboxInfo(
        name, "forced by RAPID_SANDBOX_BACKEND" if forced else "preferred backend", python
    )


def _no_fallback(forced: str | None) -> str:
    if forced:
        return ""
    return (
        "; not falling back to unshare, which has "
        + backend.UNSHARE_WARNING
        + " (RAPID_SANDBOX_BACKEND=unshare accepts that)"
    )
