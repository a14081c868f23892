"""Load on the live API: N concurrent clients for S seconds, on SQLite or on PostgreSQL.

Starts its own API with ``rapid serve --no-worker`` (created jobs stay queued) on a fresh database,
makes a key and a training file, then runs clients that each loop over a request mix close to a
dashboard plus a submitting client: 80% reads (list jobs, retrieve a job, list its events), 15% job creations (each
validated against the stored file and published through the outbox) and 5% cancels. Reports
requests/s, latency percentiles and errors (any status other than 200, or 400 for a cancel of a
job already cancelled).

    .venv/bin/python bench/api_load.py --database sqlite --clients 50 --seconds 60
    .venv/bin/python bench/api_load.py --database postgres --clients 50 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.service_harness import (  # noqa: E402  (the real-service launcher the tests use)
    GRADER,
    Service,
    arithmetic_jsonl,
    postgres_database,
    service_env,
    tiny_hyperparameters,
)

JOB = {
    "model": "tiny-random",
    "method": {
        "type": "reinforcement",
        "reinforcement": {"grader": GRADER, "hyperparameters": tiny_hyperparameters()},
    },
}


async def client(
    http: httpx.AsyncClient,
    file_id: str,
    jobs: list[str],
    until: float,
    rng: random.Random,
    out: list[tuple[str, float, int | str]],
) -> None:
    while time.monotonic() < until:
        roll = rng.random()
        if roll < 0.15:
            kind, request = (
                "create",
                http.post("/v1/fine_tuning/jobs", json={**JOB, "training_file": file_id}),
            )
        elif roll < 0.20 and jobs:
            kind, request = "cancel", http.post(f"/v1/fine_tuning/jobs/{rng.choice(jobs)}/cancel")
        elif roll < 0.45:
            kind, request = "list", http.get("/v1/fine_tuning/jobs", params={"limit": 20})
        elif roll < 0.70 and jobs:
            kind, request = "retrieve", http.get(f"/v1/fine_tuning/jobs/{rng.choice(jobs)}")
        else:
            kind, request = (
                "events",
                http.get(f"/v1/fine_tuning/jobs/{rng.choice(jobs)}/events" if jobs else "/v1/files"),
            )
        start = time.perf_counter()
        try:
            response = await request
            status = response.status_code
            if kind == "create" and status == 200:
                jobs.append(response.json()["id"])
            if kind == "cancel" and status == 400:
                status = 200  # already cancelled by another client: the right answer
        except httpx.HTTPError as err:
            status = type(err).__name__  # no HTTP answer at all
        out.append((kind, time.perf_counter() - start, status))


async def load(
    base_url: str, key: str, file_id: str, clients: int, seconds: float
) -> list[tuple[str, float, int]]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
        first = await http.post("/v1/fine_tuning/jobs", json={**JOB, "training_file": file_id})
        first.raise_for_status()
        jobs, out = [first.json()["id"]], []
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(client(http, file_id, jobs, until, random.Random(i), out) for i in range(clients))
        )
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(out: list[tuple[str, float, int]], seconds: float) -> dict:
    latencies = [t for _, t, _ in out]
    errors = [(k, s) for k, _, s in out if s != 200]
    return {
        "requests": len(out),
        "req_per_s": round(len(out) / seconds, 1),
        "p50_ms": round(1000 * percentile(latencies, 0.50), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "max_ms": round(1000 * max(latencies), 1),
        "errors": len(errors),
        "error_kinds": sorted({f"{k}:{s}" for k, s in errors}),
        "by_kind": {
            k: sum(1 for kk, _, _ in out if kk == k)
            for k in ("list", "retrieve", "events", "create", "cancel")
        },
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--out", help="append the result as one JSON line to this file")
    args = parser.parse_args()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rapid-load-")))
        settings = {
            "artifacts_dir": work / "artifacts",
            "runs_dir": work / "runs",
            "broker_dir": work / "broker",
        }
        if args.database == "postgres":
            settings["database_url"] = stack.enter_context(postgres_database())
        else:
            settings["database_url"] = f"sqlite:///{work / 'rapid.db'}"
        service = Service(service_env(work, **settings), work)
        stack.callback(service.stop)
        service.start_api(
            "-m", "api.cli", "serve", "--no-worker", "--port", "{port}", "--log-level", "warning"
        )
        key = service.create_key("load")
        with service.http(key) as http, arithmetic_jsonl(work / "train.jsonl").open("rb") as f:
            file_id = http.post(
                "/v1/files", files={"file": ("t.jsonl", f)}, data={"purpose": "fine-tune"}
            ).json()["id"]
        print(
            f"{args.clients} clients for {args.seconds:.0f} s against the API on {args.database} ...",
            file=sys.stderr,
        )
        out = asyncio.run(load(service.base_url, key, file_id, args.clients, args.seconds))
        result = {
            "database": args.database,
            "clients": args.clients,
            "seconds": args.seconds,
            **summarise(out, args.seconds),
        }
        if result["errors"]:
            print(service.logs(), file=sys.stderr)
    print(json.dumps(result))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
