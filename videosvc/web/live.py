"""GET /file/{id}/events: a live stream (server-sent events) of a video's GET shape, one per change.

Who follows what, and what each is sent, is `events.live.LiveStreams`; here is
the HTTP side: the SSE response, its heartbeats and send deadline, and the
connection's end, which frees the stream's place at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from ..events.live import CLOSED, Snapshot, event_id
from .keys import LIVE, REPRESENTATION, SETTINGS, SIGNED_UNTIL
from .protocol import connection_closed
from .requests import client_of

log = logging.getLogger(__name__)


async def stream_video(request: web.Request, video_id: str) -> web.StreamResponse:
    """The stream counts against the request's client; opened by a signed link, the links it hands
    out expire with that link."""
    streams, representation, settings = request.app[LIVE], request.app[REPRESENTATION], request.app[SETTINGS]
    until = request.get(SIGNED_UNTIL)

    def shaped(snapshot: dict[str, Any]) -> dict[str, Any]:
        return snapshot if until is None else representation.relinked(snapshot, until)

    async with streams.subscribe(video_id, client_of(request)) as queue:  # first: no change falls between
        first = shaped(await streams.snapshot(video_id))  # 404 for an unknown video, before the stream starts
        heartbeat_s, send_timeout_s = settings.events.stream_heartbeat_s, settings.http.send_timeout_s
        sse = sse_response(request, ping_interval=heartbeat_s, send_timeout=send_timeout_s)
        async with sse as response:
            # The connection's end frees the stream's place at once (not at the next heartbeat).
            closed = connection_closed(request)
            gone = asyncio.ensure_future(asyncio.shield(closed) if closed is not None else response.wait())
            try:
                if request.headers.get("Last-Event-ID") != event_id(first):  # a client that has it skips it
                    await response.send(json.dumps(first), id=event_id(first), event="video")
                while (snapshot := await _next(queue, gone)) is not CLOSED:
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
    """The next snapshot, or CLOSED when the client has gone away first."""
    getter = asyncio.ensure_future(queue.get())
    await asyncio.wait((getter, gone), return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    return CLOSED
