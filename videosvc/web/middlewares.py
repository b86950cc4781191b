"""The web layer's edges: one JSON error shape, domain errors to statuses, API keys, checks before a body."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Mapping

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from ..errors import BodyTimeout, ClientGone, TooMany, UploadNotFound, VideoNotFound, VideoServiceError
from ..signing import BadSignature, Expired, LinkFamily, key_name
from .errortable import CLIENT_GONE_STATUS, REASONS, status_for
from .keys import API_KEY, HOSTS, IN_FLIGHT, SETTINGS, SIGNED_UNTIL, SIGNER, UPLOAD_ID, VIDEO_ID
from .origins import cross_site_refusal
from .protocol import SERVER_NAME, error_body
from .representation import CURRENT

log = logging.getLogger(__name__)

#: Routes that need a key when keys are configured; the docs and /health stay public.
PROTECTED_PREFIXES = ("/file", "/uploads", "/metrics")
#: Content codings a body may carry: none. Decompressing would put a 1 MB request behind a 1 GB file.
IDENTITY = ("", "identity")
CLOSE = {"Connection": "close"}
#: What a request cut off by a shutdown is told to wait: about a restart's time.
SHUTDOWN_RETRY_AFTER_S = 5


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The one error body of this service: {"error": "<what was wrong>"}."""
    return web.Response(
        body=error_body(message),
        status=status,
        reason=REASONS.get(status),
        headers=headers,
        content_type="application/json",
    )


@web.middleware
async def in_flight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts the request as in flight; a handler cut off by shutdown answers 503."""
    counter = request.app[IN_FLIGHT]
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - aiohttp runs every handler in a task
        return await handler(request)
    counter.started(task)
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if not counter.cutting_off or not task.cancelling():
            raise
        task.uncancel()
        return error_response(
            503,
            "the service is shutting down and stopped this request; retry it",
            {hdrs.CONNECTION: "close", hdrs.RETRY_AFTER: str(SHUTDOWN_RETRY_AFTER_S)},
        )
    finally:
        counter.finished(task)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@web.middleware
async def resource_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A route's {id} must be a UUID, checked before the body is: a malformed id is a 404. It is a
    video's id under /file, an upload's under /uploads."""
    raw = request.match_info.get("id")
    if raw is not None and request.method != "OPTIONS":  # tus discovery and preflights name nothing
        uploads = request.path.startswith("/uploads")
        if not _UUID.fullmatch(raw):
            raise UploadNotFound(raw) if uploads else VideoNotFound(raw)
        request[UPLOAD_ID if uploads else VIDEO_ID] = raw.lower()
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClientGone as e:
        log.info("client went away during %s %s: %s", request.method, request.rel_url.raw_path[:200], e)
        return web.Response(status=CLIENT_GONE_STATUS)
    except VideoServiceError as e:
        headers = {"Retry-After": str(e.retry_after_s)} if isinstance(e, TooMany) else None
        response = error_response(status_for(e), str(e), headers)
        if isinstance(e, BodyTimeout):
            response.force_close()  # the client stopped sending: do not linger for the rest
        return response
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {str(k): v for k, v in e.headers.items() if k in (hdrs.ALLOW, hdrs.WWW_AUTHENTICATE)}
        return error_response(e.status, _http_error_message(request, e), headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.rel_url.raw_path[:200])
        return error_response(500, "internal server error; the details are in the server log")


#: A path echoed in a 404 is cut to this many characters.
ECHO_PATH_CHARS = 100


def _http_error_message(request: web.Request, e: web.HTTPException) -> str:
    text = e.text or ""
    specific = bool(text) and text != f"{e.status}: {e.reason}"  # aiohttp's default is "<status>: <reason>"
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        said = f"{text}; " if specific else ""
        return f"{said}method {e.method} is not allowed here; allowed: {allowed}"
    if isinstance(e, web.HTTPNotFound):
        path = request.rel_url.raw_path
        shown = path if len(path) <= ECHO_PATH_CHARS else path[:ECHO_PATH_CHARS] + "..."
        return f"no such route: {request.method} {shown}"
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        limit = request.app[SETTINGS].http.max_json_bytes
        return f"the request body is larger than the limit of {limit} bytes (max_json_bytes)"
    return text if specific else e.reason


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals that need only the head: a missing key, a content-coded body."""
    refusal = refusal_before_body(request)
    if refusal is not None:
        return refusal
    return await handler(request)


def refusal_before_body(request: web.Request) -> web.Response | None:
    """The answer to a request that its head alone rules out, else None (and the key is noted)."""
    settings = request.app[SETTINGS].http
    if not request.app[HOSTS].allows(request.host):
        shown = (request.host or "")[:60]
        return error_response(
            400, f"this service does not answer to the Host {shown!r}: add it to allowed_hosts", CLOSE
        )
    # OPTIONS needs no key: a browser's CORS preflight never carries one, and tus discovery
    # tells nothing but the limits.
    if settings.api_keys and request.path.startswith(PROTECTED_PREFIXES) and request.method != "OPTIONS":
        key_index = matching_key(request.headers.get(hdrs.AUTHORIZATION, ""), settings.api_keys)
        family = getattr(request.match_info.handler, "signed_family", None)
        signed = "signature" in request.query or "signature" in request.match_info
        if key_index is None and signed and family is not None:
            return _signature_refusal(request, family)
        if key_index is None:
            return error_response(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                {hdrs.WWW_AUTHENTICATE: "Bearer"},
            )
        request[API_KEY] = key_name(settings.api_keys[key_index])
    cross_site = cross_site_refusal(request, settings)
    if cross_site is not None:
        return error_response(403, cross_site)
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if coding not in IDENTITY:
        shown = coding[:40]
        return error_response(
            415, f"content codings are not accepted on request bodies (got {shown!r}); send it uncompressed"
        )
    return None


def _signature_refusal(request: web.Request, family: LinkFamily) -> web.Response | None:
    """None when the link's signature is genuine, current and of this route's family; else a 403."""
    video_id = request.match_info.get("id", "").lower()
    variant = request.query.get("variant", CURRENT) if family is LinkFamily.CONTENT else ""
    # In the query (content, events), or in the path (the HLS package: its playlists' URIs inherit it).
    given = request.match_info if "signature" in request.match_info else request.query
    try:
        request[SIGNED_UNTIL] = request.app[SIGNER].verify(
            family, video_id, given.get("expires", ""), given.get("signature", ""), variant
        )
    except Expired:
        return error_response(403, "this signed link has expired: GET the video again for a fresh one")
    except BadSignature:
        return error_response(
            403, "this signed link is not valid here (altered, for another video or use, or from another key)"
        )
    return None


def matching_key(authorization: str, api_keys: tuple[str, ...]) -> int | None:
    """The index of the bearer key that `authorization` carries, or None."""
    scheme, _, token = authorization.partition(" ")
    given = token.strip().encode("utf-8", "replace")
    # Compare against every key, always: timing must not tell which one nearly matched.
    found = None
    for index, key in enumerate(api_keys):
        if hmac.compare_digest(given, key.encode()):
            found = index
    return found if scheme.lower() == "bearer" else None


async def expect_continue(request: web.Request) -> web.Response | None:
    """`Expect: 100-continue`: refuse at once what the head rules out, before the client sends the body."""
    refusal = refusal_before_body(request)
    if refusal is None and request.content_length is not None:
        limit = request.app[SETTINGS].uploads.max_upload_bytes
        if request.content_length > limit:
            refusal = error_response(
                413, f"the upload is larger than the limit of {limit} bytes (max_upload_bytes)"
            )
    if refusal is not None:
        refusal.force_close()  # the body that follows the head is not read
        return refusal
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        return error_response(417, "the only expectation understood is '100-continue'")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # as aiohttp's own handler: the response proper has not started
    return None


async def set_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: name the service without versions."""
    response.headers[hdrs.SERVER] = SERVER_NAME
