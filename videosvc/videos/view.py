"""The view model of a video: what GET, the catalogue, live streams and webhooks show of its records."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ..store.records import (
    JobRecord,
    JobState,
    Original,
    Pictures,
    Rendition,
    RenditionState,
    VideoRecord,
    VideoStatus,
)


class Variant(enum.StrEnum):
    CURRENT = "current"  #: the stored video, resized or not
    ORIGINAL = "original"  #: the upload as it came


@dataclass(frozen=True)
class JobInfo:
    """The newest job of a video, as clients see it."""

    state: JobState
    width: int
    height: int
    #: 0-99 while it runs (from ffmpeg's reports), 100 once it succeeded, else None.
    progress: int | None
    error: str | None
    queued_at: str | None
    started_at: str | None
    finished_at: str | None


@dataclass(frozen=True)
class VideoInfo:
    """What GET /file/{id}/ shows of a video: the view model the web layer renders."""

    id: str
    filename: str
    size_bytes: int
    width: int
    height: int
    duration_s: float | None
    created_at: str
    updated_at: str
    #: None when originals are not kept.
    original: Original | None
    job: JobInfo | None
    #: The HLS package's renditions, largest first (empty when none is planned).
    renditions: tuple[Rendition, ...] = ()
    #: The poster and storyboard (None when none are planned).
    pictures: Pictures | None = None

    @property
    def has_pictures(self) -> bool:
        return self.pictures is not None and self.pictures.state is RenditionState.READY

    @property
    def playable(self) -> bool:
        """Whether the HLS package has a master playlist (a rendition is ready)."""
        return any(r.state is RenditionState.READY for r in self.renditions)

    @property
    def processing(self) -> bool:
        return self.job is not None and self.job.state.active

    @property
    def processing_success(self) -> bool | None:
        """The outcome of the newest job; None before the first, and while one is queued or running."""
        if self.job is None or self.job.state.active:
            return None
        return self.job.state is JobState.SUCCEEDED

    @property
    def processing_error(self) -> str | None:
        return None if self.job is None or self.job.state.active else self.job.error

    @property
    def progress(self) -> int | None:
        return self.job.progress if self.processing and self.job else None


#: A running job's progress, 0-99, as of now (None when not known).
Progress = Callable[[JobRecord, VideoRecord], int | None]


def view_of(status: VideoStatus, keep_original: bool, progress: Progress | None = None) -> VideoInfo:
    """The view model of a video's records."""
    video, job = status.video, status.job
    job_info = None
    if job is not None:
        percent = None
        if job.state is JobState.SUCCEEDED:
            percent = 100
        elif job.state.active and progress is not None:
            percent = progress(job, video)
        job_info = JobInfo(
            state=job.state,
            width=job.width,
            height=job.height,
            progress=percent,
            error=job.error,
            queued_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
    return VideoInfo(
        id=video.id,
        filename=video.filename,
        size_bytes=video.size_bytes,
        width=video.width,
        height=video.height,
        duration_s=video.duration_s,
        created_at=video.created_at,
        updated_at=video.updated_at,
        original=video.original if keep_original else None,
        job=job_info,
        renditions=video.renditions or (),
        pictures=video.pictures,
    )
