"""The server's side of the thumbnail decoders: worker processes that keep videos open.

A decoder is a process of its own (`jobs/grab.serve`), so a video that crashes
FFmpeg's decoder, or one that takes too long, costs a process and never the
server: past its time limit, or dead, a decoder is killed and the next request
starts another. It runs below the server (nice) under a memory ceiling. There
are at most as many as the thumbnail lane has slots, started on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from multiprocessing.process import BaseProcess

from ..jobs.grab import IDLE_CLOSE_S, Grab, serve


class DecoderFailed(Exception):
    """The decoder said why it could not (`reusable`), or died, or took too long."""

    def __init__(self, message: str, reusable: bool = False) -> None:
        super().__init__(message)
        self.reusable = reusable


class DecoderGone(DecoderFailed):
    """The decoder was dead before it was asked (killed while idle): another may be asked."""


class Decoder:
    """One worker process and the server's end of its pipe."""

    def __init__(self, niceness: int, max_memory_bytes: int, idle_close_s: float) -> None:
        context = multiprocessing.get_context("forkserver")
        self._conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=serve,
            args=(child, niceness, max_memory_bytes, idle_close_s),
            name="videosvc-thumbs",
            daemon=True,
        )
        self.process.start()
        child.close()

    async def grab(self, request: Grab, timeout_s: float) -> None:
        """Ask, and wait for the answer; raise `DecoderFailed` when none comes or it says no."""
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        fd = self._conn.fileno()
        try:
            self._conn.send(request)  # a few hundred bytes: the pipe takes them at once
        except OSError:
            raise DecoderGone(f"the decoder was gone (exit code {self.process.exitcode})") from None
        loop.add_reader(fd, _settle, answered)
        try:
            await asyncio.wait_for(answered, timeout_s)
        except TimeoutError:
            raise DecoderFailed(f"took longer than {timeout_s:g} s") from None
        finally:
            loop.remove_reader(fd)
        try:
            reply = self._conn.recv()
        except (EOFError, OSError):
            raise DecoderFailed(f"the decoder died (exit code {self.process.exitcode})") from None
        if reply is not None:
            raise DecoderFailed(str(reply), reusable=True)

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
        self._conn.close()


class Decoders:
    """At most `size` decoders; a request takes an idle one, or starts one."""

    def __init__(
        self, size: int, niceness: int, max_memory_bytes: int, idle_close_s: float = IDLE_CLOSE_S
    ) -> None:
        self._size = size
        self._niceness = niceness
        self._max_memory_bytes = max_memory_bytes
        self._idle_close_s = idle_close_s
        self._idle: list[Decoder] = []
        self._busy: set[Decoder] = set()
        self._closed = False

    async def grab(self, request: Grab, timeout_s: float) -> None:
        """Make the picture `request` asks for (the caller keeps to `size` at once)."""
        for _ in range(self._size):
            try:
                return await self._grab_once(request, timeout_s)
            except DecoderGone:  # killed while idle, before its death was seen: the next one
                continue
        await self._grab_once(request, timeout_s)  # every idle one was dead: a new one

    async def _grab_once(self, request: Grab, timeout_s: float) -> None:
        decoder = await self._take()
        self._busy.add(decoder)
        healthy = False
        try:
            await decoder.grab(request, timeout_s)
            healthy = True
        except DecoderFailed as e:
            healthy = e.reusable
            raise
        finally:
            self._busy.discard(decoder)
            if healthy and not self._closed and len(self._idle) < self._size:
                self._idle.append(decoder)
            else:  # dead, too slow, or cancelled mid-answer: its pipe may hold a late reply
                await _retire(decoder)

    async def _take(self) -> Decoder:
        """An idle decoder (one killed while idle is found out when asked: `DecoderGone`), or a
        new one."""
        if self._closed:
            raise DecoderFailed("the server is stopping")
        if self._idle:
            return self._idle.pop()
        # Starting the forkserver (the first time) and forking from it block for a moment; a
        # request cancelled meanwhile leaves the new decoder idle, not lost.
        start = asyncio.ensure_future(
            asyncio.to_thread(Decoder, self._niceness, self._max_memory_bytes, self._idle_close_s)
        )
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            start.add_done_callback(self._keep_or_retire)
            raise

    def _keep_or_retire(self, start: asyncio.Future[Decoder]) -> None:
        if start.cancelled() or start.exception() is not None:
            return
        decoder = start.result()
        if self._closed or len(self._idle) >= self._size:
            decoder.kill()  # (its process is reaped by multiprocessing's next start or exit)
        else:
            self._idle.append(decoder)

    async def close(self) -> None:
        """Stop every decoder. A busy one is only killed: the request it serves sees it die and
        retires it (its pipe is its request's to close)."""
        self._closed = True
        for decoder in self._busy:
            decoder.process.kill()
        idle, self._idle = self._idle, []
        for decoder in idle:
            await _retire(decoder)

    def pids(self) -> list[int]:
        """The decoders' process ids (a test kills one)."""
        return [d.process.pid for d in [*self._idle, *self._busy] if d.process.pid is not None]


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _retire(decoder: Decoder) -> None:
    decoder.kill()
    await asyncio.to_thread(decoder.process.join, 5)
