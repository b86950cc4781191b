"""A video's HLS package on disk and in its row: renditions moved in whole, the master playlist
rewritten to list them, and their states recorded (with the webhooks and events they cause).

A rendition is listed only once it is whole and flushed: its folder is moved into
the package first (`install`), then the master playlist is replaced (`publish`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from pathlib import Path

from ..errors import VideoNotFound
from ..events.bus import EventBus, RenditionsEnded
from ..events.outbox import RENDITION_FAILED, RENDITION_READY, Outbox
from ..jobs.contract import ResizeResult
from ..media import hls
from ..media.ladder import Plan
from ..store.records import JobState, OutboxMessage, Rendition, RenditionState
from ..store.storage import Storage, remove
from ..store.videos import VideoRepository

log = logging.getLogger(__name__)

#: Renditions whose work is not over.
UNFINISHED = (RenditionState.QUEUED, RenditionState.RUNNING)


class Packages:
    def __init__(self, videos: VideoRepository, storage: Storage, outbox: Outbox, bus: EventBus) -> None:
        self._videos = videos
        self._storage = storage
        self._outbox = outbox
        self._bus = bus
        #: When each video being built was stored, for its time to first playable.
        self.stored_at: dict[str, float] = {}

    async def install(self, video_id: str, names: list[str]) -> bool:
        """Move whole, flushed renditions from the work folder into the package."""
        work, package = self._storage.package_work_dir(video_id), self._storage.package_dir(video_id)
        try:
            await asyncio.to_thread(_install_folders, work, package, names)
        except (OSError, hls.PackageError) as e:
            log.warning("a rendition could not be installed: %s", e, extra={"video_id": video_id})
            return False
        return True

    async def end(self, video_id: str, todo: list[int], result: ResizeResult) -> None:
        if result.outcome is JobState.SUCCEEDED:
            await self.record(video_id, todo, {})
        else:
            error = result.error or "the ladder job failed"
            await self.record(video_id, [], dict.fromkeys(todo, error))

    async def end_unfinished(self, video_id: str, error: str) -> None:
        renditions = await self.renditions(video_id)
        todo = [i for i, r in enumerate(renditions) if r.state in UNFINISHED]
        if todo:
            await self.record(video_id, [], dict.fromkeys(todo, error))

    async def record(self, video_id: str, ready: list[int], failed: dict[int, str]) -> tuple[Rendition, ...]:
        """Record renditions as ready (measured, and listed in a new master playlist) or failed."""
        renditions = list(await self.renditions(video_id))
        package = self._storage.package_dir(video_id)
        for i in ready:
            measured = await asyncio.to_thread(hls.measure, package / renditions[i].name)
            renditions[i] = dataclasses.replace(
                renditions[i], state=RenditionState.READY, bandwidth=measured.bandwidth, error=None
            )
        for i, error in failed.items():
            renditions[i] = dataclasses.replace(renditions[i], state=RenditionState.FAILED, error=error)
        if ready:
            await asyncio.to_thread(_write_master, package, renditions)
        messages: list[OutboxMessage] = []
        if ready:
            messages += self._outbox.message(RENDITION_READY, video_id)
        if failed:
            messages += self._outbox.message(RENDITION_FAILED, video_id)
        if not await self._videos.set_renditions(video_id, tuple(renditions), messages):
            raise VideoNotFound(video_id)
        stored_at = self.stored_at.pop(video_id, None) if ready else None
        self._bus.emit(
            RenditionsEnded(
                video_id, len(ready), len(failed), None if stored_at is None else time.monotonic() - stored_at
            )
        )
        return tuple(renditions[i] for i in ready)

    async def renditions(self, video_id: str) -> tuple[Rendition, ...]:
        return (await self._videos.status(video_id)).video.renditions or ()

    async def set(self, video_id: str, renditions: tuple[Rendition, ...]) -> tuple[Rendition, ...]:
        if not await self._videos.set_renditions(video_id, renditions):
            raise VideoNotFound(video_id)
        return renditions


def planned_renditions(the_plan: Plan) -> tuple[Rendition, ...]:
    return tuple(
        Rendition(hls.video_name(i), rung.width, rung.height, RenditionState.QUEUED)
        for i, rung in enumerate(the_plan.rungs)
    )


def with_states(
    renditions: tuple[Rendition, ...], states: dict[int, RenditionState]
) -> tuple[Rendition, ...]:
    return tuple(
        dataclasses.replace(r, state=states[i]) if i in states else r for i, r in enumerate(renditions)
    )


def fresh(*folders: Path) -> None:
    for folder in folders:
        remove(folder)
        folder.mkdir(parents=True)


def _install_folders(work: Path, package: Path, names: list[str]) -> None:
    """Each rendition's folder, checked and flushed, renamed into the package (replacing none listed)."""
    for name in names:
        folder = work / name
        hls.measure(folder)  # whole: its playlist, its segments, its init segment
        for file in folder.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        _sync_dir(folder)
        target = package / name
        remove(target)
        os.replace(folder, target)
    _sync_dir(package)
    remove(work)


def _write_master(package: Path, renditions: list[Rendition]) -> None:
    """The master playlist of the ready renditions, replacing the last one atomically."""
    entries = [
        hls.VideoEntry(hls.measure(package / r.name), r.width, r.height, None)
        for r in renditions
        if r.state is RenditionState.READY
    ]
    audio = hls.measure(package / hls.AUDIO) if (package / hls.AUDIO).exists() else None
    temp = package / f".{hls.MASTER}.tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.write(hls.master_playlist(entries, audio))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, package / hls.MASTER)
    _sync_dir(package)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
