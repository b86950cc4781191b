"""Reading a server-sent event stream as the HTML spec's parser does (event, data, id, comments)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse

from .helpers import JOB_WAIT_S


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class EventReader:
    def __init__(self, response: ClientResponse) -> None:
        assert response.status == 200, response.status
        assert response.content_type == "text/event-stream"
        self.response = response
        #: Comment lines seen (the heartbeats).
        self.comments = 0

    async def next(self, timeout_s: float = JOB_WAIT_S) -> Event | None:
        """The next event; None when the server ended the stream."""
        event, data, event_id = "message", [], None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        return Event(event, "\n".join(data), event_id)
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    event_id = value

    async def until(self, done: Any, timeout_s: float = JOB_WAIT_S) -> list[Event]:
        """Events up to and including the first for which `done(event)` holds."""
        seen: list[Event] = []
        while True:
            event = await self.next(timeout_s)
            assert event is not None, f"the stream ended first; saw {seen}"
            seen.append(event)
            if done(event):
                return seen
