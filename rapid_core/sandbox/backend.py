"""How a sandboxed process is started: the command line that puts the walls around it.

Backend ``bwrap`` (bubblewrap) started as root:
- new network, PID, IPC and UTS namespaces: no network at all; killing the PID namespace's first
  process kills every process the program forked;
- a fixed PYTHONHASHSEED, so a reference run and a candidate run order sets alike;
- an ALLOW-LIST of the host file system, read-only, on an empty read-only root (``visible_paths``):
  /usr (and the /bin, /sbin, /lib* links or directories), a few /etc files the dynamic loader and
  Python read, the interpreter's own ``bin``/``lib`` directories (a venv's and its base install's,
  never the project checkout around a venv), RAPID_SANDBOX_BIND extras (a Lean toolchain) and the
  paths a grader names for one run (a Lean project). Nothing else of the host exists in there: not
  the service's data directory, database, uploads or other jobs' run directories, wherever they
  live. Plus the program's own files, a private size-capped tmpfs on /tmp (the only writable
  place), a minimal /dev, a /proc of its own PID namespace, and an empty environment;
- then ``setpriv`` drops to a fresh random unprivileged uid. That is what makes RLIMIT_NPROC bite:
  the kernel never applies it to root, and a uid of its own per run keeps parallel runs from
  sharing one process budget; the uid also cannot signal or read any of the caller's processes;
- ``prlimit`` sets CPU, address space, file size, process count and open-file limits.

Backend ``unshare`` (util-linux) has the same namespaces and limits but NO file-system isolation:
the program sees the whole host, restricted only by its fresh uid's permissions, so any
world-readable file (a data directory created with the default umask, say) is readable. It is
therefore never chosen on its own: only ``RAPID_SANDBOX_BACKEND=unshare`` selects it, for a
machine that holds no data another tenant must not read, and ``sandbox_info().reason`` says so.
When bwrap is missing or cannot start, and unshare is not forced, every run is a
``sandbox_failure``: untrusted code never runs unconfined or half-confined by accident.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rapid_core.settings import core_settings

SANDBOX_TMP = "/tmp"  # where the program sees its writable directory
PROGRAM_DIR = "/tmp/prog"  # where the program's files are mounted, read-only
# The system's programs and libraries; on a merged-/usr system all but /usr are symlinks into it.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What the dynamic loader, Python and the graders' tools read from /etc, and nothing else of it.
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/python3*",
)
UNSHARE_WARNING = (
    "no file-system isolation: the program can read every host file its fresh uid may read "
    "(world-readable ones, the service's data directory among them unless it is private)"
)


@dataclass(frozen=True)
class SandboxInfo:
    backend: str | None  # "bwrap", "unshare" or None (nothing can run)
    reason: str  # why this backend was chosen, or why none works
    python: str


def python_executable() -> str:
    """The interpreter sandboxed programs run on (RAPID_SANDBOX_PYTHON overrides the caller's)."""
    return core_settings().sandbox_python or sys.executable


def extra_binds() -> list[str]:
    """RAPID_SANDBOX_BIND: ':'-separated host paths every run may read (a Lean toolchain, say)."""
    return [p for p in core_settings().sandbox_bind.split(":") if p]


@functools.cache
def interpreter_paths(python: str) -> tuple[str, ...]:
    """What ``python`` needs to start and import its packages: for each of its prefixes (a venv's
    and the base install's) the ``bin`` and ``lib*`` directories and a venv's ``pyvenv.cfg``.
    Never a whole prefix: a venv may sit inside a project checkout that holds a data directory."""
    probe = "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]))"
    prefixes = json.loads(
        subprocess.run(
            [python, "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    paths = {str(Path(python).parent), str(Path(os.path.realpath(python)).parent)}
    for prefix in prefixes:
        for name in ("bin", "lib", "lib32", "lib64", "pyvenv.cfg"):
            paths.add(os.path.join(prefix, name))
    return tuple(sorted(p for p in paths if os.path.lexists(p)))


def visible_paths(python: str, binds: Sequence[str] = ()) -> list[str]:
    """Every host path a sandboxed program can read (all read-only), besides its own files."""
    etc = sorted(p for pattern in ETC_FILES for p in glob.glob(pattern))
    wanted = [*SYSTEM_DIRS, *etc, *interpreter_paths(python), *extra_binds(), *binds]
    paths = {os.path.normpath(p) for p in wanted if os.path.lexists(p)}
    # A symlink is shown as a symlink: its target must be shown too, unless it already is.
    shown = {os.path.realpath(p) for p in paths if not os.path.islink(p)}
    paths |= {t for p in paths if os.path.islink(p) and not _shown(t := os.path.realpath(p), shown)}
    # A path inside another one is already visible through it.
    return sorted(p for p in paths if not any(_inside(p, q) for q in paths if q != p))


def _shown(path: str, shown: set[str]) -> bool:
    return any(path == q or _inside(path, q) for q in shown)


def _inside(path: str, parent: str) -> bool:
    return parent == "/" or path.startswith(parent.rstrip("/") + "/")


def _mount_args(paths: Sequence[str]) -> list[str]:
    """bwrap arguments that show ``paths`` read-only at the same place, on an otherwise empty root.

    A symlink (/bin -> usr/bin, a venv's lib64 -> lib) is recreated as a symlink; its target must
    be visible itself.
    The directories leading to a mount point are created 0755, so the unprivileged uid can reach it.
    """
    args: list[str] = []
    made: set[str] = {"/", SANDBOX_TMP}
    for path in paths:
        for parent in reversed(Path(path).parents):
            p = str(parent)
            if p not in made and not any(_inside(p, q) or p == q for q in paths):
                args += ["--perms", "0755", "--dir", p]
                made.add(p)
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
    return args


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
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def bwrap_command(
    argv: list[str], program_dir: str, limits, uid: int | None, binds: Sequence[str] = ()
) -> list[str]:
    cmd = [
        "bwrap",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        # The tmpfs first: a venv of a checkout under /tmp is then mounted on top of it.
        "--perms",
        "1777",
        "--size",
        str(limits.tmp_mb * 2**20),
        "--tmpfs",
        SANDBOX_TMP,
        *_mount_args(visible_paths(argv[0], binds)),
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--ro-bind",
        program_dir,
        PROGRAM_DIR,
        "--remount-ro",
        "/",
        "--chdir",
        SANDBOX_TMP,
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--setenv",
        "HOME",
        SANDBOX_TMP,
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "PYTHONHASHSEED",
        "0",
    ]
    if uid is None:  # not root: an unprivileged user namespace instead of a uid of our own
        return cmd + ["--unshare-user", "--"] + limit_args(limits, _own_budget(limits)) + argv
    cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
    return cmd + drop_privileges(uid) + limit_args(limits, limits.processes) + argv


def unshare_command(
    argv: list[str], program_dir: str, limits, uid: int | None, binds: Sequence[str] = ()
) -> list[str]:
    if uid is None:
        raise RuntimeError("the unshare backend needs root (to drop to a fresh uid)")
    cmd = [
        "unshare",
        "--net",
        "--pid",
        "--ipc",
        "--uts",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
        "env",
        "-i",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        f"HOME={program_dir}",
        "LANG=C.UTF-8",
        "PYTHONHASHSEED=0",
    ]
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
