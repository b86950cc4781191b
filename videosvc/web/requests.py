"""What a request says of its client: who it counts against, and the URL it reached us by."""

from __future__ import annotations

from aiohttp import web

from .keys import API_KEY, SETTINGS


def client_of(request: web.Request) -> str:
    """Who a request counts against for per-client caps: its API key, or its address without keys."""
    key = request.get(API_KEY)
    return key if key is not None else f"address:{request.remote or 'unknown'}"


def public_url(request: web.Request, path: str) -> str:
    """An absolute URL of this service: `public_url` when set, else the (checked) Host it was reached by."""
    base = request.app[SETTINGS].http.public_url
    if base:
        return base.rstrip("/") + path
    return f"{request.scheme}://{request.host}{path}"
