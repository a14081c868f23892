"""Operations: liveness, readiness (database and broker reachable), Prometheus metrics."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from api.deps import Runtime, runtime
from api.errors import RETRY_AFTER_S, Unauthorized
from api.services import ops
from store.models import JOB_STATUSES

router = APIRouter(tags=["operations"])
JOBS = Gauge("rapid_jobs", "Fine-tuning jobs by status", ["status"])


@router.get("/healthz")
async def healthz() -> dict:
    """On the event loop itself: it answers even when every worker thread is busy."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database or the broker is unreachable"}})
def readyz(rt: Runtime = Depends(runtime)) -> JSONResponse:
    checks = ops.readiness(rt)
    if all(checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {"status": "unavailable", "checks": checks}, 503, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, rt: Runtime = Depends(runtime)) -> Response:
    """Service-wide figures only: request counts and latency by route template, job counts by status
    summed over every project. No label names a project, key, file or job. With ``metrics_token``
    set, only a scraper that presents it may read them."""
    token = rt.settings.metrics_token
    given = request.headers.get("authorization", "").encode()
    if token and not hmac.compare_digest(given, f"Bearer {token}".encode()):
        raise Unauthorized(
            "/metrics needs 'Authorization: Bearer <metrics token>'", code="invalid_metrics_token"
        )
    counts = ops.job_counts(rt)
    for status in JOB_STATUSES:
        JOBS.labels(status).set(counts.get(status, 0))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
