"""Domain errors. They say what went wrong; only the web layer picks a status."""

from __future__ import annotations


class VideoServiceError(Exception):
    """Base class; `str(error)` is a message fit for the client."""


class InvalidRequest(VideoServiceError):
    """The request itself is malformed (bad JSON, bad field, no file)."""


class VideoNotFound(VideoServiceError):
    def __init__(self, video_id: str) -> None:
        super().__init__(f"no video with id {video_id!r}")


class JobAlreadyActive(VideoServiceError):
    def __init__(self, video_id: str) -> None:
        super().__init__(
            f"video {video_id} already has a resize queued or running; wait until processing is false"
        )


class EmptyUpload(VideoServiceError):
    pass


class UploadTooLarge(VideoServiceError):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the upload is larger than the limit of {limit_bytes} bytes (max_upload_bytes)")
        self.limit_bytes = limit_bytes


class NotAnMp4(VideoServiceError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"not an MP4 video: {reason}")


class UploadStalled(VideoServiceError):
    def __init__(self, idle_s: float) -> None:
        super().__init__(f"the upload sent nothing for {idle_s:g} s and was cut off")


class InsufficientStorage(VideoServiceError):
    pass


class JobQueueUnavailable(VideoServiceError):
    """The worker pool cannot take a job now (shutting down, or broken)."""
