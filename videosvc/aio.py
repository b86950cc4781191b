"""Two asyncio tools the service needs in several places: a lock per key, and a wait that a
cancellation cannot cut short."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class KeyedLocks:
    """One asyncio.Lock per key (a video's id, an upload's), forgotten once nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


async def run_to_end(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` to its end even if the caller is cancelled meanwhile; then re-raise that.

    For cleanups that must not be cut in half: closing a file a thread writes to,
    appending a verified chunk. (`asyncio.shield` alone returns at the cancellation
    and leaves the work running behind the caller's back.)
    """
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
