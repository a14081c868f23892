"""The FastAPI application factory: one Runtime per process, routers, the request guard, error
mapping, metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from prometheus_client import Counter, Histogram

from api import dashboard
from api.deps import Runtime
from api.errors import install_error_handlers
from api.guard import RequestGuard
from api.routes import files, graders, jobs, ops, preflights
from api.services.grader_gate import GraderGate
from store.artifacts import LocalArtifacts
from store.broker import make_celery
from store.db import make_engine, make_sessionmaker
from store.settings import Settings, get_settings

REQUESTS = Counter("rapid_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("rapid_http_request_seconds", "HTTP request latency", ["method", "route"])


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()
    app = FastAPI(title="rapid fine-tuning service", version="0.1.0")
    app.state.runtime = rt = Runtime(
        settings=settings,
        sessions=make_sessionmaker(make_engine(settings)),
        artifacts=LocalArtifacts(settings.artifacts_dir),
        celery=make_celery(settings),
        graders=GraderGate(settings.grader_runs_per_project, settings.grader_runs_total),
    )
    install_error_handlers(app)
    for router in (files.router, jobs.router, preflights.router, graders.router, ops.router):
        app.include_router(router)
    # Key and size checks before any body is read; inside ``_observe``, which counts their answers.
    app.add_middleware(RequestGuard, runtime=rt, handlers=app.exception_handlers)
    dashboard.mount(app)

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        REQUESTS.labels(request.method, route, response.status_code).inc()
        LATENCY.labels(request.method, route).observe(time.perf_counter() - start)
        return response

    return app
