"""A small synchronous client of the public API (requests and tuspy), for the command line.

It speaks HTTP only: nothing here imports the server's modules. It trusts no server (SPEC §12).
Every answer it hands on has been checked (shapes.py). The API key goes only to the URL the user
gave (scheme, host and port): requests drops the Authorization header when a redirect leaves it,
and an upload URL (tus Location) on another origin is refused before anything is sent to it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError
from tusclient.fingerprint.interface import Fingerprint
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader.uploader import Uploader

from . import shapes
from .shapes import Malformed

#: (connect, read) seconds. The read limit is long: the last tus PATCH answers once the video is stored.
TIMEOUT = (10, 600)
#: A live stream sends a heartbeat every 15 s; a minute of silence means the server is gone.
STREAM_TIMEOUT = (10, 60)
DOWNLOAD_CHUNK = 1024 * 1024
#: A thumbnail larger than this is not one (1920 wide JPEGs are a few hundred KB).
MAX_THUMBNAIL_BYTES = 16 * 1024 * 1024
#: API paths a user may paste along with the server's address (from the docs, or an address bar).
API_PATHS = ("/file", "/uploads")
DEFAULT_PORTS = {"http": 80, "https": 443}

Progress = Callable[[int], object]


class ApiError(Exception):
    """The server answered with an error: `status` and its own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(Exception):
    """No answer at all: the server is down, the URL is wrong, or the network failed."""


class BadUrl(ValueError):
    """What the user gave as the server's URL cannot be one."""


def base_url(text: str) -> str:
    """The server's base URL, from what a user typed. "host:port" means http://host:port. An API
    path pasted along with it (.../file/, .../uploads/) is dropped. Any other path is kept, for a
    server behind a proxy that serves it under one."""
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    bad = BadUrl(f"--url must look like http://host:port, not {text!r}")
    try:
        parts = urlsplit(url)
        origin(url)  # a port that is not a number, or out of range, raises ValueError
    except ValueError:
        raise bad from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.query or parts.fragment:
        raise bad
    path = parts.path.rstrip("/")
    for api_path in API_PATHS:
        if path.endswith(api_path):
            path = path.removesuffix(api_path)
            break
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def origin(url: str) -> tuple[str, str, int]:
    """Scheme, host and port: what two URLs must share to be the same server (a browser's "origin")."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", parts.port or DEFAULT_PORTS.get(scheme, 0)


def _error(response: requests.Response) -> ApiError:
    try:
        message = str(shapes.decode(response.content)["error"])  # type: ignore[index]
    except (Malformed, KeyError, TypeError):  # not JSON, not an object, no "error"
        message = f"the server answered {response.status_code} {response.reason}"
    return ApiError(response.status_code, message)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next: str | None


class UploadFingerprint(Fingerprint):
    """Which stored tus URL belongs to a file: the server, the file's path, size, mtime and first
    64 KB (tuspy's own uses only the last two, and would resume one server's upload on another)."""

    def __init__(self, server: str) -> None:
        self._server = server

    def get_fingerprint(self, fs: IO[bytes]) -> str:
        stat = os.fstat(fs.fileno())
        digest = hashlib.sha256(fs.read(65536)).hexdigest()
        fs.seek(0)
        name = os.path.realpath(getattr(fs, "name", ""))
        return f"{self._server}|{name}|{stat.st_size}|{stat.st_mtime_ns}|{digest}"


class ResumingUploader(Uploader):
    """tuspy's uploader, with its retries (a HEAD for the offset, then the chunk again) kept for what
    a retry can fix: no answer, 5xx, 409 and 423. The server's refusals (415, 413...) end it.

    What the server answers is checked before it is used. The upload's URL must be on the tus
    endpoint's origin, or the API key and the file would go to another host. Each offset must lie
    within the file, and each PATCH must move it forward, or the same bytes would be sent forever.
    The file is one open stream (`file_stream`); tuspy would otherwise open it again for each chunk."""

    def __init__(self, *, client: TusClient, **options: Any) -> None:
        self.endpoint: str = client.url  # first: the constructor checks a kept URL against it
        super().__init__(client=client, **options)

    def set_url(self, url: str) -> None:
        # Both a new upload's Location and a URL kept by an earlier run (None if there is none) come
        # through here, before any request is made to them.
        if url and not _same_origin(url, self.endpoint):
            raise Malformed(f"its upload URL {url} is not on {self.endpoint}: refused")
        super().set_url(url)

    def get_offset(self) -> int:
        return self._offset(super().get_offset)

    def upload_chunk(self) -> None:
        # tuspy's, with the offset checked. Until the answer is read, self.offset is where the last PATCH
        # (after any retries) started.
        self._retried = 0
        self._do_request()
        sent_from = self.offset
        headers: dict[str, str] = self.request.response_headers if self.request else {}
        answered = self._offset(lambda: headers.get("upload-offset"))
        if answered <= sent_from:
            raise Malformed(f"the upload stood still at byte {answered}")
        self.offset = answered

    def _offset(self, read: Callable[[], Any]) -> int:
        try:
            offset = int(read())
        except (TypeError, ValueError):  # missing, or not a number
            raise Malformed("its Upload-Offset is not a number") from None
        if not 0 <= offset <= self.stop_at:
            raise Malformed(f"its Upload-Offset {offset} is outside the file's {self.stop_at} bytes")
        return offset

    def _get_fingerprint(self) -> str:
        # tuspy's closes the stream after reading it, and the stream is the file being uploaded.
        fingerprint: str = self.fingerprinter.get_fingerprint(self.get_file_stream())
        return fingerprint

    def _retry_or_cry(self, error: TusCommunicationError) -> None:
        status = error.status_code
        if status is not None and 400 <= status < 500 and status not in (409, 423):
            raise error
        super()._retry_or_cry(error)


def _same_origin(url: str, base: str) -> bool:
    try:
        return origin(url) == origin(base)
    except ValueError:  # a port that is not one
        return False


class Client:
    def __init__(self, url: str, api_key: str | None = None) -> None:
        """`url` as the user typed it (see base_url); BadUrl if it cannot be a server's."""
        self.url = base_url(url)
        self.session = requests.Session()
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.session.headers.update(self.headers)
        self.session.headers["User-Agent"] = "videosvc-cli"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.session.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        try:
            response = self.session.request(method, self.url + path, **kwargs)
        except requests.ConnectionError as e:
            raise Unreachable(f"cannot reach {self.url}: {_reason(e)}") from None
        except requests.Timeout:
            raise Unreachable(f"{self.url} did not answer in time") from None
        except requests.RequestException as e:  # too many redirects, a body that does not decode...
            raise Malformed(_reason(e)) from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    # -- the catalogue and one video ---------------------------------------------------------

    def page(self, limit: int, cursor: str | None = None) -> Page:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        items, next_cursor = shapes.page(shapes.decode(self._request("GET", "/file/", params=params).content))
        return Page(items, next_cursor)

    def catalogue(self) -> Iterator[dict[str, Any]]:
        """Every video, newest first, page after page."""
        cursor = None
        while True:
            page = self.page(100, cursor)
            yield from page.items
            if not page.next:
                return
            cursor = page.next

    def info(self, video_id: str) -> dict[str, Any]:
        return shapes.video(shapes.decode(self._request("GET", f"/file/{video_id}/").content))

    def resize(self, video_id: str, width: int, height: int) -> None:
        self._request("PATCH", f"/file/{video_id}/", json={"width": width, "height": height})

    def delete(self, video_id: str) -> None:
        self._request("DELETE", f"/file/{video_id}/")

    def thumbnail(self, video_id: str, fmt: str, time: float | None, width: int | None) -> bytes:
        """The frame at `time` (default: the poster's), `width` wide, as `fmt` (jpg or webp)."""
        params = {"time": None if time is None else f"{time:g}", "width": width}
        response = self._request("GET", f"/file/{video_id}/thumbnail.{fmt}", params=params, stream=True)
        with response:
            try:
                data: bytes = response.raw.read(MAX_THUMBNAIL_BYTES + 1, decode_content=True)
            except (requests.RequestException, OSError) as e:
                raise Unreachable(f"lost the connection to {self.url}: {_reason(e)}") from None
        if len(data) > MAX_THUMBNAIL_BYTES:
            raise Malformed(f"a thumbnail of more than {MAX_THUMBNAIL_BYTES} bytes")
        return data

    def follow(self, video_id: str) -> Iterator[dict[str, Any]]:
        """The video's GET shape at once and at each change (its server-sent events), until it is deleted."""
        response = self._request("GET", f"/file/{video_id}/events", stream=True, timeout=STREAM_TIMEOUT)
        with response:
            event, data = "message", []
            try:
                for raw in response.iter_lines():
                    line = raw.decode("utf-8", "replace")
                    if line:
                        field, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if field == "event":
                            event = value
                        elif field == "data":
                            data.append(value)
                        continue
                    if data and event == "video":
                        yield shapes.video(shapes.decode("\n".join(data)))
                    elif event == "deleted":
                        return
                    event, data = "message", []
            except requests.RequestException as e:
                raise Unreachable(f"lost the connection to {self.url}: {_reason(e)}") from None

    # -- bytes in and out ------------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        chunk_bytes: int,
        state_file: Path,
        on_start: Callable[[int], None],
        progress: Progress,
    ) -> str:
        """A tus upload, resumable across runs: the upload's URL is kept in `state_file` under the file's
        fingerprint until it is done. Calls on_start(offset) once, progress(bytes) after each chunk;
        returns the video's id."""
        state_file.parent.mkdir(parents=True, exist_ok=True)
        storage = FileStorage(str(state_file))
        try:
            with path.open("rb") as f, self._tus_errors():
                key = UploadFingerprint(self.url).get_fingerprint(f)
                uploader = self._uploader(path, f, chunk_bytes, storage, key)
                if not uploader.url:
                    uploader.set_url(uploader.create_url())
                    uploader.offset = 0
                on_start(uploader.offset)
                while uploader.offset < uploader.stop_at:
                    before = uploader.offset
                    uploader.upload_chunk()
                    progress(uploader.offset - before)
                storage.remove_item(key)  # done: nothing to resume
                return _upload_id(str(uploader.url))
        finally:
            storage.close()

    def _uploader(
        self, path: Path, f: IO[bytes], chunk_bytes: int, storage: FileStorage, key: str
    ) -> ResumingUploader:
        """An uploader that resumes the upload kept under `key`, if there is one the server still knows."""
        tus = TusClient(self.url + "/uploads/", headers=self.headers)
        options: dict[str, Any] = {
            "file_stream": f,
            "chunk_size": chunk_bytes,
            "metadata": {"filename": path.name},
            "store_url": True,
            "url_storage": storage,
            "fingerprinter": UploadFingerprint(self.url),
            "retries": 5,
            "retry_delay": 2,
        }
        try:
            return ResumingUploader(client=tus, **options)
        except Malformed:
            storage.remove_item(key)  # refused once, refused each time: the next run starts afresh
            raise
        except TusCommunicationError as e:
            if e.status_code is None:
                raise  # no answer: the kept URL may be good still, once the server is back
            storage.remove_item(key)  # a kept URL the server no longer knows (expired): start again
        return ResumingUploader(client=tus, **options)

    @contextmanager
    def _tus_errors(self) -> Iterator[None]:
        """tuspy's errors, as this module's."""
        try:
            yield
        except TusCommunicationError as e:  # TusUploadFailed too
            raise self._tus_error(e) from None
        except requests.RequestException as e:
            raise Unreachable(f"lost the connection to {self.url}: {_reason(e)}") from None

    def _tus_error(self, error: TusCommunicationError) -> Exception:
        status = error.status_code
        if status is None:  # no answer (tuspy wraps requests' error)
            return Unreachable(f"cannot reach {self.url}: {_reason(error)}")
        if status < 400:  # a success without what tus needs
            return Malformed(f"its tus answer ({status}) has no Location or no Upload-Offset")
        try:
            message = str(shapes.decode(error.response_content)["error"])  # type: ignore[index]
        except (Malformed, KeyError, TypeError):
            message = f"the server answered {status}"
        return ApiError(int(status), message)

    def download(
        self,
        video_id: str,
        out: IO[bytes],
        offset: int,
        etag: str | None,
        original: bool,
        on_start: Callable[[int, int, str | None], None],
        progress: Progress,
    ) -> None:
        """The video's bytes into `out`, from `offset` when `etag` (the partial file's) still holds.

        on_start(offset, total, etag) is called with what the server will send: from 0 if the
        video changed since the partial file was written (If-Range)."""
        headers = {}
        if offset and etag:
            headers = {"Range": f"bytes={offset}-", "If-Range": etag}
        params = {"variant": "original"} if original else {}
        response = self._request(
            "GET", f"/file/{video_id}/content", headers=headers, params=params, stream=True
        )
        with response:
            start = offset if response.status_code == 206 else 0
            # urllib3's reading of Content-Length: None when there is none, or it is not a number.
            total = (response.raw.length_remaining or 0) + start
            if start == 0:
                out.seek(0)
                out.truncate()
            on_start(start, total, response.headers.get("ETag"))
            try:
                for chunk in response.iter_content(DOWNLOAD_CHUNK):
                    out.write(chunk)
                    progress(len(chunk))
            except requests.RequestException as e:
                raise Unreachable(f"lost the connection to {self.url}: {_reason(e)}") from None


def _upload_id(url: str) -> str:
    """The video's id: the last segment of its upload's URL (/uploads/{id}), which the server chose."""
    segment = urlsplit(url).path.rstrip("/").rpartition("/")[2]
    if not shapes.is_uuid(segment):
        raise Malformed(f"its upload URL {url} does not end in a video's id")
    return segment


def _reason(error: Exception) -> str:
    """The innermost cause, which says what happened (connection refused, name not known...)."""
    while error.__context__ is not None and error.__context__ is not error:
        error = error.__context__  # type: ignore[assignment]
    text = str(error)
    return text.split("] ", 1)[-1] if "] " in text else text
