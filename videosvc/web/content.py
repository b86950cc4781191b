"""Serving a stored video's bytes: sendfile, one byte range, validators, and the download name.

aiohttp's FileResponse answers several ranges with a 416 and reads If-Range only
as a date; a player seeking with an ETag it holds needs both right. Here the
file is opened first and everything (size, ETag, the bytes sent) comes from
that one open file, so a download running while a resize replaces the video
gets the old version whole, and the next request the new one with a new ETag.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import math
import os
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from aiohttp import hdrs, web

from ..errors import VideoNotFound
from ..events.bus import BytesMoved
from ..logs import BYTES_SENT
from ..store.objects import ObjectMissing, ObjectStore
from .keys import BUS, SETTINGS
from .middlewares import error_response

log = logging.getLogger(__name__)

#: Read size when sendfile cannot be used.
FALLBACK_CHUNK_BYTES = 256 * 1024
#: Bytes sent per sendfile call, each within send_timeout_s: a client slower than this per that
#: long (35 KB/s at the default 30 s) has stalled. One call for most HLS segments (each call has a
#: fixed cost: 512 KiB slices served a 1 MiB segment at 0.57x nginx's rate, 1 MiB ones at 0.7x).
SEND_SLICE_BYTES = 1024 * 1024
#: ASCII digits only (`\d` would take other scripts' digits too); the lengths are bounded below.
_RANGE = re.compile(r"^\s*([0-9]*)\s*-\s*([0-9]*)\s*$")
#: A position of more digits than this is past the end of any file: read as this (10**18 bytes).
HUGE_DIGITS = 18
HUGE = 10**HUGE_DIGITS


@dataclass(frozen=True)
class Version:
    """What the validators and ranges are judged by: one version of the bytes sent."""

    size: int
    mtime: float
    etag: str


@dataclass(frozen=True)
class OpenVideo(Version):
    file: BinaryIO


#: Sends `count` bytes from `offset` of the version described, into the prepared response.
BodySender = Callable[[web.StreamResponse, int, int], Awaitable[None]]


def open_video(path: str | Path) -> OpenVideo:
    """Open first, then stat the open file: what is sent and what is described are one version.

    Unbuffered: sendfile reads by descriptor, and a buffered reader would cost an isatty ioctl and an
    lseek per open for nothing (the fallback reads in large chunks anyway).
    """
    file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by send_file
    st = os.fstat(file.fileno())
    # Inode, modification time and size: a new rendition is a new file (os.replace), so a new tag.
    etag = f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'
    return OpenVideo(st.st_size, st.st_mtime, etag, file)


@dataclass(frozen=True)
class Presentation:
    """How a file is answered: its type, how long caches keep it, and (a video) its download name."""

    content_type: str = "video/mp4"
    #: Cache-Control, after `private` when answered by a signed link, else after `public` if `public`.
    cache: str = "no-cache"
    public: bool = False
    #: Content-Disposition, or none.
    disposition: str | None = None


async def send_video(
    request: web.Request, path: Path, display_name: str, download: bool, private: bool = False
) -> web.StreamResponse:
    """`private`: answered by a signed link, which a shared cache must not keep for others."""
    shown = Presentation(disposition=content_disposition(display_name, download))
    return await send_file(request, path, shown, private, VideoNotFound(request.match_info.get("id", "")))


async def send_file(
    request: web.Request, path: str | Path, shown: Presentation, private: bool, missing: Exception
) -> web.StreamResponse:
    """A file with Range, a strong ETag and conditional requests; `missing` raised when it is not there."""
    try:
        # On the event loop, as nginx does: opening a file the service wrote (its inode and folder
        # cached) takes microseconds, and a thread hop costs ~0.3 ms of CPU a request (the GIL handed
        # back and forth between the loop and the pool's threads under load).
        video = open_video(path)
    except (FileNotFoundError, NotADirectoryError):  # deleted a moment ago, or never there
        raise missing from None
    try:

        async def send(response: web.StreamResponse, offset: int, count: int) -> None:
            await _send_bytes(request, response, video.file, offset, count)

        return await _respond(request, video, shown, private, send)
    finally:
        video.file.close()  # a read-only file: closing it does not wait on the disk


async def send_object(
    request: web.Request, store: ObjectStore, key: str, shown: Presentation, private: bool, missing: Exception
) -> web.StreamResponse:
    """An object of a store, as `send_file` answers a file (proxy delivery, SPEC §15): the
    validators from its HEAD, the bytes by a ranged read of that very version. Replaced in
    between, the answer is cut off (its headers said the old version), never mixed."""
    info = await store.head(key)
    if info is None:
        raise missing
    version = Version(info.size, info.modified, f'"{info.etag}"')
    timeout_s = request.app[SETTINGS].http.send_timeout_s

    async def send(response: web.StreamResponse, offset: int, count: int) -> None:
        sent = 0
        try:
            async for chunk in store.read(key, offset, offset + count, etag=info.etag):
                async with asyncio.timeout(timeout_s):
                    await response.write(chunk)
                sent += len(chunk)
        except TimeoutError:
            raise ConnectionResetError(f"the client took nothing for {timeout_s:g} s") from None
        except ObjectMissing:
            raise ConnectionResetError(f"{key} was replaced or removed while it was sent") from None
        if sent != count:
            raise ConnectionResetError(f"{key} ended after {sent} of {count} bytes")

    return await _respond(request, version, shown, private, send)


#: How long a redirect's presigned URL holds: long enough to start a download, short enough
#: that a URL passed on does not open the object for long (a player asks the service again).
REDIRECT_EXPIRES_S = 300


async def redirect_to_object(
    request: web.Request, store: ObjectStore, key: str, shown: Presentation, private: bool, missing: Exception
) -> web.StreamResponse:
    """Redirect delivery (SPEC §15): a 307 to a presigned URL of the object, so that its bytes,
    and Range, are served by the store, with the Content-Type the object was stored with.

    By proxy instead: a download (`attachment`: its file name is the service's to give, and
    a presigned URL cannot carry one on every store), and a store without URLs (a folder)."""
    if shown.disposition is not None and shown.disposition.startswith("attachment"):
        return await send_object(request, store, key, shown, private, missing)
    if await store.head(key) is None:
        raise missing
    url = await store.presign(key, REDIRECT_EXPIRES_S)
    if url is None:
        return await send_object(request, store, key, shown, private, missing)
    # Not kept by shared caches: the URL expires, and a signed link's answer is its holder's.
    return web.Response(status=307, headers={hdrs.LOCATION: url, hdrs.CACHE_CONTROL: "private, no-store"})


async def _respond(
    request: web.Request, video: Version, shown: Presentation, private: bool, send: BodySender
) -> web.StreamResponse:
    headers = {
        hdrs.ETAG: video.etag,
        # "no-cache": may be stored, but asked again (cheaply: 304) before reuse. By the browser
        # only, when signed.
        hdrs.CACHE_CONTROL: ("private, " if private else "public, " if shown.public else "") + shown.cache,
        hdrs.ACCEPT_RANGES: "bytes",
    }
    headers[hdrs.LAST_MODIFIED] = _last_modified(_seconds(video.mtime))
    if _not_modified(request, video):
        return web.StreamResponse(status=304, headers=headers)
    headers[hdrs.CONTENT_TYPE] = shown.content_type
    if shown.disposition is not None:
        headers[hdrs.CONTENT_DISPOSITION] = shown.disposition
    selected = _selected_range(request, video)
    if selected is UNSATISFIABLE:
        return error_response(
            416,
            f"range not satisfiable: the video has {video.size} bytes",
            {hdrs.CONTENT_RANGE: f"bytes */{video.size}", hdrs.ACCEPT_RANGES: "bytes", hdrs.ETAG: video.etag},
        )
    status, offset, count = 200, 0, video.size
    if isinstance(selected, tuple):
        offset, last = selected
        status, count = 206, last - offset + 1
        headers[hdrs.CONTENT_RANGE] = f"bytes {offset}-{last}/{video.size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = count
    sent = request.method != hdrs.METH_HEAD and count > 0
    try:
        await response.prepare(request)
        if sent:
            await send(response, offset, count)
        await response.write_eof()
    except ConnectionError as e:  # a player that cancels a range it no longer needs does this all the time
        log.info("a download of %s ended early: %s", request.rel_url.raw_path[:200], e or "client gone")
        if request.transport is not None:
            request.transport.abort()  # a short body must not pass for a whole one
        return response
    if sent:
        request[BYTES_SENT] = count  # sendfile bypasses aiohttp's count: the access log takes it from here
        request.app[BUS].emit(BytesMoved("out", count))
    return response


async def _send_bytes(
    request: web.Request, response: web.StreamResponse, file: BinaryIO, offset: int, count: int
) -> None:
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("connection lost")
    end = offset + count
    offset = _send_now(transport, file, offset, end)
    if offset == end:
        return
    timeout_s = request.app[SETTINGS].http.send_timeout_s
    loop = asyncio.get_running_loop()
    try:
        # Zero-copy from the page cache to the socket: memory stays flat whatever the size. In slices,
        # each with a deadline: a client that stops reading is cut off, not held forever.
        while offset < end:
            size = min(SEND_SLICE_BYTES, end - offset)
            try:
                async with asyncio.timeout(timeout_s):
                    await loop.sendfile(transport, file, offset, size)
            except TimeoutError:
                transport.abort()
                raise ConnectionResetError(
                    f"the client took nothing for {timeout_s:g} s (send_timeout_s)"
                ) from None
            offset += size
    except NotImplementedError:  # TLS, or a platform without sendfile (found on the first slice)
        file.seek(offset)
        while offset < end:
            chunk = await asyncio.to_thread(file.read, min(FALLBACK_CHUNK_BYTES, end - offset))
            if not chunk:
                break
            await response.write(chunk)
            offset += len(chunk)


#: sendfile errors that mean "not here" (a file system or socket without it), not a broken connection.
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP, errno.EOVERFLOW})


def _send_now(transport: asyncio.Transport, file: BinaryIO, offset: int, end: int) -> int:
    """What the socket takes at once, by one sendfile call on it; the offset reached.

    On loopback or a fast link a whole segment usually fits in the socket's buffer: it is sent
    then and there, without the event loop's sendfile (which, for every call, stops reading,
    stats and seeks the file, and waits one more turn of the loop for the socket to be writable
    again before it reports the bytes sent). The rest, if any, goes through it, with its deadline.
    Only on a plain TCP transport whose own buffer is empty (the head is out), so nothing
    is reordered; never under TLS.
    """
    sock = transport.get_extra_info("socket")
    if (
        sock is None
        or transport.get_extra_info("sslcontext") is not None
        or transport.get_write_buffer_size() != 0
    ):
        return offset
    try:
        return offset + os.sendfile(sock.fileno(), file.fileno(), offset, end - offset)
    except (BlockingIOError, InterruptedError):
        return offset
    except OSError as e:
        if e.errno in _NO_SENDFILE:
            return offset  # the event loop's path decides (its own fallback, or NotImplementedError)
        raise


def _not_modified(request: web.Request, video: Version) -> bool:
    """If-None-Match (weak comparison), else If-Modified-Since."""
    if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or video.etag in tags
    since = _http_date(request.headers.get(hdrs.IF_MODIFIED_SINCE))
    return since is not None and _seconds(video.mtime) <= since


class _Unsatisfiable:
    """`_selected_range`'s answer when the Range cannot be served at all."""


UNSATISFIABLE = _Unsatisfiable()


def _selected_range(request: web.Request, video: Version) -> tuple[int, int] | _Unsatisfiable | None:
    """(first, last) byte of a single range; None for the whole file; UNSATISFIABLE.

    Several ranges are answered with the whole file (RFC 9110 allows it, and no
    player needs multipart/byteranges); a Range that does not parse is ignored.
    """
    header = request.headers.get(hdrs.RANGE)
    if header is None or not _if_range_holds(request, video):
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE.match(spec)
    if match is None or (not match[1] and not match[2]):
        return None
    size = video.size
    if not match[1]:  # suffix: the last N bytes
        suffix = _position(match[2])
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size - 1
    first = _position(match[1])
    if match[2] and _position(match[2]) < first:
        return None  # not a valid range: ignored, as RFC 9110 says
    if first >= size:
        return UNSATISFIABLE
    last = _position(match[2]) if match[2] else size - 1
    return first, min(last, size - 1)


def _position(digits: str) -> int:
    """A byte position of ASCII digits; one of thousands of digits is simply past any end."""
    digits = digits.lstrip("0") or "0"
    return HUGE if len(digits) > HUGE_DIGITS else int(digits)


def _if_range_holds(request: web.Request, video: Version) -> bool:
    """If-Range: the client's copy must be this very version (strong ETag, or the exact date)."""
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        return if_range == video.etag  # weak tags never match here
    return _http_date(if_range) == _seconds(video.mtime)


def _seconds(mtime: float) -> int:
    """A modification time as Last-Modified shows it (aiohttp rounds up to the second)."""
    return math.ceil(mtime)


@functools.lru_cache(maxsize=1024)
def _last_modified(second: int) -> str:
    """Last-Modified of a file modified in that second: as aiohttp's setter writes it, formatted
    once per file (strftime and gmtime cost more than the rest of the header's handling)."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second))


def _http_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def content_disposition(display_name: str, download: bool) -> str:
    """inline (play) or attachment (save), with an ASCII name and the real one (RFC 6266, RFC 8187)."""
    kind = "attachment" if download else "inline"
    name = display_name or "video.mp4"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._ ()-]", "_", ascii_name).strip() or "video.mp4"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
