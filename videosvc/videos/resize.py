"""Resize: the rules of a PATCH, its place in the queue, and the resizes that need no encoding."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from ..aio import KeyedLocks
from ..config import JobSettings
from ..errors import InvalidRequest
from ..jobs.contract import ResizeResult
from ..jobs.outcomes import JobOutcomes
from ..jobs.runner import JobRunner
from ..media.isobmff import BoxError, read_tracks
from ..media.probe import ProbeError, Toolchain, probe
from ..store.jobs import JobRepository
from ..store.records import JobRecord, JobState, VideoRecord
from ..store.storage import Storage, remove
from ..store.videos import VideoRepository

log = logging.getLogger(__name__)

#: Frames assumed per second of a fragmented file, whose index counts none.
ASSUMED_FPS = 60


class Resizes:
    def __init__(
        self,
        settings: JobSettings,
        keep_original: bool,
        videos: VideoRepository,
        jobs: JobRepository,
        storage: Storage,
        runner: JobRunner,
        outcomes: JobOutcomes,
        tools: Toolchain,
        probes: concurrent.futures.Executor,
        locks: KeyedLocks,
    ) -> None:
        self._settings = settings
        self._keep_original = keep_original
        self._videos = videos
        self._jobs = jobs
        self._storage = storage
        self._runner = runner
        self._outcomes = outcomes
        self._tools = tools
        self._probes = probes
        self._locks = locks

    async def start(self, video_id: str, width: int, height: int, client: str | None = None) -> None:
        """Queue a resize; `client` (an API key's name) has its own share of the queue.

        A resize to the size the video has now, or (originals kept) to the original's
        size, needs no encoding: it ends at once, and GET shows it succeeded.
        """
        self._check_output(width, height)
        video = (await self._videos.status(video_id)).video
        frames = video.frame_count or await self._count_frames(video)
        work, limit = width * height * frames, self._settings.max_job_pixel_frames
        if work > limit:
            raise InvalidRequest(
                f"resizing {frames} frames to {width}x{height} is {work} pixel-frames of work, over the limit"
                f" of {limit} (max_job_pixel_frames); ask for a smaller size"
            )
        with self._runner.admission.place(client):  # 429 when the queue, or this client's share, is full
            async with self._locks(video_id):
                job = await self._jobs.create(video_id, width, height)
                video = (await self._videos.status(video_id)).video
                original = video.original if self._keep_original else None
                if (width, height) == (video.width, video.height):
                    await self._outcomes.record(job, ResizeResult(JobState.SUCCEEDED))
                    log.info("job finished: the video already has that size", extra={"job_id": job.id})
                elif original is not None and (width, height) == (original.width, original.height):
                    await self._restore_original(job)
                else:
                    await self._submit(job, client)

    def _check_output(self, width: int, height: int) -> None:
        limits = self._settings
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

    async def _submit(self, job: JobRecord, client: str | None) -> None:
        try:
            self._runner.submit(job, client)
        except BaseException:
            # Refused (503): as if the request never came, so no failure to report later.
            await self._jobs.discard(job)
            raise

    async def _restore_original(self, job: JobRecord) -> None:
        """The original's size was asked for: it is the answer, swapped in without encoding."""
        output = None
        try:
            output = await asyncio.to_thread(self._storage.original_as_output, job.video_id)
            loop = asyncio.get_running_loop()
            info = await loop.run_in_executor(self._probes, probe, str(output), self._tools)
        except (OSError, ProbeError) as e:
            if output is not None:
                await asyncio.to_thread(remove, output)
            await self._outcomes.record(
                job, ResizeResult(JobState.FAILED, error=f"restoring the original failed: {e}")
            )
            raise
        await self._outcomes.record(job, ResizeResult(JobState.SUCCEEDED, output=str(output), info=info))
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
        if not frames:  # a fragmented file has no count in its index
            frames = max(1, round((video.duration_s or 0) * ASSUMED_FPS))
        await self._videos.set_frame_count(video.id, frames)
        return frames
