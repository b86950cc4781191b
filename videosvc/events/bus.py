"""The event bus: what happened, told once, heard by whoever subscribed to that kind of event.

In-process and immediate: live streams and metrics subscribe; nobody polls.
The durable telling (webhooks) is the outbox, written in the change's own
transaction (`events.outbox`, `store.outbox`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ..store.records import JobState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideosChanged:
    """Rows of these videos changed (a commit): their GET shape may differ now."""

    video_ids: tuple[str, ...]


@dataclass(frozen=True)
class JobEnded:
    job_id: int
    video_id: str
    #: SUCCEEDED, FAILED or CANCELLED.
    state: JobState
    #: Handed to a worker until the end; 0 when it never reached one.
    elapsed_s: float
    #: Seconds per step of a job that ran to success (queue, start, handover, spawn,
    #: ffmpeg, verify, fsync, replace, record); empty otherwise.
    steps: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class RenditionsEnded:
    """Renditions of a video's HLS package became ready (listed in its master playlist) or failed."""

    video_id: str
    ready: int
    failed: int
    #: From the upload's store to its first playable master playlist; None if this was not the first.
    first_playable_s: float | None = None


@dataclass(frozen=True)
class BytesMoved:
    """Bytes of video received (an upload) or sent (a download)."""

    direction: Literal["in", "out"]
    count: int


@dataclass(frozen=True)
class OutboxQueued:
    """Webhook deliveries were committed to the outbox: the dispatcher should look now."""

    count: int


@dataclass(frozen=True)
class OutboxDropped:
    """Webhook deliveries were dropped: never queued (no disk), or trimmed from the outbox (its cap)."""

    count: int
    #: Of them, how many were in the outbox (and counted in its backlog).
    from_backlog: int
    reason: str


Event = VideosChanged | JobEnded | RenditionsEnded | BytesMoved | OutboxQueued | OutboxDropped
E = TypeVar("E", VideosChanged, JobEnded, RenditionsEnded, BytesMoved, OutboxQueued, OutboxDropped)


class EventBus:
    """Synchronous fan-out to listeners of each kind of event; they must not block (they note,
    or wake a task)."""

    def __init__(self) -> None:
        self._listeners: defaultdict[type[Any], list[Callable[[Any], None]]] = defaultdict(list)

    def subscribe(self, kind: type[E], listener: Callable[[E], None]) -> None:
        self._listeners[kind].append(listener)

    def emit(self, event: Event) -> None:
        for listener in self._listeners.get(type(event), ()):
            try:
                listener(event)
            except Exception:  # a broken listener must not break the change that was told
                log.exception("an event listener failed on %s", type(event).__name__)
