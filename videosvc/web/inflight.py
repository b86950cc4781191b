"""Counting requests in flight, so a graceful shutdown knows when they are done."""

from __future__ import annotations

import asyncio


class InFlightRequests:
    """Counts requests being handled, so shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    def started(self) -> None:
        self._count += 1
        self._idle.clear()

    def finished(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False
