"""`VideoService`: the use cases of a video behind one name, for the web layer.

Each use case is a room of its own: `publish` (an upload becomes a video),
`view` (what GET shows), `catalogue` (pages of videos), `resize` (the rules of
a PATCH, its queue, the resizes that need no encoding), `streaming` (the HLS
package built from each upload), `deletion`, and
`recovery` (rows and files agree at start; earlier versions' data adopted).
This facade only wires them and answers the web layer's questions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path

from ..aio import KeyedLocks
from ..config import Settings
from ..errors import OriginalNotKept
from ..events.bus import EventBus
from ..events.outbox import Outbox
from ..jobs.contract import read_progress
from ..jobs.outcomes import JobOutcomes
from ..jobs.runner import JobRunner
from ..media.probe import Toolchain
from ..signing import Signer
from ..store.disk import DiskBudget
from ..store.records import JobRecord, VideoRecord, VideoStatus
from ..store.storage import Storage
from ..store.tables import Tables
from ..uploads.receiver import IncomingUpload, ReceivedFile
from .catalogue import Catalogue, Page
from .deletion import Deletion
from .publish import Publisher
from .recovery import Reconciliation
from .resize import Resizes
from .streaming import Streaming
from .view import Variant, VideoInfo, view_of


class VideoService:
    def __init__(
        self,
        settings: Settings,
        tables: Tables,
        storage: Storage,
        disk: DiskBudget,
        runner: JobRunner,
        tools: Toolchain,
        signer: Signer,
        outcomes: JobOutcomes,
        outbox: Outbox,
        bus: EventBus,
        streaming: Streaming,
    ) -> None:
        self._keep_original = settings.storage.keep_original
        self._videos = tables.videos
        self._storage = storage
        self._runner = runner
        # Probes are processes that may take seconds: a pool of their own bounds how many run.
        self._probes = concurrent.futures.ThreadPoolExecutor(
            settings.ffmpeg.probe_concurrency, thread_name_prefix="probe"
        )
        # One lock per video for PATCH and DELETE, so neither sees the other half-done.
        locks = KeyedLocks()
        self._publisher = Publisher(
            settings, tables.videos, storage, disk, tools, self._probes, outbox, bus, streaming
        )
        self._catalogue = Catalogue(tables.videos, signer, self.view)
        self._resizes = Resizes(
            settings.jobs, self._keep_original, tables.videos, tables.jobs, storage, runner, outcomes, tools,
            self._probes, locks,
        )  # fmt: skip
        self._deletion = Deletion(tables.videos, storage, runner, streaming, outbox, locks)
        self.reconciliation = Reconciliation(tables.videos, storage, self._keep_original)
        self._on_delete: list[Callable[[str], None]] = []

    async def close(self) -> None:
        await asyncio.to_thread(self._probes.shutdown, wait=True, cancel_futures=True)

    # -- what the web layer asks

    async def upload(self, upload: IncomingUpload) -> VideoRecord:
        """POST /file/: receive the body, then publish it."""
        return await self._publisher.upload(upload)

    async def publish(self, received: ReceivedFile, filename: str | None, video_id: str) -> VideoRecord:
        """A resumable upload whose last byte is in: the same checks and step as POST /file/."""
        return await self._publisher.publish(received, filename, video_id)

    async def state(self, video_id: str) -> VideoStatus:
        """The video's stored state: the same object until a write changes it (the status cache)."""
        return await self._videos.status(video_id)

    def view(self, status: VideoStatus) -> VideoInfo:
        """What GET shows of a stored state, with a running job's progress as of now."""
        return view_of(status, self._keep_original, self._progress)

    async def get(self, video_id: str) -> VideoInfo:
        return self.view(await self.state(video_id))

    async def catalogue(self, limit: int, cursor: str | None, processing: bool | None) -> Page:
        return await self._catalogue.page(limit, cursor, processing)

    async def content_path(self, video_id: str, variant: Variant) -> tuple[Path, VideoInfo]:
        """Where the bytes of a video (or its original) are, and what it is."""
        info = await self.get(video_id)
        if variant is Variant.ORIGINAL:
            if not self._keep_original:
                raise OriginalNotKept
            return self._storage.original_path(video_id), info
        return self._storage.video_path(video_id), info

    async def start_resize(self, video_id: str, width: int, height: int, client: str | None = None) -> None:
        await self._resizes.start(video_id, width, height, client)

    async def delete(self, video_id: str) -> None:
        await self._deletion.delete(video_id)
        for forget in self._on_delete:
            forget(video_id)

    def on_delete(self, forget: Callable[[str], None]) -> None:
        """Call `forget` with each deleted video's id (what keeps an index of its files: thumbnails)."""
        self._on_delete.append(forget)

    def source_path(self, video_id: str) -> Path:
        """The upload as it came: the original when kept, else the stored video."""
        original = self._storage.original_path(video_id)
        return original if self._keep_original and original.exists() else self._storage.video_path(video_id)

    def pictures_dir(self, video_id: str) -> Path:
        return self._storage.pictures_dir(video_id)

    def _progress(self, job: JobRecord, video: VideoRecord) -> int | None:
        if not video.duration_s:
            return None
        return read_progress(self._runner.job_files(job.id), video.duration_s)
