"""The tus 1.0 resumable-upload protocol over HTTP, at /uploads/: headers in, headers out.

Extensions: creation, creation-with-upload, expiration, checksum, termination.
The work is `ResumableUploads`' (videosvc/uploads/resumable.py); the grammar of
the tus headers is here. Errors are JSON `{"error"}` like everywhere, with the
statuses tus names for them.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
from typing import Any

from aiohttp import hdrs, web
from aiohttp_apigami import docs
from aiohttp_cors import APP_CONFIG_KEY, CorsViewMixin

from ..errors import InvalidRequest, UnsupportedMedia, UnsupportedProtocol, UploadTooLarge
from ..uploads.chunks import CHECKSUMS, Checksum, Chunk
from ..uploads.resumable import NewUpload, UploadState
from .errortable import documented
from .keys import API_KEY, SETTINGS, UPLOAD_ID, UPLOADS
from .numbers import MAX_DIGITS, parse_count
from .requests import client_of, public_url
from .uploads import BodyLimits, BodyStream

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,expiration,checksum,termination"
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
PREFIX = "/uploads"

#: What a page in another origin must be allowed to send and to read, for tus-js-client and Uppy.
CORS_ALLOW_HEADERS = (
    "Authorization", "Content-Type", "Tus-Resumable", "Upload-Length", "Upload-Metadata", "Upload-Offset",
    "Upload-Checksum", "Upload-Defer-Length", "Upload-Concat", "X-HTTP-Method-Override", "X-Requested-With",
    "Range", "If-Range", "If-None-Match",
)  # fmt: skip
CORS_EXPOSE_HEADERS = (
    "Location", "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Expires", "Tus-Resumable",
    "Tus-Version", "Tus-Max-Size", "Tus-Extension", "Tus-Checksum-Algorithm", "Content-Range", "ETag",
    "Link", "Retry-After",
)  # fmt: skip


def _header(name: str, description: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {
        "in": "header",
        "name": name,
        "required": required,
        "schema": {"type": "string", **schema},
        "description": description,
    }


TUS_RESUMABLE = _header("Tus-Resumable", "The tus version spoken: 1.0.0", required=True, enum=[TUS_VERSION])
UPLOAD_ID_PARAMETER = {
    "in": "path",
    "name": "id",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": "The upload's id (from Location); the stored video's id once it is complete",
}
OCTETS_BODY = {
    "required": False,
    "content": {OFFSET_OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
}


#: The Upload-Metadata header, whole; its values are base64.
MAX_METADATA_BYTES = 4096


def _header_int(request: web.Request, name: str) -> int | None:
    """A tus integer header: ASCII digits only, at most MAX_DIGITS of them; None when absent."""
    value = request.headers.get(name)
    if value is None:
        return None
    count = parse_count(value.strip())
    if count is None:
        raise InvalidRequest(f"{name} must be a non-negative integer of at most {MAX_DIGITS} digits")
    return count


def parse_checksum(header: str) -> Checksum:
    """`Upload-Checksum: <algorithm> <base64 digest>`; 400 for what cannot be checked."""
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise InvalidRequest(
            f"Upload-Checksum: algorithm {algorithm[:20]!r} is not supported;"
            f" supported: {', '.join(CHECKSUMS)}"
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("Upload-Checksum: the digest is not valid base64") from None
    return Checksum(algorithm, digest)


def parse_metadata(header: str) -> dict[str, bytes]:
    """`Upload-Metadata: key base64,key2 base64,...` (a value may be absent); 400 for anything else."""
    if len(header) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes")
    pairs: dict[str, bytes] = {}
    if not header.strip():
        return pairs
    for item in header.split(","):
        key, _, encoded = item.strip().partition(" ")
        if not key or not key.isascii() or not key.isprintable() or " " in key:
            raise InvalidRequest(
                "Upload-Metadata: each key must be printable ASCII, without spaces or commas"
            )
        if key in pairs:
            raise InvalidRequest(f"Upload-Metadata: the key {key[:40]!r} is given twice")
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"Upload-Metadata: the value of {key[:40]!r} is not valid base64") from None
    return pairs


def _expires(state: UploadState) -> str:
    return email.utils.formatdate(state.expires_at, usegmt=True)


class _TusView(CorsViewMixin, web.View):
    """OPTIONS is tus discovery, or a CORS preflight when a browser asks for one."""

    @docs(
        tags=["uploads (tus)"],
        summary="tus discovery (or a CORS preflight)",
        description="Tus-Version, Tus-Extension, Tus-Max-Size (= max_upload_bytes), Tus-Checksum-Algorithm.",
        security=[],
        responses={204: {"description": "What this server supports, in headers"}},
    )
    async def options(self) -> web.StreamResponse:
        preflight = self.request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD) is not None
        if preflight and APP_CONFIG_KEY in self.request.app:  # only when cors_origins are set
            response: web.StreamResponse = await self._preflight_handler(self.request)
            return response
        settings = self.request.app[SETTINGS].uploads
        return web.Response(
            status=204,
            headers={
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": EXTENSIONS,
                "Tus-Max-Size": str(settings.max_upload_bytes),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            },
        )

    def _check_version(self) -> None:
        version = self.request.headers.get("Tus-Resumable")
        if version != TUS_VERSION:
            raise UnsupportedProtocol(
                f"Tus-Resumable must be {TUS_VERSION} (got {(version or 'none')[:20]!r}); see Tus-Version"
            )

    def _body(self) -> Chunk:
        """The request's body as a chunk of the upload; its headers are checked before any byte is read."""
        request = self.request
        if request.content_type != OFFSET_OCTET_STREAM:
            raise UnsupportedMedia(
                f"a tus PATCH must have Content-Type: {OFFSET_OCTET_STREAM}"
                f" (got {request.content_type[:60]!r})"
            )
        header = request.headers.get("Upload-Checksum")
        checksum = parse_checksum(header) if header is not None else None
        stream = BodyStream(request.content, BodyLimits.of(request.app[SETTINGS]))
        stream.file_mode()
        return Chunk(_chunks(stream), request.content_length, checksum)


async def _chunks(stream: BodyStream) -> Any:
    while chunk := await stream.read(1024 * 1024):
        yield chunk


class UploadsView(_TusView):
    """POST /uploads/: creation, and creation-with-upload."""

    @docs(
        tags=["uploads (tus)"],
        summary="Create a resumable upload (tus creation, creation-with-upload)",
        operation_id="createUpload",
        description=(
            "Upload-Length is the file's size (1 to max_upload_bytes); Upload-Metadata may carry `filename`"
            " (base64). A body of application/offset+octet-stream is its first bytes. The Location is the"
            " upload's URL; its id will be the video's."
        ),
        parameters=[
            TUS_RESUMABLE,
            _header(
                "Upload-Length", "The whole file's size in bytes", required=True, pattern="^[0-9]{1,19}$"
            ),
            _header("Upload-Metadata", "key base64,key base64 (filename is the display name)"),
        ],
        requestBody=OCTETS_BODY,
        responses={
            201: {"description": "Created: Location, Upload-Offset, Upload-Expires"},
            **documented(400, 408, 412, 413, 415, 429, 507),
        },
    )
    async def post(self) -> web.Response:
        self._check_version()
        request = self.request
        if "X-HTTP-Method-Override" in request.headers:
            raise web.HTTPMethodNotAllowed(
                request.headers["X-HTTP-Method-Override"][:20],
                ["POST", "OPTIONS"],
                text="X-HTTP-Method-Override means nothing on /uploads/: send it to an upload's URL",
            )
        if "Upload-Concat" in request.headers:
            raise InvalidRequest("Upload-Concat: concatenation is not supported by this server")
        if request.headers.get("Upload-Defer-Length") is not None:
            raise InvalidRequest("Upload-Defer-Length is not supported: send Upload-Length")
        try:
            length = _header_int(request, "Upload-Length")
        except InvalidRequest:
            if parse_count(request.headers["Upload-Length"].strip(), max_digits=4 * MAX_DIGITS) is None:
                raise
            raise UploadTooLarge(
                request.app[SETTINGS].uploads.max_upload_bytes
            ) from None  # a number, too large
        if length is None:
            raise InvalidRequest("Upload-Length is required: the size of the whole file, in bytes")
        with_body = bool(request.content_length) or request.headers.get(hdrs.TRANSFER_ENCODING) is not None
        metadata = request.headers.get("Upload-Metadata", "")
        fields = parse_metadata(metadata)
        name = fields.get("filename") or fields.get("name") or b""
        new = NewUpload(
            length=length,
            filename=name.decode("utf-8", "replace"),
            metadata=metadata,
            owner=request.get(API_KEY),
            client=client_of(request),
        )
        state = await request.app[UPLOADS].create(new, self._body() if with_body else None)
        return web.Response(
            status=201,
            headers={
                "Location": public_url(request, f"{PREFIX}/{state.id}"),
                "Upload-Offset": str(state.offset),
                "Upload-Expires": _expires(state),
            },
        )


class UploadView(_TusView):
    """/uploads/{id}: HEAD (where is it), PATCH (more bytes), DELETE (termination)."""

    @docs(
        tags=["uploads (tus)"],
        summary="Where the upload is: Upload-Offset (bytes on disk) and Upload-Length",
        operation_id="uploadOffset",
        parameters=[UPLOAD_ID_PARAMETER, TUS_RESUMABLE],
        responses={200: {"description": "Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires"},
                   **documented(403, 404, 410, 412)},
    )  # fmt: skip
    async def head(self) -> web.Response:
        self._check_version()
        state = await self.request.app[UPLOADS].state(self.request[UPLOAD_ID], self.request.get(API_KEY))
        headers = {
            "Upload-Offset": str(state.offset),
            "Upload-Length": str(state.length),
            "Upload-Expires": _expires(state),
            hdrs.CACHE_CONTROL: "no-store",
        }
        if state.metadata:
            headers["Upload-Metadata"] = state.metadata
        return web.Response(status=200, headers=headers)

    @docs(
        tags=["uploads (tus)"],
        summary="Append bytes at Upload-Offset; the last byte stores the video",
        operation_id="appendToUpload",
        description=(
            "Answers 204 with the new Upload-Offset. With Upload-Checksum (`sha1|md5|sha256|sha512 <base64>`)"
            " a mismatching chunk is discarded (460). When the upload is complete, the answer comes once the"
            " video is stored, under the upload's id; refused content is the same 415/507 as POST /file/."
        ),
        parameters=[
            UPLOAD_ID_PARAMETER,
            TUS_RESUMABLE,
            _header("Upload-Offset", "Where this chunk starts", required=True, pattern="^[0-9]{1,19}$"),
            _header("Upload-Checksum", "algorithm and base64 digest of this chunk"),
        ],
        requestBody={**OCTETS_BODY, "required": True},
        responses={
            204: {"description": "Appended: Upload-Offset, Upload-Expires"},
            **documented(400, 403, 404, 408, 409, 410, 412, 413, 415, 460, 507),
        },
    )
    async def patch(self) -> web.Response:
        self._check_version()
        request = self.request
        offset = _header_int(request, "Upload-Offset")
        if offset is None:
            raise InvalidRequest("Upload-Offset is required: where this chunk starts (HEAD tells)")
        state = await request.app[UPLOADS].append(
            request[UPLOAD_ID], request.get(API_KEY), offset, self._body()
        )
        headers = {"Upload-Offset": str(state.offset), "Upload-Expires": _expires(state)}
        if state.complete:
            # The upload is a stored video now, under the same id.
            headers[hdrs.LINK] = f'</file/{state.id}/>; rel="related"'
        return web.Response(status=204, headers=headers)

    @docs(
        tags=["uploads (tus)"],
        summary="Terminate an upload: its bytes are removed",
        operation_id="terminateUpload",
        parameters=[UPLOAD_ID_PARAMETER, TUS_RESUMABLE],
        responses={204: {"description": "Terminated"}, **documented(403, 404, 410, 412)},
    )
    async def delete(self) -> web.Response:
        self._check_version()
        await self.request.app[UPLOADS].terminate(self.request[UPLOAD_ID], self.request.get(API_KEY))
        return web.Response(status=204)

    @docs(
        tags=["uploads (tus)"],
        summary="X-HTTP-Method-Override: PATCH, DELETE or HEAD, for clients that can only POST",
        operation_id="overrideUploadMethod",
        parameters=[
            UPLOAD_ID_PARAMETER,
            TUS_RESUMABLE,
            _header(
                "X-HTTP-Method-Override", "The method meant", required=True, enum=["PATCH", "DELETE", "HEAD"]
            ),
        ],
        responses={200: {"description": "As HEAD"}, 204: {"description": "As PATCH or DELETE"},
                   **documented(400, 403, 404, 409, 410, 412, 413, 415, 460)},
    )  # fmt: skip
    async def post(self) -> web.StreamResponse:
        """X-HTTP-Method-Override: for clients (and proxies) that can only send POST."""
        method = self.request.headers.get("X-HTTP-Method-Override", "").strip().upper()
        if method == "PATCH":
            return await self.patch()
        if method == "DELETE":
            return await self.delete()
        if method == "HEAD":
            return await self.head()
        raise InvalidRequest(
            "POST to an upload needs X-HTTP-Method-Override: PATCH, DELETE or HEAD"
            f" (got {method[:20]!r}); or send the method itself"
        )


async def tus_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer under /uploads says which tus it speaks."""
    if request.path.startswith(PREFIX):
        response.headers["Tus-Resumable"] = TUS_VERSION
        if response.status == 412:
            response.headers["Tus-Version"] = TUS_VERSION
