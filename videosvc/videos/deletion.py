"""Delete: the row and every byte of a video (its HLS package too), its running jobs stopped first."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..aio import KeyedLocks
from ..errors import VideoNotFound
from ..events.outbox import VIDEO_DELETED, Outbox
from ..jobs.runner import JobRunner
from ..store.storage import Storage
from ..store.videos import VideoRepository
from .streaming import Streaming

log = logging.getLogger(__name__)


class Deletion:
    def __init__(
        self,
        videos: VideoRepository,
        storage: Storage,
        runner: JobRunner,
        streaming: Streaming,
        outbox: Outbox,
        locks: KeyedLocks,
    ) -> None:
        self._videos = videos
        self._streaming = streaming
        self._storage = storage
        self._runner = runner
        self._outbox = outbox
        self._locks = locks

    async def delete(self, video_id: str) -> None:
        async with self._locks(video_id):  # a PATCH of the same video sees it whole, or not at all
            status = await self._videos.status(video_id)
            if status.active_job is not None:
                await self._runner.cancel_for_delete(status.active_job.id)
            await self._streaming.stop(video_id)  # its ffmpeg stopped before its folder goes
            # Row first: if removing the file then fails, the start-up reconciliation
            # removes the orphan; the reverse order would show a video with no bytes.
            with contextlib.suppress(VideoNotFound):  # gone meanwhile: the outcome is the same
                await self._videos.delete(
                    video_id, self._outbox.message(VIDEO_DELETED, video_id, last_seen=status)
                )
            await asyncio.to_thread(self._storage.remove_video, video_id)
        log.info("video deleted", extra={"video_id": video_id})
