"""One writer per upload, and the rules of a takeover (SPEC §7, §12).

- A request is first judged on its own (the upload exists, is this client's,
  the offset is the upload's): a refused request changes nothing at all.
- An acceptable PATCH takes over at once from an older one still at it (most
  likely stalled on a dead connection): the older is cancelled, and what it
  wrote past the offset the newer one agreed on is cut back (`Writer.stop_at`),
  so the newer writes exactly where it said it would. Bytes of PATCHes already
  answered are never touched.
- A publish (the last byte is in, the video is being stored) runs in a task of
  its own that nothing interrupts: a request that comes meanwhile waits for it,
  then is judged again against what it left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..aio import KeyedLocks

log = logging.getLogger(__name__)

T = TypeVar("T")


class Writer:
    """A request that means to write an upload: waiting its turn, then writing."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        #: Set by a newer request that took over: cut what this one wrote back to here.
        self.stop_at: int | None = None


class Writers:
    def __init__(self) -> None:
        self.lock = KeyedLocks()
        #: The requests that mean to write each upload (the one writing, and any waiting).
        self._writers: dict[str, list[Writer]] = {}
        #: Uploads whose last byte is in and whose video is being stored: never interrupted.
        self._publishing: dict[str, asyncio.Task[None]] = {}

    def busy(self, upload_id: str) -> bool:
        """A request holds the upload now (writing it, or storing its video)."""
        return self.lock(upload_id).locked() or upload_id in self._publishing

    async def judged(self, upload_id: str, judge: Callable[[], Awaitable[T]]) -> T:
        """What `judge` says (it raises the refusals, changing nothing), once no publish of the
        upload is in progress: a publish in progress is waited out, then the request judged again."""
        while True:
            verdict = await judge()
            publishing = self._publishing.get(upload_id)
            if publishing is None:
                return verdict
            with contextlib.suppress(Exception):  # its own request reports how it ended
                await asyncio.shield(publishing)

    @contextlib.asynccontextmanager
    async def turn(self, upload_id: str, offset: int | None) -> AsyncIterator[Writer]:
        """Become the one writer of the upload: the requests still at it are ended, and this one
        waits until they have let go (their files closed, their extra bytes cut back). Call it with
        no await since the judgement: nothing can have moved in between."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - every request runs in a task
            raise RuntimeError("uploads are written from a task")
        me = Writer(task)
        for other in self._writers.get(upload_id, []):
            other.stop_at = offset
            other.task.cancel()
            log.info("a newer request took over the upload", extra={"upload_id": upload_id})
        self._writers.setdefault(upload_id, []).append(me)
        try:
            async with self.lock(upload_id):
                yield me
        finally:
            writers = self._writers.get(upload_id, [])
            writers.remove(me)
            if not writers:
                self._writers.pop(upload_id, None)

    async def publish(self, upload_id: str, store: Coroutine[Any, Any, None]) -> None:
        """Run `store` in a task of its own, which a cancelled request (a shutdown) does not cut short."""
        task = asyncio.ensure_future(store)
        self._publishing[upload_id] = task
        task.add_done_callback(lambda _: self._publishing.pop(upload_id, None))
        await asyncio.shield(task)
