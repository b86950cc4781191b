"""Every error status the API answers, in one table: the error middleware and the OpenAPI document read it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import (
    BodyTimeout,
    ChecksumMismatch,
    ClientGone,
    EmptyUpload,
    FormatUnavailable,
    InsufficientStorage,
    InvalidRequest,
    JobAlreadyActive,
    JobQueueUnavailable,
    NotAnMp4,
    OffsetMismatch,
    ServiceBusy,
    TooMany,
    UnsupportedMedia,
    UnsupportedProtocol,
    UploadForbidden,
    UploadGone,
    UploadNotFound,
    UploadTooLarge,
    VideoNotFound,
    VideoServiceError,
)
from .schemas import ErrorSchema


@dataclass(frozen=True)
class ErrorStatus:
    status: int
    #: What the OpenAPI document says this status means.
    description: str
    #: The domain errors answered with it.
    errors: tuple[type[VideoServiceError], ...] = ()


TABLE = (
    ErrorStatus(400, "Bad request: the body, a field or a parameter is invalid (the message names it)",
                (InvalidRequest, EmptyUpload)),
    ErrorStatus(401, "Missing or wrong API key (only when api_keys is set)"),
    ErrorStatus(403, "A signed link that expired or was altered; another API key's upload",
                (UploadForbidden,)),
    ErrorStatus(404, "No video (or upload) with this id, or a malformed id", (VideoNotFound, UploadNotFound)),
    ErrorStatus(408, "The body stalled (upload_idle_timeout_s) or was late (body_timeout_s)", (BodyTimeout,)),
    ErrorStatus(405, "Wrong method for the route (Allow lists the right ones)"),
    ErrorStatus(406, "A thumbnail format this server's ffmpeg cannot write (WebP without libwebp)",
                (FormatUnavailable,)),
    ErrorStatus(409, "A resize of this video is already queued or running; a tus PATCH at the wrong offset",
                (JobAlreadyActive, OffsetMismatch)),
    ErrorStatus(410, "The resumable upload expired or was terminated: start a new one", (UploadGone,)),
    ErrorStatus(412, "A Tus-Resumable version this server does not speak (see Tus-Version)",
                (UnsupportedProtocol,)),
    ErrorStatus(413, "The upload is larger than max_upload_bytes, or the JSON body than max_json_bytes",
                (UploadTooLarge,)),
    ErrorStatus(416, "The byte range is past the end of the video (Content-Range says its size)"),
    ErrorStatus(415, "Not an MP4 with a video stream, over an input limit, or content-coded",
                (NotAnMp4, UnsupportedMedia)),
    ErrorStatus(429, "Too many queued jobs, unfinished uploads, live streams or thumbnails; see Retry-After",
                (TooMany,)),
    ErrorStatus(460, "Checksum Mismatch: the tus chunk does not match its Upload-Checksum; it was discarded",
                (ChecksumMismatch,)),
    ErrorStatus(500, "Internal error (details in the server log)"),
    ErrorStatus(503, "The service cannot take this now (shutting down, or out of resources)",
                (JobQueueUnavailable, ServiceBusy)),
    ErrorStatus(507, "Not enough free disk space", (InsufficientStorage,)),
)  # fmt: skip

#: Reason phrases for the statuses Python's http module does not know.
REASONS = {460: "Checksum Mismatch"}

#: Not a response at all: the client is gone. The access log shows 499, as nginx's does.
CLIENT_GONE_STATUS = 499

STATUS_FOR_ERROR: Mapping[type[VideoServiceError], int] = {
    **{error: row.status for row in TABLE for error in row.errors},
    ClientGone: CLIENT_GONE_STATUS,
}
_DESCRIPTIONS = {row.status: row.description for row in TABLE}
#: Possible on every route: the key check, and a bug.
ALWAYS = (401, 500)


def status_for(error: VideoServiceError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_FOR_ERROR:
            return STATUS_FOR_ERROR[cls]
    return 500


def documented(*statuses: int) -> dict[int, dict[str, Any]]:
    """The `responses` of an operation's OpenAPI entry for these error statuses (and ALWAYS)."""
    return {s: {"schema": ErrorSchema, "description": _DESCRIPTIONS[s]} for s in sorted({*statuses, *ALWAYS})}
