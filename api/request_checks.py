"""Checks every route gets before its handler runs: a strict JSON body and clean path / query values.

``StrictRoute`` is the ``route_class`` of every router. A JSON body is parsed by ``strict_json``
(no NaN / Infinity, NUL, deep nesting or out-of-range integers); a NUL character in a path id, a
cursor or any query value is refused. Each is a 400 naming the field, from this one place.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api import strict_json
from api.errors import InvalidRequest


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = strict_json.loads(await self.body())
            except strict_json.JsonError as err:
                where = f"{err.path}: " if err.path else ""
                raise InvalidRequest(
                    f"Invalid JSON body: {where}{err.message}", err.path, "invalid_json"
                ) from None
        return self._json


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json") or kind == ""


def check_params(request: Request) -> None:
    for name, value in request.path_params.items():
        if "\x00" in str(value):
            raise InvalidRequest(f"{name} must not contain NUL characters", name, "invalid_value")
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest(
                f"{name!r} must not contain NUL characters", name.replace("\x00", ""), "invalid_value"
            )


class StrictRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            request = StrictJsonRequest(request.scope, request.receive)
            check_params(request)
            if request.method in ("POST", "PUT", "PATCH") and _is_json(request) and await request.body():
                await request.json()  # parsed (and refused) here, then reused by the handler
            return await handler(request)

        return checked
