"""The connection layer under aiohttp's handlers: what one connection may cost before a handler runs.

aiohttp reads the request line and headers itself, with limits per line and
per header but none on their total, no deadline for them, and no cap on the
number of connections. `GuardedRequestHandler` adds those three, answers
parser rejections in the service's JSON shape with one log line, and refuses
connections past `max_connections` with a 503 instead of running into the
open-file limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections import Counter
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ..config import HttpSettings

log = logging.getLogger(__name__)

#: What the `Server` header says: no versions (they help an attacker, not a client).
SERVER_NAME = "videosvc"
#: File descriptors kept for everything that is not a connection: the database, logs, probes, jobs.
RESERVED_FDS = 128
#: Bytes read from a socket per event-loop callback (asyncio's default is 256 KiB): heads and
#: chunked bodies, whose parsing costs a Python call per chunk.
READ_BYTES = 32 * 1024
#: The same for a body of a declared length: aiohttp passes it on in slices, without parsing it,
#: so larger reads cost the loop no more and halve an upload's callbacks and wake-ups.
BODY_READ_BYTES = 256 * 1024
#: A chunked body whose chunks average less than this is refused: each chunk costs a Python call to
#: parse, and a body of 1-byte chunks turns every byte into one (checked on reads of 4 KiB or more).
MIN_AVERAGE_CHUNK_BYTES = 256
MIN_CHUNK_CHECK_BYTES = 4096
#: What a connection refused for the caps is told to wait: connections come and go fast.
CONNECTIONS_RETRY_AFTER_S = 1
#: The open-file limit is raised towards the hard limit, up to this.
MAX_FDS = 65536
#: Longest piece of a parser's message (or anything a client sent) repeated to the client or the log.
ECHO_CHARS = 100


class RateLimitedLog:
    """At most `per_second` lines a second; the rest are counted and summed up in the next line."""

    def __init__(self, logger: logging.Logger, per_second: int) -> None:
        self._logger = logger
        self._per_second = per_second
        self._window = 0
        self._logged = 0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = int(time.monotonic())
        if now != self._window:
            if self._suppressed:
                self._logger.warning("... and %d more like the lines above, not logged", self._suppressed)
            self._window, self._logged, self._suppressed = now, 0, 0
        if self._logged >= self._per_second:
            self._suppressed += 1
            return
        self._logged += 1
        self._logger.warning(message, *args)


class ConnectionGuard:
    """What every connection of one server shares: the limits, the count, the logs."""

    def __init__(self, settings: HttpSettings, max_connections: int) -> None:
        self.header_timeout_s = settings.header_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self.max_connections = max_connections
        self.max_per_address = min(max_connections, settings.max_connections_per_client)
        self.open = 0
        #: Open connections by peer address.
        self.by_address: Counter[str] = Counter()
        self.refusals = RateLimitedLog(log, per_second=1)
        self.rejections = RateLimitedLog(log, per_second=10)


def error_body(message: str) -> bytes:
    """The one error body of this service: {"error": "<what was wrong>"}."""
    return json.dumps({"error": message}).encode()


def first_line(text: str) -> str:
    """A parser's message spans lines (with a caret diagram); its first line says it, bounded."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "malformed request"
    for prefix in ("400, message:", "message="):
        first = first.removeprefix(prefix).strip()
    return first if len(first) <= ECHO_CHARS else first[:ECHO_CHARS] + "..."


def raw_response(status: int, reason: str, message: str, extra: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 error response, for answers written below aiohttp's request handling."""
    body = error_body(message)
    headers = {
        hdrs.CONTENT_TYPE: "application/json; charset=utf-8",
        hdrs.CONTENT_LENGTH: str(len(body)),
        hdrs.CONNECTION: "close",
        hdrs.SERVER: SERVER_NAME,
        **(extra or {}),
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, with a deadline and a size cap on each request's head."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        too_many = guard.open >= guard.max_connections
        self._refused = too_many or guard.by_address[self._address] >= guard.max_per_address
        #: Done when the connection is gone: a live stream frees its place at once.
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._head_timer: asyncio.TimerHandle | None = None
        #: When the head being awaited began to count (loop time), or None between heads.
        self._head_started: float | None = None
        self._head_bytes = 0
        self._head_tail = b""
        self._last_payload: Any = None
        self._chunked = False
        if self._refused:
            self._manager = None  # never registered: nothing to clean up
            if not isinstance(transport, asyncio.Transport):  # pragma: no cover - a TCP server's are
                return
            setting = "max_connections" if too_many else "max_connections_per_client"
            limit = guard.max_connections if too_many else guard.max_per_address
            transport.write(
                raw_response(
                    503,
                    "Service Unavailable",
                    f"too many open connections ({setting}={limit}); retry shortly",
                    {hdrs.RETRY_AFTER: str(CONNECTIONS_RETRY_AFTER_S)},
                )
            )
            transport.close()
            guard.refusals.warning("refused a connection: %d are open (%s)", limit, setting)
            return
        guard.open += 1
        guard.by_address[self._address] += 1
        # asyncio reads up to 256 KiB per callback; parsing that much of a body sent in 1-byte
        # chunks holds the loop for tens of milliseconds. Smaller reads keep each callback short.
        if hasattr(transport, "max_size"):
            transport.max_size = READ_BYTES
        super().connection_made(transport)
        # aiohttp starts its keep-alive timer on a new connection; the head deadline replaces it there.
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        self._start_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._refused:
            return
        self.guard.open -= 1
        self.guard.by_address[self._address] -= 1
        if not self.guard.by_address[self._address]:
            del self.guard.by_address[self._address]
        self._stop_head_timer()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._awaiting_head() and not (self._force_close or self._close):
            if self._head_started is None:
                self._start_head_timer()
            if not self._head_fits(data):
                self._reject(
                    431,
                    "Request Header Fields Too Large",
                    f"the request line and headers are larger than {self.guard.max_header_bytes} bytes"
                    " (max_header_bytes)",
                )
                return
        elif self._chunked and len(data) >= MIN_CHUNK_CHECK_BYTES and self._tiny_chunks(data):
            self._reject(
                400,
                "Bad Request",
                "the chunked body is cut into chunks smaller than"
                f" {MIN_AVERAGE_CHUNK_BYTES} bytes on average; send larger chunks",
            )
            return
        before = self._request_count
        super().data_received(data)
        if self._request_count > before and self._messages:
            message, self._last_payload = self._messages[-1]
            self._chunked = bool(getattr(message, "chunked", False))
            self._head_bytes, self._head_tail = 0, b""
            self._stop_head_timer()
            if not self._chunked and not self._awaiting_head():  # a body of a declared length follows
                self._set_read_size(BODY_READ_BYTES)
        elif self._awaiting_head():
            self._set_read_size(READ_BYTES)

    def _set_read_size(self, size: int) -> None:
        transport = self.transport
        if transport is not None and getattr(transport, "max_size", size) != size:
            transport.max_size = size  # type: ignore[attr-defined]

    @staticmethod
    def _tiny_chunks(data: bytes) -> bool:
        """Each chunk costs two CRLFs (after its size, after its data); random bytes hold one per 64 KiB."""
        return data.count(b"\r\n") * MIN_AVERAGE_CHUNK_BYTES > 2 * len(data)

    def _awaiting_head(self) -> bool:
        """No request, or the last one's body is complete: bytes now belong to the next head."""
        return self._last_payload is None or bool(self._last_payload.is_eof())

    def _head_fits(self, data: bytes) -> bool:
        window = self._head_tail + data
        ends = [i for i in (window.find(b"\r\n\r\n"), window.find(b"\n\n")) if i >= 0]
        if ends:
            head_bytes = self._head_bytes - len(self._head_tail) + min(ends) + 4
            self._head_bytes, self._head_tail = 0, b""
            return head_bytes <= self.guard.max_header_bytes
        self._head_bytes += len(data)
        self._head_tail = window[-3:]
        return self._head_bytes <= self.guard.max_header_bytes

    def _start_head_timer(self) -> None:
        """The head deadline starts now. One timer per connection, moved lazily: a request
        costs a clock read here, not a timer armed and cancelled (~2 µs of a GET's ~80)."""
        self._head_started = self._loop.time()
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(
                self._head_started + self.guard.header_timeout_s, self._head_deadline
            )

    def _stop_head_timer(self) -> None:
        self._head_started = None  # the timer, if armed, finds nothing to do and lapses

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._head_started is None:
            return
        due = self._head_started + self.guard.header_timeout_s
        if self._loop.time() < due:  # a later head started the clock again
            self._head_timer = self._loop.call_at(due, self._head_deadline)
            return
        self._head_started = None
        if not self._awaiting_head() or self.transport is None:
            return
        if self._head_bytes or self._head_tail:
            self._reject(
                408,
                "Request Timeout",
                f"the request headers did not arrive within {self.guard.header_timeout_s:g} s"
                " (header_timeout_s)",
            )
        else:  # a connection that never sent a byte: just idle
            self.force_close()

    def _reject(self, status: int, reason: str, message: str) -> None:
        self.guard.rejections.warning("rejected a request from %s: %d %s", self._peer(), status, message)
        if self.transport is not None:
            self.transport.write(raw_response(status, reason, message))
        self.force_close()

    def _peer(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request that aiohttp itself refused (a malformed head or body): JSON, and one log line."""
        if status == 500:
            self.log_exception(
                "unhandled error on %s %s", request.method, request.rel_url.raw_path, exc_info=exc
            )
            text = "internal server error; the details are in the server log"
        else:
            detail = first_line(message or (str(exc) if exc else "") or "malformed request")
            text = f"malformed HTTP request: {detail}"
            if self._request_count == 1 and isinstance(exc, BadHttpMethod):
                log.debug("not HTTP from %s", self._peer())  # scanners and TLS on a plain port
            else:
                self.guard.rejections.warning("rejected a request from %s: %d %s", self._peer(), status, text)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started; cannot send the error")
        response = web.Response(
            body=error_body(text),
            status=status,
            content_type="application/json",
            headers={hdrs.SERVER: SERVER_NAME},
        )
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's low-level server, making a `GuardedRequestHandler` for each connection."""

    def __init__(self, inner: web.Server, guard: ConnectionGuard) -> None:
        super().__init__(
            inner.request_handler,
            request_factory=inner.request_factory,
            handler_cancellation=inner.handler_cancellation,
            loop=inner._loop,
            **inner._kwargs,
        )
        self.guard = guard

    def __call__(self) -> RequestHandler:
        handler = GuardedRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.guard = self.guard
        return handler


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections are guarded; used by `serve` and by the tests alike."""

    def __init__(self, app: web.Application, settings: HttpSettings, **kwargs: Any) -> None:
        super().__init__(
            app,
            keepalive_timeout=settings.keepalive_timeout_s,
            # Uploads are refused when content-coded; nothing is decompressed behind our limits.
            auto_decompress=False,
            **kwargs,
        )
        self.guard = ConnectionGuard(settings, connection_limit(settings.max_connections))

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self.guard)


def connection_closed(request: web.BaseRequest) -> asyncio.Future[None] | None:
    """Done when the request's connection is gone (None if it is not one of ours)."""
    protocol = request.protocol
    return protocol.closed if isinstance(protocol, GuardedRequestHandler) else None


def connection_limit(wanted: int) -> int:
    """`wanted`, lowered so that every connection can hold its socket and a file under the fd limit.

    The soft open-file limit is first raised to the hard one, as servers do.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = MAX_FDS if hard == resource.RLIM_INFINITY else min(hard, MAX_FDS)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    fits = max(1, (soft - RESERVED_FDS) // 2)
    if fits < wanted:
        log.warning(
            "max_connections lowered from %d to %d to fit the open-file limit (%d)", wanted, fits, soft
        )
    return min(wanted, fits)
