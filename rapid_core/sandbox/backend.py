"""How a sandboxed process is started: the command line that puts the walls around it.

Preferred backend, ``bwrap`` (bubblewrap) started as root:
- new network, PID, IPC and UTS namespaces: no network at all; killing the PID namespace's first
  process kills every process the program forked;
- a fixed PYTHONHASHSEED, so a reference run and a candidate run order sets alike;
- the host file system read-only, private tmpfs on /tmp (size-capped, the only writable place),
  /var/tmp, /dev/shm and the caller's home hidden; an empty environment;
- then ``setpriv`` drops to a fresh random unprivileged uid. That is what makes RLIMIT_NPROC bite:
  the kernel never applies it to root, and a uid of its own per run keeps parallel runs from
  sharing one process budget; the uid also cannot signal or read any of the caller's processes;
- ``prlimit`` sets CPU, address space, file size, process count and open-file limits.

Fallback ``unshare`` (util-linux): the same namespaces and limits but no read-only root, so the
program may write to world-writable host directories such as /tmp. It is used only when bwrap is
missing or cannot start, and ``sandbox_info().reason`` records why. When neither works every run is
a ``sandbox_failure``: untrusted code never runs unconfined.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from rapid_core.settings import core_settings

SANDBOX_TMP = "/tmp"  # where the program sees its writable directory
PROGRAM_DIR = "/tmp/prog"  # where the program's files are mounted, read-only


@dataclass(frozen=True)
class SandboxInfo:
    backend: str | None  # "bwrap", "unshare" or None (nothing can run)
    reason: str  # why this backend was chosen, or why none works
    python: str


def python_executable() -> str:
    """The interpreter sandboxed programs run on (RAPID_SANDBOX_PYTHON overrides the caller's)."""
    return core_settings().sandbox_python or sys.executable


def _hidden_dirs() -> list[str]:
    """Home directories to hide behind an empty tmpfs (they may hold the caller's secrets)."""
    dirs = {"/root", str(Path.home())}
    return sorted(d for d in dirs if d not in ("/", "") and Path(d).is_dir())


def _covered_dirs() -> list[str]:
    """Directories the sandbox replaces with empty tmpfs: hidden homes and the scratch places."""
    return sorted({*_hidden_dirs(), SANDBOX_TMP, "/var/tmp", "/run"})


def _interpreter_paths(python: str) -> list[str]:
    """Interpreter (and RAPID_SANDBOX_BIND) directories that a tmpfs would cover (a venv under a
    hidden home, or under /tmp as in a CI checkout): mounted back read-only."""
    paths = {sys.prefix, sys.base_prefix, str(Path(os.path.realpath(python)).parent.parent)}
    paths.add(str(Path(python).parent.parent))
    # Tools a grader runs besides Python (a Lean toolchain in ~/.elan, say) are named here.
    paths.update(p for p in core_settings().sandbox_bind.split(":") if p)
    covered = _covered_dirs()
    return sorted(p for p in paths if any(p == h or p.startswith(h + "/") for h in covered))


def limit_args(limits, uid_budget: int) -> list[str]:
    return [
        "prlimit",
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",  # SIGXCPU first, SIGKILL a second later
        f"--as={limits.memory_mb * 2**20}",
        f"--fsize={limits.file_size_mb * 2**20}",
        f"--nproc={uid_budget}",
        f"--nofile={limits.open_files}",
        "--core=0",
        "--",
    ]


def drop_privileges(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip


def bwrap_command(argv: list[str], program_dir: str, limits, uid: int | None) -> list[str]:
    cmd = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--die-with-parent", "--new-session",
           "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
           "--perms", "1777", "--size", str(limits.tmp_mb * 2**20), "--tmpfs", SANDBOX_TMP]  # fmt: skip
    for extra in ("/var/tmp", "/run", *_hidden_dirs()):
        if Path(extra).is_dir() and extra != SANDBOX_TMP:
            cmd += ["--tmpfs", extra]
    for path in _interpreter_paths(argv[0]):
        # bwrap would create the directories leading to the mount point as 0700 root: open them.
        for parent in reversed(Path(path).parents):
            if str(parent) not in ("/", *_covered_dirs()) and any(
                str(parent).startswith(h + "/") for h in _covered_dirs()
            ):
                cmd += ["--perms", "0755", "--dir", str(parent)]
        cmd += ["--ro-bind", path, path]
    cmd += ["--ro-bind", program_dir, PROGRAM_DIR, "--chdir", SANDBOX_TMP, "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", SANDBOX_TMP,
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0"]  # fmt: skip
    if uid is None:  # not root: an unprivileged user namespace instead of a uid of our own
        return cmd + ["--unshare-user", "--"] + limit_args(limits, _own_budget(limits)) + argv
    cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
    return cmd + drop_privileges(uid) + limit_args(limits, limits.processes) + argv


def unshare_command(argv: list[str], program_dir: str, limits, uid: int | None) -> list[str]:
    if uid is None:
        raise RuntimeError("the unshare backend needs root (to drop to a fresh uid)")
    cmd = ["unshare", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc",
           "--", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={program_dir}", "LANG=C.UTF-8", "PYTHONHASHSEED=0"]  # fmt: skip
    return cmd + drop_privileges(uid) + limit_args(limits, limits.processes) + argv


def _own_budget(limits) -> int:
    # Without root the process limit counts every process of the caller's uid, so allow for those.
    count = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and _owned(p))
    return count + limits.processes


def _owned(p: Path) -> bool:
    try:
        return p.stat().st_uid == os.getuid()
    except OSError:
        return False


BUILDERS = {"bwrap": bwrap_command, "unshare": unshare_command}
