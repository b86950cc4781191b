"""Domain errors. They say what went wrong; only the web layer picks a status."""

from __future__ import annotations

import errno


class VideoServiceError(Exception):
    """Base class; `str(error)` is a message fit for the client."""


class InvalidRequest(VideoServiceError):
    """The request itself is malformed (bad JSON, bad field, no file, too many form parts)."""


class VideoNotFound(VideoServiceError):
    #: Ids are echoed in messages; a path-sized one is cut to this.
    ECHO_CHARS = 64

    def __init__(self, video_id: str) -> None:
        shown = video_id if len(video_id) <= self.ECHO_CHARS else video_id[: self.ECHO_CHARS] + "..."
        super().__init__(f"no video with id {shown!r}")


class RenditionNotReady(VideoNotFound):
    """A file of the HLS package that is not there: not built yet, failed, or not a package file."""

    def __init__(self, path: str) -> None:
        shown = path if len(path) <= self.ECHO_CHARS else path[: self.ECHO_CHARS] + "..."
        VideoServiceError.__init__(
            self,
            f"no {shown!r} in this video's HLS package: not ready (see renditions in GET), or no such file",
        )


class PictureNotReady(VideoNotFound):
    """A poster or storyboard that is not there: not made yet, failed, or pictures are off."""

    def __init__(self) -> None:
        VideoServiceError.__init__(
            self, "this video's pictures are not ready: see posterUrl and pictures in GET /file/{id}/"
        )


class FormatUnavailable(VideoServiceError):
    """A picture format the ffmpeg in use cannot write (WebP without libwebp)."""


class OriginalNotKept(VideoNotFound):
    def __init__(self) -> None:
        VideoServiceError.__init__(
            self, "variant=original: this service keeps no originals (keep_original = false)"
        )


class JobAlreadyActive(VideoServiceError):
    def __init__(self, video_id: str) -> None:
        super().__init__(
            f"video {video_id} already has a resize queued or running; wait until processing is false"
        )


class TooMany(VideoServiceError):
    """A shared resource (the job queue, pending uploads) is full, overall or for this client."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManyJobs(TooMany):
    pass


class TooManyUploads(TooMany):
    pass


class TooManyThumbnails(TooMany):
    pass


class TooManyStreams(TooMany):
    pass


class EmptyUpload(VideoServiceError):
    pass


class UploadTooLarge(VideoServiceError):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the upload is larger than the limit of {limit_bytes} bytes (max_upload_bytes)")
        self.limit_bytes = limit_bytes


class NotAnMp4(VideoServiceError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"not an MP4 video: {reason}")


class UnsupportedMedia(VideoServiceError):
    """An MP4, but over a limit of what this service takes (pixels, tracks), or content-coded."""


class BodyTimeout(VideoServiceError):
    """The client stopped sending the body."""


class UploadStalled(BodyTimeout):
    def __init__(self, idle_s: float) -> None:
        super().__init__(f"the upload sent nothing for {idle_s:g} s and was cut off (upload_idle_timeout_s)")


class ClientGone(VideoServiceError):
    """The client closed the connection before the request was whole: nobody to answer."""


class InsufficientStorage(VideoServiceError):
    pass


class JobQueueUnavailable(VideoServiceError):
    """The worker pool cannot take a job now (shutting down, or broken)."""


class ServiceBusy(VideoServiceError):
    """Out of a resource that frees itself (file handles): retry later."""


class UploadNotFound(VideoServiceError):
    def __init__(self, upload_id: str) -> None:
        super().__init__(f"no upload with id {upload_id[:64]!r}")


class UploadGone(VideoServiceError):
    """It existed, but expired or was terminated; start a new upload."""


class UploadForbidden(VideoServiceError):
    """Another API key's upload."""


class OffsetMismatch(VideoServiceError):
    """A tus PATCH at another offset than the upload's."""


class ChecksumMismatch(VideoServiceError):
    """A tus chunk whose Upload-Checksum does not match what arrived."""


class UnsupportedProtocol(VideoServiceError):
    """A Tus-Resumable version this server does not speak."""


def from_os_error(error: BaseException) -> BaseException:
    """A full disk is the client's 507 and a lack of file handles a 503, not our 500; else as is."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("not enough free disk space: the upload could not be stored")
    if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
        return ServiceBusy("the service is out of file handles for the moment; retry shortly")
    return error
