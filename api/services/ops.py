"""Operations: what readiness and the Prometheus gauges report."""

from __future__ import annotations

from api.deps import Runtime
from store.broker import broker_reachable
from store.db import ping
from store.repos import Jobs


def readiness(rt: Runtime) -> dict[str, bool]:
    return {
        "database": ping(rt.sessions),
        "broker": broker_reachable(rt.celery, timeout=rt.settings.broker_timeout),
    }


def job_counts(rt: Runtime) -> dict[str, int]:
    with rt.sessions() as s:
        return Jobs(s).count_by_status()
