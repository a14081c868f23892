"""Every error the API returns, shaped like OpenAI's: ``{"error": {message, type, param, code}}``.

Services raise ``ApiError`` (or let a core ``RapidError`` through); the handlers here are the one
place that turns exceptions into HTTP responses.
"""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from rapid_core.errors import ConfigError, DatasetError, GraderError, ModelError, RapidError
from store.db import is_transient

log = logging.getLogger("rapid.api")
RETRY_AFTER_S = 5  # what a 503 asks the client to wait: a database restart or failover takes seconds


class ApiError(Exception):
    status = 400
    type = "invalid_request_error"
    headers: dict[str, str] | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class InvalidRequest(ApiError):
    pass


class NotFound(ApiError):
    status = 404

    def __init__(self, kind: str, object_id: str, param: str | None = None):
        super().__init__(f"No {kind} found with id {object_id!r}", param, "not_found")


class Unauthorized(ApiError):
    status = 401
    type = "authentication_error"


class TooLarge(ApiError):
    status = 413


class TooManyRequests(ApiError):
    status = 429
    type = "requests"  # OpenAI's type for rate limits

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, None, "rate_limit_exceeded")
        self.headers = {"Retry-After": str(retry_after_s)}


class IdempotencyKeyReused(ApiError):
    """The IETF Idempotency-Key draft's answer to a key reused with a different request."""

    status = 422

    def __init__(self, message: str):
        super().__init__(message, "Idempotency-Key", "idempotency_key_reused")


class Unavailable(ApiError):
    status = 503
    type = "server_error"


OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def grader_param(prefix: str, err: GraderError) -> str:
    """The request field a GraderError is about: ``prefix`` plus the field inside the grader."""
    return f"{prefix}.{err.field}" if getattr(err, "field", None) else prefix


def _core_error(err: RapidError) -> tuple[str | None, str]:
    """(param, code) of a core error raised while validating a job."""
    if isinstance(err, ConfigError):
        return getattr(err, "param", None) or err.field, "invalid_hyperparameter"
    if isinstance(err, GraderError):
        return grader_param("method.reinforcement.grader", err), "invalid_grader"
    if isinstance(err, ModelError):
        return "model", "model_not_found"
    if isinstance(err, DatasetError):
        return "training_file", "invalid_training_file"
    return None, "invalid_request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, err: ApiError):
        headers = err.headers or ({"Retry-After": str(RETRY_AFTER_S)} if err.status == 503 else None)
        return JSONResponse(
            body(err.message, err.type, err.param, err.code), status_code=err.status, headers=headers
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, err: DBAPIError):
        if not is_transient(err):
            return await _unexpected(request, err)
        log.warning("database unavailable: %s", type(err).__name__)
        return JSONResponse(
            body("The database is unavailable; retry shortly", "server_error", None, "database_unavailable"),
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(RapidError)
    async def _core(_: Request, err: RapidError):
        param, code = _core_error(err)
        return JSONResponse(body(str(err), "invalid_request_error", param, code), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError):
        first = err.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return JSONResponse(body(message, "invalid_request_error", param, "invalid_value"), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException):
        if err.status_code == 413:  # a body cut while streaming in, at the limit the guard set
            limit = request.scope.get(MAX_BODY_SIZE_SCOPE_KEY)
            message = f"Request body is larger than the limit of {limit} bytes"
            return JSONResponse(body(message, "invalid_request_error", None, "request_too_large"), 413)
        kind = "not_found" if err.status_code == 404 else "invalid_request"
        return JSONResponse(
            body(str(err.detail), "invalid_request_error", None, kind),
            status_code=err.status_code,
            headers=getattr(err, "headers", None),
        )  # e.g. Allow on a 405

    @app.exception_handler(OSError)
    async def _os(request: Request, err: OSError):
        if err.errno in OUT_OF_SPACE:  # nothing half-written is kept: the writers clean up after themselves
            log.error("out of storage space: %s", err)
            message = "The service is out of storage space, so the request was not kept; try again later"
            return JSONResponse(body(message, "server_error", None, "insufficient_storage"), 507)
        return await _unexpected(request, err)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception):
        log.exception("unhandled error")
        return JSONResponse(
            body("Internal server error", "server_error", None, "internal_error"), status_code=500
        )
