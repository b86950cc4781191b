"""The domain layer: store, describe, resize and delete videos.

It knows nothing of HTTP: it takes plain values and an async stream of bytes,
and raises the errors of `errors.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import InvalidRequest, OriginalNotKept, VideoNotFound
from .events import VIDEO_DELETED, EventBus, Outbox
from .jobs.contract import read_progress
from .jobs.outcomes import JobOutcomes
from .jobs.runner import JobRunner
from .media.isobmff import BoxError, read_tracks
from .media.probe import ProbeError, Toolchain, probe
from .signing import BadSignature, Signer
from .store.db import Database, JobRecord, JobState, Original, PageKey, VideoRecord, VideoStatus
from .store.disk import DiskBudget
from .store.storage import Storage
from .videos.publish import IncomingUpload, Publisher, ReceivedFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInfo:
    """The newest job of a video, as clients see it."""

    state: JobState
    width: int
    height: int
    #: 0-99 while it runs (from ffmpeg's reports), 100 once it succeeded, else None.
    progress: int | None
    error: str | None
    queued_at: str | None
    started_at: str | None
    finished_at: str | None


@dataclass(frozen=True)
class VideoInfo:
    """What GET /file/{id}/ shows of a video: the view model the web layer renders."""

    id: str
    filename: str
    size_bytes: int
    width: int
    height: int
    duration_s: float | None
    created_at: str
    updated_at: str
    #: None when originals are not kept.
    original: Original | None
    job: JobInfo | None

    @property
    def processing(self) -> bool:
        return self.job is not None and self.job.state.active

    @property
    def processing_success(self) -> bool | None:
        """The outcome of the newest job; None before the first, and while one is queued or running."""
        if self.job is None or self.job.state.active:
            return None
        return self.job.state is JobState.SUCCEEDED

    @property
    def processing_error(self) -> str | None:
        return None if self.job is None or self.job.state.active else self.job.error

    @property
    def progress(self) -> int | None:
        return self.job.progress if self.processing and self.job else None


@dataclass(frozen=True)
class Page:
    videos: list[VideoInfo]
    #: Opaque; None on the last page.
    next_cursor: str | None


class Variant(enum.StrEnum):
    CURRENT = "current"  #: the stored video, resized or not
    ORIGINAL = "original"  #: the upload as it came


class VideoService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        disk: DiskBudget,
        runner: JobRunner,
        tools: Toolchain,
        signer: Signer,
        outcomes: JobOutcomes,
        outbox: Outbox,
        bus: EventBus,
    ) -> None:
        self._settings = settings
        self._signer = signer
        self._outcomes = outcomes
        self._outbox = outbox
        self._bus = bus
        self._keep_original = settings.storage.keep_original
        self._db = db
        self._storage = storage
        self._runner = runner
        self._tools = tools
        # Probes are processes that may take seconds: a pool of their own bounds how many run.
        self._probes = concurrent.futures.ThreadPoolExecutor(
            settings.ffmpeg.probe_concurrency, thread_name_prefix="probe"
        )
        self._publisher = Publisher(settings, db, storage, disk, tools, self._probes, outbox, bus)
        # One lock per video for PATCH and DELETE, so neither sees the other half-done.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, video_id: str) -> asyncio.Lock:
        lock = self._locks.get(video_id)
        if lock is None:
            lock = self._locks[video_id] = asyncio.Lock()
        return lock

    async def close(self) -> None:
        await asyncio.to_thread(self._probes.shutdown, wait=True, cancel_futures=True)

    async def reconcile(self) -> None:
        """Make rows and files agree after a crash or an upgrade.

        A file without a row, or a row without its file, is dropped. Rows from
        before originals were kept take their stored video as the original.
        """
        rows = await self._db.video_ids()
        storage = self._storage
        files = await asyncio.to_thread(storage.stored_video_ids)
        originals = await asyncio.to_thread(storage.stored_original_ids)
        for orphan in sorted((files | originals) - rows):
            log.warning("removing stored file with no database row", extra={"video_id": orphan})
            await asyncio.to_thread(storage.remove_video, orphan)
        missing = sorted(rows - files)
        if missing:
            for video_id in missing:
                log.warning("removing database row whose file is gone", extra={"video_id": video_id})
            await self._db.delete_videos(missing)
        if self._keep_original:
            await self._adopt_originals(originals)

    async def _adopt_originals(self, originals: set[str]) -> None:
        """Rows with no original recorded (an upgrade from a version that kept none): the stored
        video becomes the original, by hard link. A row whose original file is gone likewise."""
        adopted = 0
        for video in await self._db.videos_without_original():
            await asyncio.to_thread(self._storage.keep_as_original, video.id)
            await self._db.set_original(video.id, _original_of(video))
            adopted += 1
        for video_id in sorted(await self._db.video_ids()):
            if video_id not in originals:
                status = await self._db.get_status(video_id)
                if status.video.original is not None:
                    log.warning("original missing; keeping the stored video as the original",
                                extra={"video_id": video_id})  # fmt: skip
                    await asyncio.to_thread(self._storage.keep_as_original, video_id)
                    await self._db.set_original(video_id, _original_of(status.video))
        if adopted:
            log.info("kept %d stored video(s) as their originals (upgrade)", adopted)

    async def store(self, upload: IncomingUpload) -> VideoRecord:
        """POST /file/: receive the body, then publish it."""
        return await self._publisher.store(upload)

    async def publish(self, received: ReceivedFile, filename: str | None, video_id: str) -> VideoRecord:
        """A resumable upload whose last byte is in: the same checks and step as POST /file/."""
        return await self._publisher.publish(received, filename, video_id)

    async def describe(self, video_id: str) -> VideoInfo:
        return self._info(await self._db.get_status(video_id))

    async def status(self, video_id: str) -> VideoStatus:
        """The video's stored state: the same object until a write changes it (the status cache)."""
        return await self._db.get_status(video_id)

    def info(self, status: VideoStatus) -> VideoInfo:
        """What GET shows of a stored state, with a running job's progress as of now."""
        return self._info(status)

    async def catalogue(self, limit: int, cursor: str | None, processing: bool | None) -> Page:
        """A page of videos, newest first. The cursor is opaque and signed; a forged one is refused."""
        after = None
        if cursor is not None:
            try:
                state = self._signer.decode_cursor(cursor)
                after = PageKey(str(state["c"]), str(state["i"]))
            except (BadSignature, KeyError):
                raise InvalidRequest(
                    "cursor: not one this service handed out (or from before a restart);"
                    " start from the first page"
                ) from None
        statuses = await self._db.list_statuses(limit + 1, after, processing)
        more = len(statuses) > limit
        videos = [self._info(status) for status in statuses[:limit]]
        next_cursor = None
        if more:
            last = videos[-1]
            next_cursor = self._signer.encode_cursor({"c": last.created_at, "i": last.id})
        return Page(videos, next_cursor)

    def _info(self, status: VideoStatus) -> VideoInfo:
        return describe_status(status, self._keep_original, self._progress)

    def _progress(self, job: JobRecord, video: VideoRecord) -> int | None:
        if not video.duration_s:
            return None
        return read_progress(self._runner.progress_file(job.id), video.duration_s)

    async def content_path(self, video_id: str, variant: Variant) -> tuple[Path, VideoInfo]:
        """Where the bytes of a video (or its original) are, and what it is."""
        info = await self.describe(video_id)
        if variant is Variant.ORIGINAL:
            if not self._keep_original:
                raise OriginalNotKept
            return self._storage.original_path(video_id), info
        return self._storage.video_path(video_id), info

    async def start_resize(self, video_id: str, width: int, height: int, client: str | None = None) -> None:
        """Queue a resize; `client` (an API key's name) has its own share of the queue.

        A resize to the size the video has now, or (originals kept) to the original's
        size, needs no encoding: it ends at once, and GET shows it succeeded.
        """
        limits = self._settings.jobs
        for name, value in (("width", width), ("height", height)):
            if value > limits.max_dimension:
                raise InvalidRequest(
                    f"{name}: must be at most {limits.max_dimension} (max_dimension), got {value}"
                )
        if width * height > limits.max_output_pixels:
            raise InvalidRequest(
                f"{width}x{height} is {width * height} pixels, over the limit of {limits.max_output_pixels}"
                " (max_output_pixels); ask for a smaller size"
            )
        video = (await self._db.get_status(video_id)).video
        frames = video.frame_count or await self._count_frames(video)
        work = width * height * frames
        if work > limits.max_job_pixel_frames:
            raise InvalidRequest(
                f"resizing {frames} frames to {width}x{height} is {work} pixel-frames of work, over the limit"
                f" of {limits.max_job_pixel_frames} (max_job_pixel_frames); ask for a smaller size"
            )
        with self._runner.admission(client):  # 429 when the queue, or this client's share, is full
            async with self._lock(video_id):
                job = await self._db.create_job(video_id, width, height)
                video = (await self._db.get_status(video_id)).video
                original = video.original if self._keep_original else None
                if (width, height) == (video.width, video.height):
                    await self._outcomes.succeeded(job)
                    log.info("job finished: the video already has that size", extra={"job_id": job.id})
                    return
                if original is not None and (width, height) == (original.width, original.height):
                    await self._restore_original(job, original)
                    return
                try:
                    self._runner.submit(job, client)
                except BaseException:
                    # Refused (503): as if the request never came, so no failure to report later.
                    await self._db.discard_job(job)
                    raise

    async def _restore_original(self, job: JobRecord, original: Original) -> None:
        """The original's size was asked for: it is the answer, swapped in without encoding."""
        try:
            size = await asyncio.to_thread(self._storage.restore_original, job.video_id)
            info = await asyncio.get_running_loop().run_in_executor(
                self._probes, probe, str(self._storage.video_path(job.video_id)), self._tools
            )
        except (OSError, ProbeError) as e:
            await self._outcomes.failed(job, f"restoring the original failed: {e}")
            raise
        await self._outcomes.succeeded(job, size, info)
        log.info("job finished: the original restored", extra={"job_id": job.id, "video_id": job.video_id})

    async def _count_frames(self, video: VideoRecord) -> int:
        """Frames of a video stored before they were recorded: read its index once, and keep it."""
        path = str(self._storage.video_path(video.id))
        loop = asyncio.get_running_loop()
        try:
            tracks = await loop.run_in_executor(self._probes, read_tracks, path)
            frames = max((t.sample_count for t in tracks if t.kind == "vide"), default=0)
        except (BoxError, OSError):
            frames = 0
        if not frames:  # a fragmented file has no count in its index: assume 60 fps
            frames = max(1, round((video.duration_s or 0) * 60))
        await self._db.set_frame_count(video.id, frames)
        return frames

    async def delete(self, video_id: str) -> None:
        async with self._lock(video_id):
            status = await self._db.get_status(video_id)
            if status.active_job is not None:
                await self._runner.cancel_for_delete(status.active_job.id)
            # Row first: if removing the file then fails, the start-up reconciliation
            # removes the orphan; the reverse order would show a video with no bytes.
            with contextlib.suppress(VideoNotFound):  # gone meanwhile: the outcome is the same
                await self._db.delete_video(
                    video_id, outbox=self._outbox.message(VIDEO_DELETED, video_id, last_seen=status)
                )
            await asyncio.to_thread(self._storage.remove_video, video_id)
        log.info("video deleted", extra={"video_id": video_id})


def describe_status(
    status: VideoStatus,
    keep_original: bool,
    progress: Callable[[JobRecord, VideoRecord], int | None] | None = None,
) -> VideoInfo:
    """The view model of a video's row: what GET, the catalogue, live streams and webhooks show."""
    video, job = status.video, status.job
    job_info = None
    if job is not None:
        percent = None
        if job.state is JobState.SUCCEEDED:
            percent = 100
        elif job.state.active and progress is not None:
            percent = progress(job, video)
        job_info = JobInfo(
            state=job.state,
            width=job.width,
            height=job.height,
            progress=percent,
            error=job.error,
            queued_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
    return VideoInfo(
        id=video.id,
        filename=video.filename,
        size_bytes=video.size_bytes,
        width=video.width,
        height=video.height,
        duration_s=video.duration_s,
        created_at=video.created_at,
        updated_at=video.updated_at,
        original=video.original if keep_original else None,
        job=job_info,
    )


def _original_of(video: VideoRecord) -> Original:
    return Original(video.width, video.height, video.size_bytes, video.audio_codecs or ())
