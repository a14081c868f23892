"""What every request passes before any of its body is read: the API key, then the size limit.

Pure ASGI, so nothing upstream has read the body: a ``/v1`` request without a valid key gets its
401 without a byte of its body being read, and one whose declared Content-Length is over the limit
gets a 413 the same way. A body without a declared length (chunked) is counted as it streams in and
cut with a 413 as soon as it passes the limit (Starlette's ``RequestBodyLimitMiddleware``). The
limit is ``max_request_bytes``, or ``max_file_bytes`` plus the multipart framing for an upload.

The key lookup uses a session of its own, closed before the route runs, so no request holds a
database connection for authentication while it works. The project goes into ``request.state``.
Errors raised here are answered by the app's own exception handlers, in the one shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import Runtime
from api.errors import TooLarge, Unauthorized
from store.repos import Keys

UPLOADS = {("POST", "/v1/files")}
MULTIPART_FRAMING = 64 * 1024  # part headers and boundaries around an upload's bytes


class RequestGuard:
    def __init__(
        self, app: ASGIApp, runtime: Runtime, handlers: dict[Any, Callable[..., Awaitable[Response]]]
    ):
        self.app, self.runtime, self.handlers = app, runtime, handlers
        settings = runtime.settings
        self.request_limit = settings.max_request_bytes
        self.upload_limit = settings.max_file_bytes + MULTIPART_FRAMING
        self.limited = {
            n: RequestBodyLimitMiddleware(app, n) for n in (self.request_limit, self.upload_limit)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)  # without ``receive``: nothing here can read the body
        upload = (scope["method"], scope["path"].rstrip("/")) in UPLOADS
        limit = self.upload_limit if upload else self.request_limit
        try:
            if scope["path"].startswith("/v1/"):
                scope.setdefault("state", {})["project_id"] = await self._project(request)
            _check_declared_length(request, limit, upload)
        except Exception as err:
            response = await self._answer(request, err)
            return await response(scope, receive, send)
        await self.limited[limit](scope, receive, send)

    async def _project(self, request: Request) -> str:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("Missing bearer API key in the Authorization header", code="missing_api_key")
        project = await run_in_threadpool(self._lookup, secret.strip())
        if project is None:
            raise Unauthorized("Incorrect API key provided", code="invalid_api_key")
        return project

    def _lookup(self, secret: str) -> str | None:
        with self.runtime.sessions() as s:
            return Keys(s).project_of(secret)

    async def _answer(self, request: Request, err: Exception) -> Response:
        """The app's own handler for ``err`` (this runs outside its exception middleware)."""
        for cls in type(err).__mro__:
            if cls in self.handlers:
                return await self.handlers[cls](request, err)
        raise err


def _check_declared_length(request: Request, limit: int, upload: bool) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        what = "Upload" if upload else "Request body"
        raise TooLarge(
            f"{what} of {int(declared)} bytes is larger than the limit of {limit} bytes",
            "file" if upload else None,
            "file_too_large" if upload else "request_too_large",
        )
