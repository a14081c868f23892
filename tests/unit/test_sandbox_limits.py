"""The sandbox's walls, each checked by a program that tries to get past them."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rapid_core.sandbox import Limits, SandboxJob, SandboxPool, owned_by, run, run_python, sandbox_info


@pytest.fixture(scope="module", autouse=True)
def sandbox_available():
    info = sandbox_info()
    assert info.backend is not None, f"no sandbox backend works here: {info.reason}"


def uid_processes(uid: int) -> list[str]:
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and p.stat().st_uid == uid:
                pids.append(p.name)
        except OSError:
            pass
    return pids


def test_a_plain_program_runs_and_its_output_is_captured():
    r = run_python("import sys; print('hello'); print('oops', file=sys.stderr)")
    assert (r.status, r.stdout, r.stderr) == ("ok", "hello\n", "oops\n")


def test_endless_loop_is_stopped_at_the_wall_clock_limit():
    start = time.perf_counter()
    r = run_python("while True: pass", limits=Limits(timeout_s=1.5))
    assert r.status == "timeout" and time.perf_counter() - start < 10


def test_cpu_limit_stops_a_busy_program_even_with_a_long_wall_clock():
    r = run_python("while True: pass", limits=Limits(timeout_s=30, cpu_s=1))
    assert r.status == "timeout" and "CPU" in r.detail


def test_fork_bomb_is_held_to_the_process_limit_and_leaves_nothing_behind():
    probe = (
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
        "            time.sleep(60); os._exit(0)\n        n += 1\nexcept OSError:\n    print(n)\n"
    )
    r = run_python(probe, limits=Limits(timeout_s=10, processes=16))
    assert r.status == "ok" and int(r.stdout) < 16  # forks refused once the uid holds 16 processes
    bomb = run_python(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        limits=Limits(timeout_s=2),
    )
    assert bomb.status == "timeout"
    time.sleep(0.5)  # the PID namespace is torn down asynchronously
    assert uid_processes(bomb.uid) == [] and uid_processes(r.uid) == []
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).stdout == b"1\n"


def test_memory_bomb_fails_inside_the_sandbox():
    r = run_python(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))\n", limits=Limits(memory_mb=512)
    )
    assert r.status == "error" and "MemoryError" in r.detail


def test_a_gigabyte_of_output_is_cut_at_the_file_size_limit():
    r = run_python("import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * 2**20)\n")
    assert r.status == "error" and len(r.stdout) < Limits().output_bytes + 100
    assert "File too large" in r.stderr or "limit" in r.detail


def test_host_paths_are_read_only_even_where_permissions_allow(tmp_path):
    # An open directory under the caller's /tmp (behind the private tmpfs), one outside every place
    # the sandbox shows (/var/lib), and one it is told to show: that one is mounted read-only.
    outside, shown = Path(tempfile.mkdtemp(dir="/var/lib")), Path(tempfile.mkdtemp(dir="/var/lib"))
    try:
        for where in (tmp_path, outside, shown):
            where.chmod(0o777)
        for where, error in ((tmp_path, "No such file"), (outside, "No such file"), (shown, "Read-only")):
            target = where / "escaped.txt"
            code = f"open({str(target)!r}, 'w').write('x')"
            r = run(SandboxJob(code, binds=(str(shown),)))
            assert r.status == "error" and error in r.detail and not target.exists()
    finally:
        shutil.rmtree(outside)
        shutil.rmtree(shown)
    assert (
        run_python("open('scratch.txt', 'w').write('ok'); print(open('scratch.txt').read())").stdout == "ok\n"
    )


def test_the_callers_environment_is_invisible(monkeypatch):
    monkeypatch.setenv("RAPID_TEST_SECRET", "s3cret-7f1c")
    code = (
        "import os, glob\nprint(dict(os.environ))\nfor p in glob.glob('/proc/*/environ'):\n"
        "    try:\n        print(open(p, 'rb').read())\n    except OSError:\n        pass\n"
    )
    r = run_python(code)
    assert r.status == "ok" and "s3cret-7f1c" not in r.stdout and "RAPID_TEST_SECRET" not in r.stdout


def test_there_is_no_network_not_even_the_callers_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = (
        f"import socket\nfor addr in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:\n    try:\n"
        "        socket.create_connection(addr, timeout=2); print('connected')\n"
        "    except OSError as e:\n        print('refused', e)\n"
    )
    r = run_python(code)
    server.close()
    assert r.status == "ok" and "connected" not in r.stdout


def test_killing_its_parent_or_everyone_reaches_no_process_outside():
    victim = subprocess.Popen(["sleep", "30"])
    code = "import os, signal\nfor target in (os.getppid(), -1, 0):\n    try:\n        os.kill(target, signal.SIGKILL)\n    except OSError:\n        pass\n"
    r = run_python(code)
    assert r.status in ("ok", "error")  # kill(0) may take the program itself down
    assert victim.poll() is None
    victim.kill()


def test_syntax_error_is_an_error_with_the_message():
    r = run_python("def (:")
    assert r.status == "error" and "SyntaxError" in r.detail


def test_the_temporary_directory_is_removed_afterwards(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run_python("open('f', 'w').write('x')").status == "ok"
    assert list(tmp_path.iterdir()) == []


def test_pool_runs_programs_in_parallel():
    pool = SandboxPool(max_workers=4)
    start = time.perf_counter()
    results = pool.run_all([SandboxJob("import time; time.sleep(1); print('done')") for _ in range(4)])
    pool.close()
    assert [r.stdout for r in results] == ["done\n"] * 4
    assert time.perf_counter() - start < 3.5  # four one-second sleeps overlapped


def test_pool_takes_owners_in_turn_so_a_long_queue_does_not_hold_back_another_owner():
    pool = SandboxPool(max_workers=2, per_owner=1)
    start = time.perf_counter()
    with owned_by("busy"):
        busy = [pool.submit(SandboxJob("import time; time.sleep(1)")) for _ in range(6)]
    with owned_by("other"):
        other = pool.submit(SandboxJob("print('mine')"))
    assert other.result().stdout == "mine\n"
    waited = time.perf_counter() - start
    assert not busy[2].done()  # "busy" holds one worker at a time: its queue has hardly started
    assert waited < 3.0, waited
    assert all(f.result().status == "ok" for f in busy)
    assert time.perf_counter() - start > 5.5  # six one-second runs, one at a time
    pool.close()


def test_stdin_reaches_the_program_and_runs_use_distinct_uids():
    a, b = run_python("print(input()[::-1])", stdin="abc\n"), run_python("import os; print(os.getuid())")
    assert a.stdout == "cba\n"
    if os.geteuid() == 0:
        assert int(b.stdout) == b.uid and b.uid != a.uid and b.uid >= 2**20
