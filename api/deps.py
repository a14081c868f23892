"""Request dependencies: the process's settings and store handles, a session, the caller's project."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from celery import Celery
from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.errors import Unauthorized
from store.artifacts import Artifacts
from store.repos import Keys
from store.settings import Settings


@dataclass
class Runtime:
    """What one API process holds: built once in ``create_app``."""

    settings: Settings
    sessions: sessionmaker[Session]
    artifacts: Artifacts
    celery: Celery


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def session(rt: Runtime = Depends(runtime)) -> Iterator[Session]:
    with rt.sessions() as s:
        yield s


# Declares the bearer key in the OpenAPI schema; the key itself is read below, with OpenAI's errors.
_BEARER = HTTPBearer(auto_error=False, description="An API key from `rapid keys create`")


def project_id(request: Request, s: Session = Depends(session), _bearer: object = Security(_BEARER)) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("Missing bearer API key in the Authorization header", code="missing_api_key")
    project = Keys(s).project_of(secret.strip())
    if project is None:
        raise Unauthorized("Incorrect API key provided", code="invalid_api_key")
    return project
