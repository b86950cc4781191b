"""What happens in the service, told once and heard by whoever cares: one publish path.

Two kinds of telling:

- `EventBus`, in-process and immediate: a video changed, a job ended, bytes
  went in or out. Live streams (SSE) and metrics subscribe; nobody polls.
- `Outbox`, durable: the events the outside world hears (webhooks) are rows
  written in the same transaction as the change they report, then delivered
  by `webhooks.WebhookDispatcher`. A crash between the two loses nothing.

Imports nothing of the web layer; the store takes the outbox rows as plain data.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: The events webhooks carry (Standard Webhooks names: <resource>.<verb>).
VIDEO_STORED = "video.stored"
VIDEO_DELETED = "video.deleted"
JOB_SUCCEEDED = "job.succeeded"
JOB_FAILED = "job.failed"


@dataclass(frozen=True)
class VideosChanged:
    """Rows of these videos changed (a commit): their GET shape may differ now."""

    video_ids: tuple[str, ...]


@dataclass(frozen=True)
class JobEnded:
    job_id: int
    video_id: str
    #: "succeeded", "failed" or "cancelled".
    state: str
    #: Handed to a worker until the end; 0 when it never reached one.
    elapsed_s: float
    #: Seconds per step of a job that ran to success (queue, start, handover, spawn,
    #: ffmpeg, verify, fsync, replace, record); empty otherwise.
    steps: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class BytesMoved:
    """Bytes of video received (an upload) or sent (a download)."""

    direction: str  # "in" or "out"
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


Event = VideosChanged | JobEnded | BytesMoved | OutboxQueued | OutboxDropped
Listener = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out to listeners, which must not block (they note, or wake a task)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break the change that was told
                log.exception("an event listener failed on %s", type(event).__name__)


#: Renders the GET shape of a video from its row (None: the video is gone).
Render = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class OutboxMessage:
    """One event for the webhooks, to be written with the change it reports."""

    message_id: str
    event_type: str
    video_id: str
    urls: tuple[str, ...]
    #: Builds the payload's `data` inside the transaction, from the video's state after the change;
    #: or a fixed payload when the video is gone (`video.deleted`).
    render: Render | None = None
    data: dict[str, Any] | None = None


class Outbox:
    """Makes the outbox messages for an event, when webhooks are configured (else none).

    The outbox lives on the disk: when the disk is below its margin (`has_room` is false), an
    event is dropped (counted and logged) instead of written, so webhooks cannot fill it.
    """

    def __init__(
        self, urls: Sequence[str], render: Render, has_room: Callable[[], bool], bus: EventBus
    ) -> None:
        self._urls = tuple(urls)
        self._disabled: set[str] = set()
        self._render = render
        self._has_room = has_room
        self._bus = bus

    def disable(self, urls: set[str]) -> None:
        """URLs that answered 410 Gone: no more messages for them."""
        self._disabled |= urls

    def message(self, event_type: str, video_id: str, last_seen: Any = None) -> tuple[OutboxMessage, ...]:
        """The messages for an event about a video; `last_seen`: its row before the change, for an
        event whose video is gone by then (the payload is rendered from it at once)."""
        urls = tuple(url for url in self._urls if url not in self._disabled)
        if not urls:
            return ()
        if not self._has_room():
            self._bus.emit(OutboxDropped(len(urls), 0, "the disk is below min_free_bytes"))
            return ()
        data = self._render(last_seen) if last_seen is not None else None
        return (
            OutboxMessage(
                message_id=f"msg_{uuid.uuid4().hex}",
                event_type=event_type,
                video_id=video_id,
                urls=urls,
                render=None if data is not None else self._render,
                data=data,
            ),
        )
