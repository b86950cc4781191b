"""GET /file/{id}/events: a live stream (server-sent events) of a video's GET shape, one per change.

Streams do not poll. The database tells the event bus which videos changed at
each commit; `LiveStreams` reads each such video once (from the status cache)
and hands the new snapshot to every stream of that video, however many there
are. While a job runs, its progress is read twice a second, once per video.
A stream's queue keeps only the newest snapshot: a slow reader skips to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from ..config import EventSettings
from ..errors import ServiceBusy, TooManyStreams, VideoNotFound
from ..events import EventBus, VideosChanged
from ..representation import Representation
from ..service import VideoService
from .protocol import connection_closed

log = logging.getLogger(__name__)

#: Progress is looked at this often while a job runs (so at most this many events a second, per video).
PROGRESS_EVERY_S = 0.5

#: Seconds a client refused for too many streams is asked to wait.
RETRY_AFTER_S = 30

#: What a stream receives: a snapshot, or None when the video is gone.
Snapshot = dict[str, Any] | None


def event_id(snapshot: dict[str, Any]) -> str:
    """The snapshot's own fingerprint: a client that saw it (Last-Event-ID) is not sent it again."""
    stable = {k: v for k, v in snapshot.items() if k not in ("contentUrl", "eventsUrl")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


class LiveStreams:
    def __init__(
        self,
        service: VideoService,
        representation: Representation,
        bus: EventBus,
        settings: EventSettings,
        send_timeout_s: float,
    ) -> None:
        self._service = service
        self._max_streams = settings.max_live_streams
        self._max_per_client = settings.max_live_streams_per_client
        self._by_client: Counter[str] = Counter()
        self.heartbeat_s = settings.stream_heartbeat_s
        #: A client that takes no bytes for this long is cut off (a stalled reader holds nothing long).
        self.send_timeout_s = send_timeout_s
        self.representation = representation
        self._queues: dict[str, set[asyncio.Queue[Snapshot]]] = defaultdict(set)
        self._last: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._closed = False
        self._open = 0
        bus.subscribe(self._on_event)

    @property
    def open_streams(self) -> int:
        return self._open

    def _on_event(self, event: object) -> None:
        if isinstance(event, VideosChanged):
            watched = [video_id for video_id in event.video_ids if video_id in self._queues]
            if watched:
                self._dirty.update(watched)
                self._wake.set()

    async def run(self) -> None:
        """Forever: publish the snapshots of videos that changed, and the progress of running jobs."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROGRESS_EVERY_S):
                    await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for video_id in list(self._queues):
                if video_id in dirty or self._last.get(video_id, "").startswith("active:"):
                    await self._publish(video_id)

    async def _publish(self, video_id: str) -> None:
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
            _offer(queue, snapshot)

    async def snapshot(self, video_id: str) -> dict[str, Any]:
        return self.representation.video(await self._service.describe(video_id))

    @contextlib.asynccontextmanager
    async def subscribe(self, video_id: str, client: str) -> AsyncIterator[asyncio.Queue[Snapshot]]:
        """A stream's place, counted overall and for its client (a key, or an address without keys)."""
        if self._closed:
            raise ServiceBusy("the service is shutting down; reconnect in a moment")
        if self.open_streams >= self._max_streams:
            raise TooManyStreams(
                f"{self._max_streams} live streams are open (max_live_streams); retry later", RETRY_AFTER_S
            )
        if self._by_client[client] >= self._max_per_client:
            raise TooManyStreams(
                f"this client has {self._max_per_client} live streams open (max_live_streams_per_client);"
                " close one first",
                RETRY_AFTER_S,
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
                _offer(queue, _CLOSED)


#: Put into a queue at shutdown (a snapshot of its own kind, never sent).
_CLOSED: dict[str, Any] = {"__closed__": True}


def _offer(queue: asyncio.Queue[Snapshot], snapshot: Snapshot) -> None:
    """The newest snapshot replaces one not yet taken: a slow reader skips, memory stays one per stream."""
    with contextlib.suppress(asyncio.QueueEmpty):
        if queue.full():
            queue.get_nowait()
    queue.put_nowait(snapshot)


async def stream_video(
    request: web.Request, streams: LiveStreams, video_id: str, client: str, until: int | None
) -> web.StreamResponse:
    """`client`: whom the stream counts against; `until`: the expiry of the signed link it was opened
    by, if any (the links it hands out expire with it)."""

    def shaped(snapshot: dict[str, Any]) -> dict[str, Any]:
        return snapshot if until is None else streams.representation.relinked(snapshot, until)

    async with streams.subscribe(video_id, client) as queue:  # first: no change falls between
        first = shaped(await streams.snapshot(video_id))  # 404 for an unknown video, before the stream starts
        sse = sse_response(request, ping_interval=streams.heartbeat_s, send_timeout=streams.send_timeout_s)
        async with sse as response:
            # The connection's end frees the stream's place at once (not at the next heartbeat).
            closed = connection_closed(request)
            gone = asyncio.ensure_future(asyncio.shield(closed) if closed is not None else response.wait())
            try:
                if request.headers.get("Last-Event-ID") != event_id(first):  # a client that has it skips it
                    await response.send(json.dumps(first), id=event_id(first), event="video")
                while (snapshot := await _next(queue, gone)) is not _CLOSED:
                    if snapshot is None:
                        await response.send(json.dumps({"id": video_id, "deleted": True}), event="deleted")
                        break
                    snapshot = shaped(snapshot)
                    await response.send(json.dumps(snapshot), id=event_id(snapshot), event="video")
            except (ConnectionResetError, TimeoutError):  # gone, or not reading (send_timeout_s)
                log.info("live stream of %s ended: the client went away", video_id)
            finally:
                gone.cancel()
    return response


async def _next(queue: asyncio.Queue[Snapshot], gone: asyncio.Future[None]) -> Snapshot:
    """The next snapshot, or _CLOSED when the client has gone away first."""
    getter = asyncio.ensure_future(queue.get())
    await asyncio.wait((getter, gone), return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    return _CLOSED
