"""Thumbnails at any time and width, made on first request and cached on disk (SPEC §14).

The worst request is bounded three ways. Making one is a seek in a decoder
process that keeps recently used videos open (`decoders.py`, `jobs/grab.py`:
to the keyframe before the time, decoded to it, one frame out), in a lane of
its own (`thumbnail_concurrency` at once; not the job pools, which may be busy
with ladders), under a time limit and a memory ceiling. One client (its
API key, or its address without keys) may have at most `thumbnail_concurrency`
thumbnails waiting or being made: past that, 429. And the cache is bounded:
`thumbnail_cache_bytes` on disk, least recently used removed first, never
written below `min_free_bytes`. Two requests for the same thumbnail make it once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from pathlib import Path

from ..config import Settings
from ..errors import FormatUnavailable, InsufficientStorage, TooManyThumbnails, VideoServiceError
from ..jobs.grab import Grab
from ..media.pictures import ThumbnailAsk
from ..store.disk import DiskBudget
from ..store.storage import Storage, remove
from .decoders import DecoderFailed, Decoders

log = logging.getLogger(__name__)

#: A thumbnail may take this long to make; its decoder is killed past it.
TIMEOUT_S = 30.0
#: Memory one decoder process may allocate.
MAX_MEMORY_BYTES = 1024**3
#: Thumbnails waiting for a turn, all clients together, past which a request is refused (429).
MAX_WAITING = 256
#: Free bytes a new thumbnail needs above `min_free_bytes` to be made and kept.
ROOM_BYTES = 4 * 1024**2
#: The decoders run below the server (it stays responsive) and above the job pools (10, 15).
NICENESS = 5


class ThumbnailFailed(VideoServiceError):
    """The decoder could not make it (a 500: the stored video was readable when it was stored)."""


class Thumbnails:
    def __init__(self, settings: Settings, storage: Storage, disk: DiskBudget, webp: bool) -> None:
        self._storage = storage
        self._disk = disk
        self._webp = webp
        self._per_client = settings.pictures.thumbnail_concurrency
        self._slots = asyncio.Semaphore(settings.pictures.thumbnail_concurrency)
        self._waiting = 0
        self._clients: collections.Counter[str] = collections.Counter()
        self._making: dict[Path, asyncio.Future[Path]] = {}
        self.cache = ThumbnailCache(storage.thumbnails_root, settings.pictures.thumbnail_cache_bytes)
        self.decoders = Decoders(settings.pictures.thumbnail_concurrency, NICENESS, MAX_MEMORY_BYTES)
        #: Thumbnails asked of a decoder (a test reads it: a cached thumbnail asks none).
        self.made = 0

    async def get(
        self, video_id: str, source: Path, ask: ThumbnailAsk, duration_s: float, client: str
    ) -> Path:
        """The thumbnail's file: from the cache, or made now (then cached)."""
        if ask.format == "webp" and not self._webp:
            raise FormatUnavailable(
                "this server's FFmpeg (PyAV's) cannot write WebP (no libwebp): ask for thumbnail.jpg"
            )
        path = self._path(video_id, source, ask)
        if self.cache.hit(path):
            return path
        making = self._making.get(path)
        if making is not None:  # the same thumbnail asked for twice at once: made once
            return await asyncio.shield(making)
        if self._clients[client] >= self._per_client or self._waiting >= MAX_WAITING:
            raise TooManyThumbnails(
                f"too many thumbnails are being made for you (thumbnail_concurrency={self._per_client});"
                " wait for them",
                retry_after_s=1,
            )
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._making[path] = future
        self._clients[client] += 1
        self._waiting += 1
        waiting = True
        try:
            async with self._slots:
                self._waiting -= 1
                waiting = False
                await self._make(source, ask, duration_s, path)
            future.set_result(path)
            return path
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: a failure nobody else awaited is not logged as lost
            raise
        finally:
            if waiting:
                self._waiting -= 1
            self._clients[client] -= 1
            if not self._clients[client]:
                del self._clients[client]
            self._making.pop(path, None)

    def forget(self, video_id: str) -> None:
        """A deleted video's thumbnails (its folder is removed with it)."""
        self.cache.forget(self._storage.thumbnails_dir(video_id))

    def discard(self, video_id: str) -> None:
        """A thumbnail made for a video deleted meanwhile: its folder (made again) goes too."""
        self.forget(video_id)
        remove(self._storage.thumbnails_dir(video_id))

    def _path(self, video_id: str, source: Path, ask: ThumbnailAsk) -> Path:
        """Named by its parameters and the source's version (a resize without a kept original
        changes the source: its thumbnails are new files)."""
        st = source.stat()
        version = f"{st.st_ino:x}{st.st_mtime_ns:x}"[-12:]
        return self._storage.thumbnails_dir(video_id) / f"{ask.tenths}-{ask.width}-{version}.{ask.format}"

    async def _make(self, source: Path, ask: ThumbnailAsk, duration_s: float, path: Path) -> None:
        if self._disk.room() < ROOM_BYTES:
            raise InsufficientStorage("not enough free disk space to make a thumbnail (min_free_bytes)")
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        self.made += 1
        try:
            grab = Grab(str(source), ask.time_s, ask.width, ask.format, str(temp))
            await self.decoders.grab(grab, TIMEOUT_S)
            if not _nonempty(temp):
                raise ThumbnailFailed(f"no frame was made at {ask.time_s:g} s")
            os.replace(temp, path)
            size = os.stat(path).st_size
        except DecoderFailed as e:
            log.warning("a thumbnail of %s at %g s failed: %s", source.name, ask.time_s, e)
            raise ThumbnailFailed(f"this thumbnail could not be made ({str(e)[:200]})") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        self.cache.add(path, size)

    async def close(self) -> None:
        await self.decoders.close()


class ThumbnailCache:
    """Which thumbnails are on disk, least recently used first, and how many bytes they take."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self._root = root
        self._max_bytes = max_bytes
        self._files: collections.OrderedDict[Path, int] = collections.OrderedDict()
        self.total_bytes = 0

    def load(self) -> None:
        """What an earlier run left, oldest first (the order of use is this run's alone)."""
        found = []
        for path in self._root.glob("*/*"):
            if path.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                st = path.stat()
                found.append((st.st_mtime_ns, path, st.st_size))
        for _, path, size in sorted(found):
            self._files[path] = size
            self.total_bytes += size
        self._evict()

    def hit(self, path: Path) -> bool:
        size = self._files.get(path)
        if size is None:
            return False
        if not path.exists():  # removed under us (its video deleted)
            self._drop(path)
            return False
        self._files.move_to_end(path)  # (not its file's time: that is in its ETag)
        return True

    def add(self, path: Path, size: int) -> None:
        if path in self._files:
            self._drop(path)
        self._files[path] = size
        self.total_bytes += size
        self._evict()

    def forget(self, folder: Path) -> None:
        for path in [p for p in self._files if p.parent == folder]:
            self._drop(path)

    def _evict(self) -> None:
        while self.total_bytes > self._max_bytes and self._files:
            path, _ = next(iter(self._files.items()))
            self._drop(path)
            with contextlib.suppress(OSError):
                path.unlink()

    def _drop(self, path: Path) -> None:
        self.total_bytes -= self._files.pop(path)

    def __len__(self) -> int:
        return len(self._files)


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
