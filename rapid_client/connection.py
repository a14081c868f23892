"""Which server and key the client talks to, as the ``openai`` CLI finds them, and the calls to
RAPID's extension endpoints that the official client has no method for."""

from __future__ import annotations

import os
from typing import Any

import httpx
import openai

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # where `rapid serve` listens


class ClientError(Exception):
    """A problem on the client's side (missing key, unreadable file, bad flag): exit status 2."""


def _normalise(base_url: str) -> str:
    """Accept the server's root (http://host:8000) as well as its API root (.../v1)."""
    url = base_url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def connect(
    base_url: str | None = None, api_key: str | None = None, *, timeout: float = 120, max_retries: int = 2
) -> openai.OpenAI:
    """An official OpenAI client for a RAPID server. Arguments win over RAPID_BASE_URL / RAPID_API_KEY,
    which win over OPENAI_BASE_URL / OPENAI_API_KEY; the URL defaults to a local `rapid serve`."""
    env = os.environ
    key = api_key or env.get("RAPID_API_KEY") or env.get("OPENAI_API_KEY")
    if not key:
        raise ClientError(
            "no API key: set RAPID_API_KEY (or OPENAI_API_KEY), or pass --api-key; "
            "`rapid keys create --project NAME` makes one"
        )
    url = base_url or env.get("RAPID_BASE_URL") or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    return openai.OpenAI(api_key=key, base_url=_normalise(url), timeout=timeout, max_retries=max_retries)


def get_json(client: openai.OpenAI, path: str, **params: Any) -> Any:
    """GET an extension endpoint (path under /v1) and return its JSON body."""
    query = {k: v for k, v in params.items() if v is not None}
    return client.get(path, cast_to=object, options={"params": query})


def get_bytes(client: openai.OpenAI, path: str) -> bytes:
    """GET an extension endpoint that answers with a file (an adapter archive)."""
    return client.get(path, cast_to=httpx.Response).content
