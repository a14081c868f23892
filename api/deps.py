"""Request dependencies: the process's settings and store handles, a session, the caller's project."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from celery import Celery
from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.errors import Unauthorized
from api.services.grader_gate import GraderGate
from store.artifacts import Artifacts
from store.settings import Settings


@dataclass
class Runtime:
    """What one API process holds: built once in ``create_app``."""

    settings: Settings
    sessions: sessionmaker[Session]
    artifacts: Artifacts
    celery: Celery
    graders: GraderGate


async def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def session(rt: Runtime = Depends(runtime)) -> Iterator[Session]:
    with rt.sessions() as s:
        yield s


# Declares the bearer key in the OpenAPI schema; RequestGuard reads and checks it, with OpenAI's errors.
_BEARER = HTTPBearer(auto_error=False, description="An API key from `rapid keys create`")


async def project_id(request: Request, _bearer: object = Security(_BEARER)) -> str:
    """The caller's project: ``RequestGuard`` checked the API key before the body was read."""
    project = getattr(request.state, "project_id", None)
    if project is None:
        raise Unauthorized("Missing bearer API key in the Authorization header", code="missing_api_key")
    return project
