"""Dashboard sign-in with the project's API key.

The login form posts the key once; the server checks it and keeps it in an HttpOnly, SameSite=Strict
cookie scoped to /dashboard, so the browser sends it with each dashboard request and no script or
URL ever holds it. Every dashboard read goes through the same key -> project lookup as the API's
Bearer header, so a page can only show the caller's project. POSTs must come from the same origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.deps import session
from store.repos import Keys

COOKIE = "rapid_dashboard_key"
PATH = "/dashboard"


class LoginRequired(Exception):
    """No valid key cookie: the page answers with a redirect to the login form."""


class CrossOrigin(Exception):
    """A POST whose Origin is another site."""


def project_of_key(s: Session, key: str) -> str | None:
    key = key.strip()
    return Keys(s).project_of(key) if key else None


def dashboard_project(request: Request, s: Session = Depends(session)) -> str:
    project = project_of_key(s, request.cookies.get(COOKIE, ""))
    if project is None:
        raise LoginRequired()
    return project


def same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise CrossOrigin()


def safe_next(path: str | None) -> str:
    """Where to go after login: a dashboard path only (no open redirect to another site)."""
    if path and path.startswith(PATH + "/") and not path.startswith("//") and "\\" not in path:
        return path
    return f"{PATH}/jobs"


def set_key_cookie(response, request: Request, key: str) -> None:
    response.set_cookie(
        COOKIE, key.strip(), path=PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def clear_key_cookie(response) -> None:
    response.delete_cookie(COOKIE, path=PATH)
