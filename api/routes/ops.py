"""Operations: liveness, readiness (database and broker reachable), Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from api.deps import Runtime, runtime
from api.errors import RETRY_AFTER_S
from api.services import ops
from store.models import JOB_STATUSES

router = APIRouter(tags=["operations"])
JOBS = Gauge("rapid_jobs", "Fine-tuning jobs by status", ["status"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(rt: Runtime = Depends(runtime)) -> JSONResponse:
    checks = ops.readiness(rt)
    if all(checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse({"status": "unavailable", "checks": checks}, 503, headers={"Retry-After": str(RETRY_AFTER_S)})


@router.get("/metrics")
def metrics(rt: Runtime = Depends(runtime)) -> Response:
    counts = ops.job_counts(rt)
    for status in JOB_STATUSES:
        JOBS.labels(status).set(counts.get(status, 0))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

