"""Logging to stderr, as text or JSON lines, with one line per request."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any, NamedTuple, TextIO
from urllib.parse import unquote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .config import LogSettings

# Attributes every LogRecord has; anything else on a record came in `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


#: Set by a handler that sends its body itself (sendfile), which aiohttp does not count.
BYTES_SENT = web.RequestKey("bytes_sent", int)
#: The same key as `web.keys.API_KEY` (the fingerprint of the request's API key): named here, so
#: the logs need nothing of the web layer.
API_KEY_NAME = web.RequestKey("api_key", str)

#: Loggers whose text lines already say everything their extra fields hold.
_SELF_CONTAINED = frozenset({"videosvc.access"})


class _SecondCache:
    """`Formatter.formatTime`'s text ("2026-11-27 16:24:14,317", local time), strftime'd once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def format_time(self, record: logging.LogRecord) -> str:
        return self.at(record.created, record.msecs)

    def at(self, created: float, msecs: float) -> str:
        return f"{self.of_second(int(created))},{int(msecs):03d}"

    def of_second(self, second: int) -> str:
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return self._text


#: Access lines are written at most this long after their request, together.
FLUSH_DELAY_S = 0.05

#: Query parameters whose values are secrets, or as good as (a signature opens a video; a cursor
#: tells which videos exist): the access log shows their names only.
REDACTED_PARAMETERS = frozenset({"signature", "cursor"})
#: A query longer than this is cut in the log.
MAX_LOGGED_QUERY = 200


class Access(NamedTuple):
    """What one access line says."""

    logger: str
    created: float
    client: str
    method: str
    path: str
    #: Percent-encoded, as sent, with secrets redacted.
    query: str
    status: int
    #: Bytes of the body sent.
    sent: int
    ms: float
    #: The API key's fingerprint, when one was used; never the key.
    key: str | None = None

    @property
    def msecs(self) -> float:
        return int((self.created - int(self.created)) * 1000) + 0.0  # as LogRecord computes it

    @property
    def message(self) -> str:
        target = f"{self.path}?{self.query}" if self.query else self.path
        key = f" {self.key}" if self.key else ""
        return f"{self.client} {self.method} {target} {self.status} {self.sent} {self.ms:.1f} ms{key}"

    def fields(self) -> dict[str, Any]:
        return {
            "client": self.client, "method": self.method, "path": self.path, "query": self.query,
            "status": self.status, "bytes": self.sent, "duration_ms": round(self.ms, 1), "key": self.key,
        }  # fmt: skip

    def record(self) -> logging.LogRecord:
        record = logging.LogRecord(self.logger, logging.INFO, "", 0, self.message, None, None)
        record.created, record.msecs = self.created, self.msecs
        record.__dict__.update(self.fields())
        return record


def redacted_query(raw: str) -> str:
    """The query as sent, with the values of REDACTED_PARAMETERS replaced, and cut to a bounded length."""
    if not raw:
        return ""
    parts = []
    for part in raw.split("&"):
        name, equals, _ = part.partition("=")
        parts.append(f"{name}=REDACTED" if equals and unquote(name) in REDACTED_PARAMETERS else part)
    query = "&".join(parts)
    return query if len(query) <= MAX_LOGGED_QUERY else query[:MAX_LOGGED_QUERY] + "..."


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._times = _SecondCache()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._times.format_time(record)

    def format_access(self, a: Access) -> str:
        """What `format` makes of `a.record()`, without making the record (one f-string: ~1 µs)."""
        second = int(a.created)
        stamp = f"{self._times.of_second(second)},{int((a.created - second) * 1000):03d}"
        return f"{stamp} INFO {a.logger}: {a.message}"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.name in _SELF_CONTAINED:
            return line
        fields = " ".join(
            f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
            for key, value in _extras(record).items()
        )
        return f"{line} {fields}" if fields else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `time` is ISO 8601 in UTC, for log collectors."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._iso(record.created, record.msecs)

    def _iso(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int(msecs):03d}Z"

    def format_access(self, a: Access) -> str:
        """What `format` makes of `a.record()`, without making the record."""
        entry = {"time": self._iso(a.created, a.msecs), "level": "INFO", "logger": a.logger,
                 "message": a.message, **a.fields()}  # fmt: skip
        return json.dumps(entry)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class LineHandler(logging.StreamHandler[TextIO]):
    """The service's one handler: records as usual, and access lines written in batches.

    Under load the service answers thousands of requests a second; their lines
    go out together, at most FLUSH_DELAY_S after the first of them, instead of
    a write and a flush each. At exit `logging.shutdown` flushes. A record
    from anywhere else writes what is pending first, so the order holds.
    """

    def __init__(self, formatter: TextFormatter | JsonFormatter) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(formatter)
        self.line_formatter = formatter
        self._pending: list[str] = []

    def add_access(self, access: Access, loop: asyncio.AbstractEventLoop) -> None:
        """From the event loop's thread only."""
        line = self.line_formatter.format_access(access)
        self.acquire()
        try:
            first = not self._pending
            self._pending.append(line)
        finally:
            self.release()
        if first:
            loop.call_later(FLUSH_DELAY_S, self.flush)

    def flush(self) -> None:
        self.acquire()  # the handler's own lock (re-entrant), which `handle` holds around `emit`
        try:
            if self._pending:
                lines, self._pending = self._pending, []
                self.stream.write("\n".join(lines) + "\n")
            super().flush()
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:
            self.flush()
        super().emit(record)


def setup_logging(settings: LogSettings) -> None:
    # No line shows a thread or process name: do not look them up for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LineHandler(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def _line_handler(logger: logging.Logger) -> LineHandler | None:
    """The LineHandler that alone receives this logger's records unfiltered, if there is one."""
    found: LineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None or not isinstance(handler, LineHandler) or handler.filters:
                return None
            if handler.level > logging.INFO:
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


class AccessLogger(AbstractAccessLogger):
    """One line per request: client address, method, path and query (percent-encoded, secrets redacted),
    status, body bytes sent, duration, and the API key's fingerprint.

    With the service's own handler the line is formatted straight from these
    four values, as the record would have been, and written at the end of the
    batch; otherwise (tests, a host's own logging) it is a record as usual.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        url = request.rel_url
        access = Access(
            logger.name, _now(), request.remote or "-", request.method, url.raw_path,
            redacted_query(url.raw_query_string), response.status,
            request.get(BYTES_SENT, response.body_length), time * 1000, request.get(API_KEY_NAME),
        )  # fmt: skip
        handler = _line_handler(logger)
        if handler is None:
            logger.handle(access.record())
        else:
            handler.add_access(access, asyncio.get_running_loop())

    @property
    def enabled(self) -> bool:
        """aiohttp skips `log` (and its timing) altogether when this is false."""
        return self.logger.isEnabledFor(logging.INFO)


_now = time.time
