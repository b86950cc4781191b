"""Live streams of videos (the domain of SSE): who follows which video, and what they are sent.

Streams do not poll. Commits tell the bus which videos changed; `LiveStreams`
reads each such video once (a snapshot: its GET shape, made by the function the
application gives) and hands it to every stream of that video, however many
there are. While a job runs, its progress is read twice a second, once per
video. A stream's queue keeps only the newest snapshot: a slow reader skips to
it. The HTTP side (the SSE response) is `web/live.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..config import EventSettings
from ..errors import ServiceBusy, TooManyStreams, VideoNotFound
from .bus import EventBus, VideosChanged

#: Progress is looked at this often while a job runs (so at most this many events a second, per video).
PROGRESS_EVERY_S = 0.5
#: Seconds a client refused for too many streams is asked to wait.
STREAMS_RETRY_AFTER_S = 30

#: What a stream receives: a snapshot, or None when the video is gone.
Snapshot = dict[str, Any] | None
#: Put into a queue at shutdown (a snapshot of its own kind, never sent).
CLOSED: dict[str, Any] = {"__closed__": True}
#: A video's GET shape, as a stream sends it; raises VideoNotFound.
SnapshotOf = Callable[[str], Awaitable[dict[str, Any]]]


def event_id(snapshot: dict[str, Any]) -> str:
    """The snapshot's own fingerprint: a client that saw it (Last-Event-ID) is not sent it again."""
    stable = {k: v for k, v in snapshot.items() if k not in ("contentUrl", "eventsUrl", "playbackUrl")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


class LiveStreams:
    def __init__(self, snapshot_of: SnapshotOf, bus: EventBus, settings: EventSettings) -> None:
        self.snapshot = snapshot_of
        self._max_streams = settings.max_live_streams
        self._max_per_client = settings.max_live_streams_per_client
        self._by_client: Counter[str] = Counter()
        self._queues: dict[str, set[asyncio.Queue[Snapshot]]] = defaultdict(set)
        self._last: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._closed = False
        self._open = 0
        bus.subscribe(VideosChanged, self._on_change)

    @property
    def open_streams(self) -> int:
        return self._open

    def _on_change(self, event: VideosChanged) -> None:
        watched = [video_id for video_id in event.video_ids if video_id in self._queues]
        if watched:
            self._dirty.update(watched)
            self._wake.set()

    async def run(self) -> None:
        """Forever: send the snapshots of videos that changed, and the progress of running jobs."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROGRESS_EVERY_S):
                    await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for video_id in list(self._queues):
                if video_id in dirty or self._last.get(video_id, "").startswith("active:"):
                    await self._send_snapshot(video_id)

    async def _send_snapshot(self, video_id: str) -> None:
        try:
            snapshot: Snapshot = await self.snapshot(video_id)
        except VideoNotFound:
            snapshot = None
        if snapshot is not None:
            fingerprint = ("active:" if snapshot["processing"] else "") + event_id(snapshot)
            if self._last.get(video_id) == fingerprint:
                return  # nothing a client can see changed (a progress tick without progress)
            self._last[video_id] = fingerprint
        for queue in self._queues.get(video_id, ()):
            offer(queue, snapshot)

    @contextlib.asynccontextmanager
    async def subscribe(self, video_id: str, client: str) -> AsyncIterator[asyncio.Queue[Snapshot]]:
        """A stream's place, counted overall and for its client (a key, or an address without keys)."""
        if self._closed:
            raise ServiceBusy("the service is shutting down; reconnect in a moment")
        if self.open_streams >= self._max_streams:
            raise TooManyStreams(
                f"{self._max_streams} live streams are open (max_live_streams); retry later",
                STREAMS_RETRY_AFTER_S,
            )
        if self._by_client[client] >= self._max_per_client:
            raise TooManyStreams(
                f"this client has {self._max_per_client} live streams open (max_live_streams_per_client);"
                " close one first",
                STREAMS_RETRY_AFTER_S,
            )
        queue: asyncio.Queue[Snapshot] = asyncio.Queue(maxsize=1)
        self._queues[video_id].add(queue)
        self._open += 1
        self._by_client[client] += 1
        try:
            yield queue
        finally:
            self._open -= 1
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]
            self._queues[video_id].discard(queue)
            if not self._queues[video_id]:
                del self._queues[video_id]
                self._last.pop(video_id, None)

    def close(self) -> None:
        """Shutdown: every stream ends now (a client reconnects to the next server)."""
        self._closed = True
        for queues in self._queues.values():
            for queue in queues:
                offer(queue, CLOSED)


def offer(queue: asyncio.Queue[Snapshot], snapshot: Snapshot) -> None:
    """The newest snapshot replaces one not yet taken: a slow reader skips, memory stays one per stream."""
    with contextlib.suppress(asyncio.QueueEmpty):
        if queue.full():
            queue.get_nowait()
    queue.put_nowait(snapshot)
