"""The web layer's edges: one JSON error shape, domain errors to statuses, API keys."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from ..errors import (
    EmptyUpload,
    InsufficientStorage,
    InvalidRequest,
    JobAlreadyActive,
    JobQueueUnavailable,
    NotAnMp4,
    UploadStalled,
    UploadTooLarge,
    VideoNotFound,
    VideoServiceError,
)
from .keys import IN_FLIGHT, VIDEO_ID

log = logging.getLogger(__name__)

STATUS_FOR_ERROR: Mapping[type[VideoServiceError], int] = {
    InvalidRequest: 400,
    EmptyUpload: 400,
    VideoNotFound: 404,
    UploadStalled: 408,
    JobAlreadyActive: 409,
    UploadTooLarge: 413,
    NotAnMp4: 415,
    JobQueueUnavailable: 503,
    InsufficientStorage: 507,
}

#: Routes that need a key when keys are configured; the docs stay public.
PROTECTED_PREFIX = "/file"


@web.middleware
async def in_flight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    counter = request.app[IN_FLIGHT]
    counter.started()
    try:
        return await handler(request)
    finally:
        counter.finished()


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@web.middleware
async def video_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A route's {id} must be a UUID, checked before the body is: a malformed id is a 404."""
    raw = request.match_info.get("id")
    if raw is not None:
        if not _UUID.fullmatch(raw):
            raise VideoNotFound(raw)
        request[VIDEO_ID] = raw.lower()
    return await handler(request)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The one error body of this service: {"error": "<what was wrong>"}."""
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except VideoServiceError as e:
        return error_response(STATUS_FOR_ERROR.get(type(e), 500), str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k in (hdrs.ALLOW, hdrs.WWW_AUTHENTICATE)}
        return error_response(e.status, _http_error_message(request, e), headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.rel_url.raw_path)
        return error_response(500, "internal server error; the details are in the server log")


def _http_error_message(request: web.Request, e: web.HTTPException) -> str:
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        return f"method {e.method} is not allowed here; allowed: {allowed}"
    if isinstance(e, web.HTTPNotFound):
        return f"no such route: {request.method} {request.rel_url.raw_path}"
    text = e.text or ""
    # aiohttp's default text is "<status>: <reason>"; a specific one says more.
    if not text or text == f"{e.status}: {e.reason}":
        return e.reason
    return text


def auth_middleware(api_keys: tuple[str, ...]) -> Middleware:
    keys = [key.encode() for key in api_keys]

    @web.middleware
    async def check_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if keys and request.path.startswith(PROTECTED_PREFIX):
            scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
            given = token.strip().encode("utf-8", "replace")
            # Compare against every key, always: timing must not tell which one nearly matched.
            matched = False
            for key in keys:
                matched |= hmac.compare_digest(given, key)
            if scheme.lower() != "bearer" or not matched:
                return error_response(
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <key>'",
                    {hdrs.WWW_AUTHENTICATE: "Bearer"},
                )
        return await handler(request)

    return check_api_key
