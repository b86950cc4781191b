"""What the database holds, as plain data: records, and the one vocabulary of a job's state.

Everything here is standard library only: the worker processes import `JobState`
(a job's end is one of its states) without importing anything of the database.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class JobState(enum.StrEnum):
    QUEUED = "queued"  #: accepted, not yet handed to a worker
    RUNNING = "running"  #: handed to a worker (it may still wait in the pool's queue)
    SUCCEEDED = "succeeded"  #: the stored video is the resized one (or needed no change)
    FAILED = "failed"  #: the stored video is unchanged; `error` says why
    CANCELLED = "cancelled"  #: stopped before it ended; the stored video is unchanged

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATES


#: The states of a job that has not ended: at most one per video (the database's unique index).
ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})


def sql_list(states: frozenset[JobState]) -> str:
    """`'queued', 'running'`: states as SQL literals, written from the enum rather than by hand."""
    return ", ".join(f"'{state.value}'" for state in sorted(states))


class RenditionState(enum.StrEnum):
    QUEUED = "queued"  #: planned; its job has not started
    RUNNING = "running"  #: being encoded (or copied)
    READY = "ready"  #: in the master playlist
    FAILED = "failed"  #: not built; `error` says why


@dataclass(frozen=True)
class Rendition:
    """One rendition of a video's HLS package (its folder is `name`)."""

    name: str
    width: int
    height: int
    state: RenditionState
    #: The measured peak bit rate of its segments (what the master playlist says), once ready.
    bandwidth: int | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rendition:
        return cls(**{**data, "state": RenditionState(data["state"])})


@dataclass(frozen=True)
class Pictures:
    """A video's poster and storyboard (SPEC §14): made together, in one job, so one state."""

    state: RenditionState
    error: str | None = None
    #: When the poster's frame is, in seconds: a thumbnail's time when none is asked for.
    poster_time: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pictures:
        return cls(**{**data, "state": RenditionState(data["state"])})

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "state": self.state.value}


@dataclass(frozen=True)
class Original:
    """The upload as it came, kept so that every resize starts from it."""

    width: int
    height: int
    size_bytes: int
    audio_codecs: tuple[str, ...]


@dataclass(frozen=True)
class VideoRecord:
    id: str
    filename: str
    size_bytes: int
    width: int
    height: int
    duration_s: float | None
    created_at: str
    updated_at: str
    #: What the last probe found; None when unknown (stored before it was recorded).
    audio_codecs: tuple[str, ...] | None = None
    #: Frames of the video stream; None when unknown (stored before it was recorded).
    frame_count: int | None = None
    #: None when originals are not kept, or not recorded yet (a row from before they were).
    original: Original | None = None
    #: The HLS package, largest first; None: none planned (HLS off, or a row from before it).
    renditions: tuple[Rendition, ...] | None = None
    #: The poster and storyboard; None: none planned (pictures off, or a row from before them).
    pictures: Pictures | None = None


@dataclass(frozen=True)
class VideoShape:
    """What a video turned into (a resize, a restored original): the row's new measurements."""

    size_bytes: int
    width: int
    height: int
    duration_s: float | None
    audio_codecs: tuple[str, ...]
    frame_count: int | None


@dataclass(frozen=True)
class JobRecord:
    id: int
    video_id: str
    width: int
    height: int
    state: JobState
    attempts: int
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class VideoStatus:
    video: VideoRecord
    #: The newest job, whatever its state (at most one is ever active, and it is the newest).
    job: JobRecord | None

    @property
    def active_job(self) -> JobRecord | None:
        return self.job if self.job is not None and self.job.state.active else None


def status_to_dict(status: VideoStatus) -> dict[str, Any]:
    """A status as JSON-ready data (what an outbox row keeps of the change it reports)."""
    return dataclasses.asdict(status)


def status_from_dict(data: dict[str, Any]) -> VideoStatus:
    video = dict(data["video"])
    original = video.pop("original")
    for name in ("audio_codecs",):
        if video.get(name) is not None:
            video[name] = tuple(video[name])
    renditions = video.pop("renditions", None)
    pictures = video.pop("pictures", None)
    record = VideoRecord(
        **video,
        renditions=None if renditions is None else tuple(Rendition.from_dict(r) for r in renditions),
        pictures=None if pictures is None else Pictures.from_dict(pictures),
        original=None
        if original is None
        else Original(**{**original, "audio_codecs": tuple(original["audio_codecs"])}),
    )
    job = data["job"]
    return VideoStatus(record, None if job is None else JobRecord(**{**job, "state": JobState(job["state"])}))


@dataclass(frozen=True)
class UploadRecord:
    """A resumable upload; its offset is its file's size, read from the disk, not kept here."""

    id: str
    length: int
    filename: str
    metadata: str
    owner: str | None
    created_at: str
    expires_at: float
    completed_at: str | None = None
    #: Who it counts against: the API key's name, or the client's address without keys.
    client: str | None = None


@dataclass(frozen=True)
class UploadCaps:
    """What unfinished uploads may hold, overall and per client; checked with the insert."""

    max_pending: int
    max_pending_per_client: int
    max_reserved_bytes_per_client: int


@dataclass(frozen=True)
class PageKey:
    """Where a page of the catalogue starts: after this (created_at, id), newest first."""

    created_at: str
    video_id: str


@dataclass(frozen=True)
class OutboxMessage:
    """One event for the webhooks, to be written with the change it reports."""

    message_id: str
    event_type: str
    video_id: str
    urls: tuple[str, ...]
    #: The video as it was before the change, for an event whose video is gone after it
    #: (`video.deleted`); else the row is read after the change, in its transaction.
    last_seen: VideoStatus | None = None


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery to attempt: one outbox row."""

    id: int
    message_id: str
    url: str
    event_type: str
    #: JSON: {"type", "timestamp", "status"} (the video as the change left it), rendered when sent;
    #: rows from before that was kept hold the rendered {"type", "timestamp", "data"}.
    payload: str
    created_at: float
    attempts: int


@dataclass(frozen=True)
class Commit:
    """What one committed transaction did: told to the database's listeners."""

    #: The videos whose GET shape may differ now.
    video_ids: tuple[str, ...]
    #: Webhook deliveries written to the outbox, and dropped from it past its cap.
    queued: int = 0
    trimmed: int = 0


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
