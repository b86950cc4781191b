"""Turning an HTTP request body into an `IncomingUpload`: multipart or raw, both streamed.

aiohttp's multipart reader does the parsing; it reads through a `BodyStream`,
which puts this service's limits on it: a deadline and a byte budget for
everything that is not the file (preamble, part headers, form fields), an
idle timeout for the file itself, a cap on the number of parts, and a turn
for the event loop every few reads, so that a body of many tiny parts cannot
hold the loop. Nothing is ever read whole into memory.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from ..config import Settings
from ..errors import BodyTimeout, ClientGone, EmptyUpload, InvalidRequest, UnsupportedMedia, UploadStalled
from ..uploads.receiver import IncomingUpload
from .protocol import first_line

#: What aiohttp's parsers raise on a body that breaks the HTTP or multipart rules.
MALFORMED = (HttpProcessingError, ValueError, AssertionError)
READ_CHUNK_BYTES = 1024 * 1024
#: A multipart body carries its headers and boundaries besides the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
FILE_FIELD = "file"
#: Headers of one multipart part: far fewer than of a request.
MAX_PART_HEADERS = 16
#: The event loop gets a turn at least every this many reads of buffered data.
YIELD_EVERY_READS = 32
#: Form fields are skipped in reads of this size; aiohttp's part reader looks up to two ahead.
FIELD_READ_BYTES = 8192
READ_AHEAD_BYTES = 2 * FIELD_READ_BYTES
#: Transfer encodings of a part that leave its bytes as they are.
PLAIN_TRANSFER = ("", "binary", "8bit", "7bit")


@dataclass(frozen=True)
class BodyLimits:
    idle_timeout_s: float
    form_timeout_s: float
    max_form_bytes: int
    max_form_parts: int

    @classmethod
    def of(cls, settings: Settings) -> BodyLimits:
        return cls(
            idle_timeout_s=settings.uploads.upload_idle_timeout_s,
            form_timeout_s=settings.http.body_timeout_s,
            max_form_bytes=settings.uploads.max_form_bytes,
            max_form_parts=settings.uploads.max_form_parts,
        )


class BodyStream:
    """`request.content` with this service's limits, in the shape aiohttp's multipart reader reads.

    In form mode (everything but the file) each read must come before a
    deadline and counts against a byte budget; in file mode each read must
    come within the idle timeout. Errors come out as domain errors.
    """

    def __init__(self, content: StreamReader, limits: BodyLimits) -> None:
        self._content = content
        self._limits = limits
        self._reads = 0
        self._form_bytes = 0
        self._deadline: float | None = None
        self.form_mode()

    def form_mode(self) -> None:
        self._deadline = time.monotonic() + self._limits.form_timeout_s

    def file_mode(self) -> None:
        self.check_form_budget()
        self._deadline = None

    def check_form_budget(self, slack: int = 0) -> None:
        """Net of what the multipart reader read ahead and gave back.

        Exact between parts; within one, `slack` allows for the reader's look-ahead.
        """
        if self._form_bytes > self._limits.max_form_bytes + slack:
            raise InvalidRequest(
                "the multipart body holds more than"
                f" {self._limits.max_form_bytes} bytes besides the file (max_form_bytes)"
            )

    async def read(self, n: int = -1) -> bytes:
        return await self._guarded(lambda: self._content.read(n))

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        return await self._guarded(lambda: self._content.readline(max_line_length=max_line_length))

    def at_eof(self) -> bool:
        return self._content.at_eof()

    def unread_data(self, data: bytes) -> None:
        if self._deadline is not None:
            self._form_bytes -= len(data)
        with warnings.catch_warnings():  # aiohttp's own multipart reader does the same
            warnings.simplefilter("ignore", DeprecationWarning)
            self._content.unread_data(data)

    async def _guarded(self, read: Callable[[], Awaitable[bytes]]) -> bytes:
        self._reads += 1
        if self._reads % YIELD_EVERY_READS == 0:
            await asyncio.sleep(0)  # buffered reads never suspend: give the loop its turn
        limits = self._limits
        timeout = limits.idle_timeout_s
        if self._deadline is not None:
            self.check_form_budget(slack=READ_AHEAD_BYTES)
            timeout = min(timeout, self._deadline - time.monotonic())
        try:
            async with asyncio.timeout(max(timeout, 0)):
                data = await read()
        except TimeoutError:
            if self._deadline is not None:
                raise BodyTimeout(
                    "the form fields and part headers of the upload did not arrive within"
                    f" {limits.form_timeout_s:g} s (body_timeout_s)"
                ) from None
            raise UploadStalled(limits.idle_timeout_s) from None
        except ConnectionError as e:
            raise ClientGone(str(e) or type(e).__name__) from None
        except MALFORMED as e:
            raise InvalidRequest(f"the request body is malformed: {said(e)}") from None
        if self._deadline is not None:
            self._form_bytes += len(data)
        return data


async def read_upload(request: web.Request, settings: Settings) -> IncomingUpload:
    limits = BodyLimits.of(settings)
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request, limits)
    if not request.body_exists:
        raise EmptyUpload(
            "no body: send the video as multipart/form-data (field 'file') or as a raw video/mp4 body"
        )
    stream = BodyStream(request.content, limits)
    stream.file_mode()
    return IncomingUpload(
        chunks=_chunks(stream),
        filename=_filename_from_headers(request),
        declared_bytes=request.content_length,
    )


async def _chunks(stream: BodyStream) -> AsyncIterator[bytes]:
    while chunk := await stream.read(READ_CHUNK_BYTES):
        yield chunk


async def _read_multipart(request: web.Request, limits: BodyLimits) -> IncomingUpload:
    stream = BodyStream(request.content, limits)
    try:
        reader = MultipartReader(
            request.headers,
            cast(StreamReader, stream),
            max_field_size=request.protocol.max_field_size,
            max_headers=MAX_PART_HEADERS,
        )
    except MALFORMED as e:
        raise InvalidRequest(f"the multipart body is malformed: {said(e)}") from None
    parts = _PartCounter(limits.max_form_parts)
    while True:
        part = await _next_part(reader, stream, parts)
        if part is None:
            raise EmptyUpload("the multipart body has no file part: send the video in a field named 'file'")
        if part.name == FILE_FIELD or part.filename:
            break
        await _skip(part)
    stream.file_mode()
    declared = request.content_length
    return IncomingUpload(
        chunks=_file_then_rest(part, reader, stream, parts),
        filename=part.filename,
        declared_bytes=max(0, declared - MULTIPART_OVERHEAD_BYTES) if declared is not None else None,
    )


class _PartCounter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0

    def count(self) -> None:
        self.seen += 1
        if self.seen > self.limit:
            raise InvalidRequest(f"the multipart body has more than {self.limit} parts (max_form_parts)")


async def _next_part(
    reader: MultipartReader, stream: BodyStream, parts: _PartCounter
) -> BodyPartReader | None:
    stream.check_form_budget()
    try:
        part = await reader.next()
    except (*MALFORMED, RuntimeError) as e:  # RuntimeError: a `_charset_` field aiohttp cannot take
        raise InvalidRequest(f"the multipart body is malformed: {said(e)}") from None
    if part is None:
        return None
    parts.count()
    if not isinstance(part, BodyPartReader):
        raise InvalidRequest("nested multipart bodies are not accepted: send the file as a part of its own")
    coding = part.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    transfer = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "").strip().lower()
    if coding not in ("", "identity") or transfer not in PLAIN_TRANSFER:
        raise UnsupportedMedia(
            f"encoded multipart parts are not accepted (got {(coding or transfer)[:40]!r});"
            " send the bytes as they are"
        )
    return part


async def _skip(part: BodyPartReader) -> None:
    """Read a form field to the void; its bytes count against the form budget of the stream."""
    try:
        while await part.read_chunk(FIELD_READ_BYTES):
            pass
    except MALFORMED as e:
        raise InvalidRequest(f"the multipart body is malformed: {said(e)}") from None


async def _file_then_rest(
    file_part: BodyPartReader, reader: MultipartReader, stream: BodyStream, parts: _PartCounter
) -> AsyncIterator[bytes]:
    """The file's bytes; then the rest of the body, which must be small and end with the closing boundary."""
    try:
        while chunk := await file_part.read_chunk(READ_CHUNK_BYTES):
            yield chunk
    except MALFORMED as e:
        raise InvalidRequest(f"the multipart body is malformed: {said(e)}") from None
    stream.form_mode()
    while (part := await _next_part(reader, stream, parts)) is not None:
        if part.name == FILE_FIELD or part.filename:
            raise InvalidRequest("the multipart body has more than one file part: send one video per upload")
        await _skip(part)
    # The reader returned None: it saw the closing boundary (a body that ends without one is
    # refused above, "Reading after EOF").
    stream.check_form_budget()


def _filename_from_headers(request: web.Request) -> str | None:
    header = request.headers.get(hdrs.CONTENT_DISPOSITION)
    if header:
        _, params = parse_content_disposition(header)
        name = content_disposition_filename(params, "filename")
        if name:
            return name
    return request.query.get("filename") or None


def said(error: Exception) -> str:
    """What a parser's error says, in a line (aiohttp's span lines, with a caret diagram)."""
    return first_line(str(getattr(error, "message", "") or error) or type(error).__name__)
