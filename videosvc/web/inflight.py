"""Requests in flight: a graceful stop waits for them, then cuts off the ones still running."""

from __future__ import annotations

import asyncio


class InFlightRequests:
    """The tasks handling requests, so shutdown can wait for them and then end them with a 503."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Set once shutdown gave up waiting: a cancelled handler then answers 503.
        self.cutting_off = False

    @property
    def count(self) -> int:
        return len(self._tasks)

    def started(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)
        self._idle.clear()

    def finished(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    def cut_off(self) -> None:
        """Cancel every handler still running; each answers 503 (see `in_flight_middleware`)."""
        self.cutting_off = True
        for task in self._tasks:
            task.cancel()
