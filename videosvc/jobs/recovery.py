"""At start: the jobs the last run accepted but did not finish are recorded, run again, or given up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..config import JobSettings
from ..media.probe import ProbeError, Toolchain, probe
from ..store.jobs import JobRepository
from ..store.records import JobRecord, JobState
from ..store.storage import Storage
from ..store.videos import VideoRepository
from .contract import ResizeResult
from .outcomes import JobOutcomes

log = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self,
        settings: JobSettings,
        jobs: JobRepository,
        videos: VideoRepository,
        storage: Storage,
        tools: Toolchain,
        outcomes: JobOutcomes,
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._videos = videos
        self._storage = storage
        self._tools = tools
        self._outcomes = outcomes

    async def resume(self, submit: Callable[[JobRecord], None]) -> None:
        """Each interrupted job: recorded (it had finished), given up (too many attempts), or submitted."""
        limit = self._settings.job_max_attempts
        for job in await self._jobs.active():
            if await self._finished_before_the_crash(job):
                continue
            if job.attempts >= limit:
                error = (
                    f"interrupted {job.attempts} time(s) by a crash or restart;"
                    f" gave up (job_max_attempts={limit})"
                )
                await self._outcomes.record(job, ResizeResult(JobState.FAILED, error=error))
                log.warning("job failed", extra={"job_id": job.id, "video_id": job.video_id, "error": error})
            else:
                log.info("resuming interrupted job", extra={"job_id": job.id, "video_id": job.video_id})
                submit(job)

    async def _finished_before_the_crash(self, job: JobRecord) -> bool:
        """A crash between replacing the video and recording it leaves the new video with
        an active row: record it as done instead of encoding it again (or failing it)."""
        path = self._storage.video_path(job.video_id)
        try:
            info = await asyncio.to_thread(probe, str(path), self._tools)
        except (ProbeError, OSError):
            return False
        video = (await self._videos.status(job.video_id)).video
        if (info.width, info.height) != (job.width, job.height) or (video.width, video.height) == (
            job.width,
            job.height,
        ):
            return False
        await self._outcomes.record(job, ResizeResult(JobState.SUCCEEDED, info=info))  # in place already
        log.info("job had finished before the restart; recorded it", extra={"job_id": job.id})
        return True
