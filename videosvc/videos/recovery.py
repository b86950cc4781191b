"""At start: rows and files made to agree after a crash, and data folders of earlier versions adopted."""

from __future__ import annotations

import asyncio
import logging

from ..store.records import Original, VideoRecord
from ..store.storage import Storage
from ..store.videos import VideoRepository

log = logging.getLogger(__name__)


class Reconciliation:
    def __init__(self, videos: VideoRepository, storage: Storage, keep_original: bool) -> None:
        self._videos = videos
        self._storage = storage
        self._keep_original = keep_original

    async def run(self) -> None:
        """A video file without a row is moved to quarantine/, a row without its file dropped (both
        logged). Rows from before originals were kept take their stored video as the original."""
        rows = await self._videos.ids()
        storage = self._storage
        files = await asyncio.to_thread(storage.stored_video_ids)
        originals = await asyncio.to_thread(storage.stored_original_ids)
        packages = await asyncio.to_thread(storage.stored_package_ids)
        for orphan in sorted((files | originals | packages) - rows):
            if await asyncio.to_thread(storage.quarantine_video, orphan):
                log.warning(
                    "stored video with no database row moved to quarantine/ (a crash before its row was"
                    " written, or a database restored from a backup behind it)",
                    extra={"video_id": orphan},
                )
            else:
                log.warning("removing derived files with no database row", extra={"video_id": orphan})
        missing = sorted(rows - files)
        for video_id in missing:
            log.warning("removing database row whose file is gone", extra={"video_id": video_id})
        if missing:
            await self._videos.delete_many(missing)
        if self._keep_original:
            await self._adopt_originals(originals)

    async def _adopt_originals(self, originals: set[str]) -> None:
        """Rows with no original recorded (an upgrade from a version that kept none): the stored
        video becomes the original, by hard link. A row whose original file is gone likewise."""
        adopted = 0
        for video in await self._videos.without_original():
            await asyncio.to_thread(self._storage.keep_as_original, video.id)
            await self._videos.set_original(video.id, original_of(video))
            adopted += 1
        for video_id in sorted(await self._videos.ids() - originals):
            video = (await self._videos.status(video_id)).video
            if video.original is not None:
                log.warning(
                    "original missing; keeping the stored video as the original", extra={"video_id": video_id}
                )
                await asyncio.to_thread(self._storage.keep_as_original, video_id)
                await self._videos.set_original(video_id, original_of(video))
        if adopted:
            log.info("kept %d stored video(s) as their originals (upgrade)", adopted)


def original_of(video: VideoRecord) -> Original:
    return Original(video.width, video.height, video.size_bytes, video.audio_codecs or ())
