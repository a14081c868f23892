"""No tenant reads another, and limits come before work, against a live uvicorn server.

The service keeps its data outside /tmp (as a Docker volume would): a python grader run through the
API sees none of it. Fifteen slow grader runs of one project leave another project's requests and
/healthz fast (SQLite and PostgreSQL), and hold no database connection while they run. A body without
a key is refused before it is read; an oversize one is cut while it streams in; a full disk is a 507
that leaves nothing half-written. A revoked key fails at once; /metrics names no tenant; a model path
gets the same error whether or not it exists.
"""

from __future__ import annotations

import json
import os
import select
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_harness import PG_ADMIN, Service, postgres_database, service_env

from api.guard import MULTIPART_FRAMING
from tests.conftest import REPO
from tests.isolation_probe import PROBE, data_dir

pytestmark = pytest.mark.integration
RUN = "/v1/fine_tuning/alpha/graders/run"
PER_PROJECT = 4
SLOW_S = 3.0
SLOW = {
    "type": "python",
    "source": f"import time\ndef grade(sample, item):\n    time.sleep({SLOW_S})\n    return 1.0\n",
    "timeout": 30,
}
QUICK = {"type": "python", "source": "def grade(sample, item):\n    return 1.0\n"}
LIMITS = {"max_file_bytes": 2 * 2**20, "max_request_bytes": 2**20, "grader_runs_per_project": PER_PROJECT}


def start(work: Path, launcher: tuple[str, ...] = (), **settings) -> Service:
    service = Service(service_env(work, **{**LIMITS, **settings}), work)
    service.start_api(wrap=launcher)
    return service


@pytest.fixture(scope="module")
def data():
    """The service's data directory, outside /tmp and world-readable, named with a marker."""
    with data_dir(Path("/var/lib")) as d:
        yield d


@pytest.fixture(scope="module")
def service(data, tmp_path_factory):
    service = start(
        tmp_path_factory.mktemp("security"),
        database_url=f"sqlite:///{data.root / 'service.db'}",
        artifacts_dir=data.root / "artifacts",
        runs_dir=data.root / "runs",
        broker_dir=data.root / "broker",
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def pg_service(tmp_path_factory):
    with postgres_database() as url:
        service = start(tmp_path_factory.mktemp("security-pg"), database_url=url)
        service.database = url.rsplit("/", 1)[1]
        yield service
        service.stop()


def upload(http: httpx.Client, text: str, name: str = "t.jsonl") -> httpx.Response:
    return http.post("/v1/files", files={"file": (name, text.encode())}, data={"purpose": "fine-tune"})


def record(content: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": content}], "answer": "1"}) + "\n"


# --- the sandbox, through the API ------------------------------------------------------------------


def test_a_grader_run_through_the_api_sees_no_service_data(service, data):
    owner, reader = service.http(service.create_key("owner")), service.http(service.create_key("reader"))
    uploaded = upload(owner, record(f"secret of the owner {data.marker}")).raise_for_status().json()
    stored = data.root / "artifacts" / "files" / f"{uploaded['id']}.jsonl"
    assert stored.is_file() and (data.root / "service.db").is_file()
    item = data.item(REPO)
    item["secrets"] += [str(stored), str(data.root / "service.db"), str(data.root / "artifacts")]
    result = (
        reader.post(
            RUN,
            json={
                "grader": {"type": "python", "source": PROBE, "timeout": 90},
                "model_sample": "x",
                "item": item,
            },
        )
        .raise_for_status()
        .json()
    )
    errors = result["metadata"]["errors"]
    assert result["reward"] == 0.5, errors["python_grader_runtime_error_details"] or result["metadata"]


# --- one project's slow grader runs, another project's requests ------------------------------------


def timed(fn: Callable[[], httpx.Response], log: list, stop: threading.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        try:
            status = fn().status_code
        except httpx.HTTPError as err:
            status = type(err).__name__
        log.append((time.perf_counter() - t, status))


def summary(log: list, seconds: float) -> dict:
    latencies = sorted(t for t, _ in log)
    return {
        "requests": len(log),
        "per_s": round(len(log) / seconds, 1),
        "errors": sum(s != 200 for _, s in log),
        "p50_ms": round(1000 * statistics.median(latencies)),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]),
    }


def other_tenant_traffic(
    service: Service, key: str, seconds: float, during: Callable[[], object] | None = None
):
    """Another project's file listing (4 clients), quick sandboxed grader runs (1) and /healthz (1)
    for ``seconds``, while ``during`` runs; the figures of each."""
    logs: dict[str, list] = {"files": [], "quick_grader": [], "healthz": []}
    stop = threading.Event()
    clients = [service.http(key) for _ in range(6)]
    calls = [("files", lambda c=c: c.get("/v1/files")) for c in clients[:4]]
    calls += [
        ("quick_grader", lambda: clients[4].post(RUN, json={"grader": QUICK, "model_sample": "x"})),
        ("healthz", lambda: clients[5].get("/healthz")),
    ]
    threads = [threading.Thread(target=timed, args=(fn, logs[name], stop)) for name, fn in calls]
    for t in threads:
        t.start()
    start = time.perf_counter()
    result = during() if during else None
    time.sleep(max(0.0, seconds - (time.perf_counter() - start)))
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {name: summary(log, elapsed) for name, log in logs.items()}, result


def fifteen_slow_runs(service: Service, key: str, watch: Callable[[], object]) -> tuple[list, list]:
    """Fifteen slow grader runs of one project at once; (responses, what ``watch`` saw meanwhile)."""
    responses: list = [None] * 15
    seen: list = []
    clients = [service.http(key) for _ in range(15)]

    def one(i: int) -> None:
        responses[i] = clients[i].post(RUN, json={"grader": SLOW, "model_sample": "x"})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(15)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        seen.append(watch())
        time.sleep(0.2)
    return responses, seen


def held_transactions(service: Service) -> Callable[[], int]:
    """Connections of the service's database idle in a transaction for over a second: a request
    holding its connection while something slow runs."""
    database = getattr(service, "database", None)
    if database is None:
        return lambda: 0

    def count() -> int:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'idle in transaction'"
                " AND now() - state_change > interval '1 second'",
                (database,),
            ).fetchone()[0]

    return count


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fifteen_slow_grader_runs_leave_another_project_fast(backend, request):
    service = request.getfixturevalue("service" if backend == "sqlite" else "pg_service")
    busy, other = service.create_key(f"busy-{backend}"), service.create_key(f"other-{backend}")
    baseline, _ = other_tenant_traffic(service, other, 4.0)
    loaded, (responses, held) = other_tenant_traffic(
        service, other, 4.0, lambda: fifteen_slow_runs(service, busy, held_transactions(service))
    )
    print(f"\n{backend}: other project alone {baseline}\n{backend}: beside 15 slow runs {loaded}")
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(accepted) == PER_PROJECT and all(r.json()["reward"] == 1.0 for r in accepted)
    assert len(refused) == 15 - PER_PROJECT
    assert all(
        r.headers["retry-after"].isdigit() and r.json()["error"]["code"] == "rate_limit_exceeded"
        for r in refused
    )
    assert max(held) == 0, "a grader run held a database transaction open"
    for name, figures in loaded.items():
        assert figures["errors"] == 0 and figures["requests"] > 0, (name, figures)
    assert loaded["healthz"]["p99_ms"] < 1000, loaded
    assert loaded["files"]["p99_ms"] < 3000, loaded
    # The other project's sandboxed runs are not queued behind the slow ones (fair pool).
    assert loaded["quick_grader"]["p99_ms"] < SLOW_S * 1000, loaded


# --- limits before work -----------------------------------------------------------------------------


def push(
    port: int, head: str, total: int, chunked: bool = False, prefix: bytes = b""
) -> tuple[int, dict, int]:
    """Send a request head, then body bytes in 1 MiB pieces until the server answers or ``total`` is
    sent: (status, error body, bytes of body sent before the answer came)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        head.encode() + b"\r\n" + (b"%x\r\n" % len(prefix) + prefix + b"\r\n" if chunked else prefix)
    )
    sent, piece = len(prefix), b"x" * 2**20
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece
    while sent < total and not select.select([sock], [], [], 0)[0]:
        try:
            sock.sendall(frame)
        except OSError:  # the server answered and closed: read the answer
            break
        sent += len(piece)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head_part, _, body = data.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), json.loads(body[: _length(data)] or b"{}").get("error", {}), sent


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def peak_rss_mib(pid: int) -> float:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["VmHWM"].split()[0]) / 1024


def request_head(path: str, key: str | None, length: int | None, content_type: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", f"Content-Type: {content_type}"]
    lines += [f"Authorization: Bearer {key}"] if key else []
    lines += [f"Content-Length: {length}"] if length is not None else ["Transfer-Encoding: chunked"]
    return "\r\n".join(lines) + "\r\n"


MULTIPART = "multipart/form-data; boundary=XyZ"
FILE_PART = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
JSON_START = b'{"model": "'


def test_a_huge_body_without_a_key_is_refused_unread(service, data):
    gib, jobs = 2**30, "/v1/fine_tuning/jobs"
    before = peak_rss_mib(service.api.pid)
    # Well-formed starts (a file part, a JSON object), so only the missing key can stop them early.
    upload_, json_ = (MULTIPART, FILE_PART), ("application/json", JSON_START)
    cases = [
        ("/v1/files", gib, upload_, False),
        (jobs, 954 * 10**6, json_, False),
        (jobs, gib, json_, True),
        ("/v1/files", gib, upload_, True),
    ]
    for path, size, (content_type, prefix), chunked in cases:
        start = time.perf_counter()
        head = request_head(path, None, None if chunked else size, content_type)
        status, error, sent = push(service.port, head, size, chunked, prefix)
        seconds = time.perf_counter() - start
        print(
            f"\nno key, {path} {'chunked' if chunked else 'declared'} {size / 2**20:.0f} MiB: {status} after "
            f"{sent / 2**20:.0f} MiB sent, {seconds:.2f}s"
        )
        assert (status, error["code"]) == (401, "missing_api_key") and sent < 32 * 2**20
    growth = peak_rss_mib(service.api.pid) - before
    print(f"API peak RSS {before:.0f} MiB before, +{growth:.0f} MiB after four 1 GB bodies without a key")
    assert growth < 64


def test_an_oversize_body_is_cut_while_it_streams_and_leaves_no_file(service, data):
    key = service.create_key("big")
    files_dir = data.root / "artifacts" / "files"
    before, rss = sorted(files_dir.iterdir()), peak_rss_mib(service.api.pid)
    declared = push(service.port, request_head("/v1/files", key, 2**30, MULTIPART), 2**30)
    assert (
        declared[:2] == (413, declared[1])
        and declared[1]["code"] == "file_too_large"
        and declared[2] < 32 * 2**20
    )
    for path, content_type, prefix, limit in (
        ("/v1/files", MULTIPART, FILE_PART, LIMITS["max_file_bytes"] + MULTIPART_FRAMING),
        ("/v1/fine_tuning/jobs", "application/json", JSON_START, LIMITS["max_request_bytes"]),
    ):
        status, error, sent = push(
            service.port, request_head(path, key, None, content_type), 2**30, True, prefix
        )
        print(
            f"\nkey, {path} chunked: {status} after {sent / 2**20:.0f} MiB sent (limit {limit / 2**20:.0f} MiB)"
        )
        assert (status, error["code"]) == (413, "request_too_large") and str(limit) in error["message"]
        assert sent < 32 * 2**20
    assert sorted(files_dir.iterdir()) == before  # no .part, no stray file
    assert peak_rss_mib(service.api.pid) - rss < 64
    ok = upload(service.http(key), record("small"))  # the service is fine afterwards
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("full", ["artifacts", "tmp"])
def test_a_full_disk_is_a_507_that_leaves_nothing_half_written(full, tmp_path):
    # The API runs in a mount namespace of its own with a 1 MiB tmpfs as its artifacts directory
    # or as its TMPDIR (where an upload is spooled); a 1.5 MiB upload does not fit.
    disk, work = tmp_path / "disk", tmp_path / "work"
    disk.mkdir()
    work.mkdir()
    user = () if os.geteuid() == 0 else ("--user", "--map-root-user")
    mount = 'mount -t tmpfs -o size=1m tmpfs "$0" && mkdir "$0/tmp" "$0/artifacts" && exec "$@"'
    settings = {**LIMITS, "max_file_bytes": 4 * 2**20}
    if full == "artifacts":
        settings["artifacts_dir"] = disk / "artifacts"
    service = Service(service_env(work, **settings), work)
    if full == "tmp":
        service.env["TMPDIR"] = str(disk / "tmp")
    service.start_api(wrap=("unshare", *user, "--mount", "sh", "-c", mount, str(disk)))
    try:
        http = service.http(service.create_key("disk"))
        big = record("y" * 1000) * 1500  # about 1.5 MiB
        response = upload(http, big)
        assert response.status_code == 507, response.text
        assert response.json()["error"]["code"] == "insufficient_storage"
        inside = Path(f"/proc/{service.api.pid}/root") / str(disk).lstrip("/")
        left = [p.relative_to(inside) for p in inside.rglob("*") if p.is_file()]
        assert left == [], left
        assert upload(http, record("small")).status_code == 200  # it fits, and the service goes on
    finally:
        service.stop()


# --- keys, metrics, model paths ----------------------------------------------------------------------


def keys_listed(service: Service, project: str) -> list[dict]:
    out = service.run("-m", "api.cli", "keys", "list", "--project", project, "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_a_revoked_key_is_refused_at_once(service):
    first, second = service.create_key("revoking"), service.create_key("revoking")
    listed = keys_listed(service, "revoking")
    assert [k["prefix"] for k in listed] == [first[:10], second[:10]] and all(
        not k["revoked_at"] for k in listed
    )
    assert first not in json.dumps(listed)  # the list shows prefixes, never the key
    assert service.http(first).get("/v1/files").status_code == 200
    service.run("-m", "api.cli", "keys", "revoke", listed[0]["id"])
    refused = service.http(first).get("/v1/files")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert service.http(second).get("/v1/files").status_code == 200  # the project's other key still works
    assert keys_listed(service, "revoking")[0]["revoked_at"] is not None


def test_metrics_name_no_tenant(service):
    key = service.create_key("metrics-tenant-secret-name")
    http = service.http(key)
    file_id = upload(http, record("m")).raise_for_status().json()["id"]
    http.get(f"/v1/files/{file_id}")
    http.get("/v1/fine_tuning/jobs/ftjob-does-not-exist")
    text = httpx.get(f"{service.base_url}/metrics").raise_for_status().text
    for secret in ("metrics-tenant-secret-name", key[:10], file_id, "ftjob-does-not-exist", "proj-"):
        assert secret not in text
    labels = {
        name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for name in sample.labels
    }
    assert labels <= {
        "method",
        "route",
        "status",
        "le",
        "generation",
        "implementation",
        "major",
        "minor",
        "patchlevel",
        "version",
    }
    assert 'route="/v1/files/{file_id}"' in text  # requests are counted by route template


def test_a_model_path_gets_the_same_error_whether_or_not_it_exists(service, data):
    (data.root / "weights.gguf").write_text("not a model, but it exists")
    http = service.http(service.create_key("paths"))
    file_id = upload(http, record("p")).raise_for_status().json()["id"]
    method = {
        "type": "reinforcement",
        "reinforcement": {"grader": {"type": "numeric", "reference": "{{item.answer}}"}},
    }
    errors = []
    exist_or_not = (
        "/etc",
        "/etc-nowhere",
        str(data.root / "weights.gguf"),
        "/root/secret.gguf",
        str(REPO),
        str(REPO) + "-x",
    )
    for model in exist_or_not:
        response = http.post(
            "/v1/fine_tuning/jobs", json={"model": model, "training_file": file_id, "method": method}
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        errors.append((error["message"].replace(repr(model), "MODEL"), error["param"], error["code"]))
    assert len(set(errors)) == 1 and errors[0][1:] == ("model", "model_not_found"), errors
