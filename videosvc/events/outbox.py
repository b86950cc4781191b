"""The webhook messages a change writes in its own transaction (a transactional outbox).

A crash between the change and its delivery loses nothing: the row is there
at the next start (`events.webhooks` delivers it). The outbox lives on the
disk: when the disk is below its margin, an event is dropped (counted and
logged) instead of written, so webhooks cannot fill it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from ..store.records import OutboxMessage, VideoStatus
from .bus import EventBus, OutboxDropped

#: The events webhooks carry (Standard Webhooks names: <resource>.<verb>).
VIDEO_STORED = "video.stored"
VIDEO_DELETED = "video.deleted"
JOB_SUCCEEDED = "job.succeeded"
JOB_FAILED = "job.failed"
#: A rendition of the HLS package is playable (in the master playlist), or could not be built.
RENDITION_READY = "rendition.ready"
RENDITION_FAILED = "rendition.failed"
#: The poster and storyboard are ready (GET shows posterUrl, storyboardUrl), or could not be made.
PICTURES_READY = "pictures.ready"
PICTURES_FAILED = "pictures.failed"


class Outbox:
    """Makes the outbox messages for an event, when webhooks are configured (else none)."""

    def __init__(self, urls: Sequence[str], has_room: Callable[[], bool], bus: EventBus) -> None:
        self._urls = tuple(urls)
        self._disabled: set[str] = set()
        self._has_room = has_room
        self._bus = bus

    def disable(self, urls: set[str]) -> None:
        """URLs that answered 410 Gone: no more messages for them."""
        self._disabled |= urls

    def message(
        self, event_type: str, video_id: str, last_seen: VideoStatus | None = None
    ) -> tuple[OutboxMessage, ...]:
        """The messages for an event about a video; `last_seen`: the video before the change, for an
        event whose video is gone by then (else the change's transaction reads it as it left it)."""
        urls = tuple(url for url in self._urls if url not in self._disabled)
        if not urls:
            return ()
        if not self._has_room():
            self._bus.emit(OutboxDropped(len(urls), 0, "the disk is below min_free_bytes"))
            return ()
        return (OutboxMessage(f"msg_{uuid.uuid4().hex}", event_type, video_id, urls, last_seen),)
