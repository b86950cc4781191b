"""Turning an HTTP request body into an `IncomingUpload`: multipart or raw.

Both forms are streamed: aiohttp's multipart reader yields a part's bytes as
they arrive, and nothing is ever read whole into memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from ..errors import EmptyUpload, InvalidRequest, UploadStalled
from ..service import IncomingUpload

#: What aiohttp's parsers raise on a body that breaks the HTTP or multipart rules.
MALFORMED = (HttpProcessingError, ValueError, AssertionError)
READ_CHUNK_BYTES = 1024 * 1024
#: A multipart body carries its headers and boundaries besides the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
FILE_FIELD = "file"


async def read_upload(request: web.Request, idle_timeout_s: float) -> IncomingUpload:
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request, idle_timeout_s)
    if not request.body_exists:
        raise EmptyUpload(
            "no body: send the video as multipart/form-data (field 'file') or as a raw video/mp4 body"
        )
    content = request.content
    return IncomingUpload(
        chunks=_chunks(lambda: content.read(READ_CHUNK_BYTES), idle_timeout_s),
        filename=_filename_from_headers(request),
        declared_bytes=request.content_length,
    )


async def _read_multipart(request: web.Request, idle_timeout_s: float) -> IncomingUpload:
    try:
        reader = await request.multipart()
        while True:
            async with asyncio.timeout(idle_timeout_s):
                part = await reader.next()
            if part is None:
                raise EmptyUpload(
                    "the multipart body has no file part: send the video in a field named 'file'"
                )
            if isinstance(part, BodyPartReader) and (part.name == FILE_FIELD or part.filename):
                file_part = part
                break
            await part.release()  # a plain form field, or nested multipart: skip it
    except MALFORMED as e:
        raise InvalidRequest(f"the multipart body is malformed: {_first_line(e)}") from None
    except TimeoutError:
        raise UploadStalled(idle_timeout_s) from None
    declared = request.content_length
    return IncomingUpload(
        chunks=_chunks(lambda: file_part.read_chunk(READ_CHUNK_BYTES), idle_timeout_s),
        filename=file_part.filename,
        declared_bytes=max(0, declared - MULTIPART_OVERHEAD_BYTES) if declared is not None else None,
    )


async def _chunks(read: Callable[[], Awaitable[bytes]], idle_timeout_s: float) -> AsyncIterator[bytes]:
    """Yield until the body ends; a client silent for `idle_timeout_s` is cut off."""
    while True:
        try:
            async with asyncio.timeout(idle_timeout_s):
                chunk = await read()
        except TimeoutError:
            raise UploadStalled(idle_timeout_s) from None
        except MALFORMED as e:
            raise InvalidRequest(f"the request body is malformed: {_first_line(e)}") from None
        if not chunk:
            return
        yield chunk


def _filename_from_headers(request: web.Request) -> str | None:
    header = request.headers.get("Content-Disposition")
    if header:
        _, params = parse_content_disposition(header)
        name = content_disposition_filename(params, "filename")
        if name:
            return name
    return request.query.get("filename") or None


def _first_line(error: Exception) -> str:
    """aiohttp's parser errors span lines (with a caret diagram); the first line of the message says it."""
    text = str(getattr(error, "message", "") or error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__
