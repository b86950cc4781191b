"""The ladder: every rendition not copied, encoded in one job of the derived lane (`jobs.ladder`).

Its admission never refuses the upload: over `max_job_pixel_frames` (every rung
counted) or the lane's queue cap, the renditions are marked failed with the
reason. Its time limit scales with the video (`derived_timeout_factor`). What it
wrote is moved into the package once whole (`Packages`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from ..config import Settings
from ..hooks import Pause
from ..jobs.contract import JobFiles, LadderJob, LadderRung, ResizeResult
from ..jobs.lane import DerivedLane
from ..media import hls
from ..media.ladder import Plan, Rung
from ..media.probe import MediaInfo, Toolchain
from ..store.records import JobState, Rendition, RenditionState
from ..store.storage import Storage, remove
from .packages import Packages, fresh, with_states


class Ladders:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        tools: Toolchain,
        lane: DerivedLane,
        packages: Packages,
        before: Pause | None = None,
    ) -> None:
        self._before = before
        self._settings = settings
        self._hls = settings.hls
        self._storage = storage
        self._tools = tools
        self._lane = lane
        self._packages = packages
        #: The job each video's ladder was handed to the lane with, to stop that very run.
        self._jobs: dict[str, LadderJob] = {}

    async def stop(self, video_id: str, task: asyncio.Task[None]) -> None:
        """Ask a video's ladder to stop: through its cancel file once a worker holds it; before, its
        build task is cancelled where it waits for one."""
        await self._lane.stop_or_cancel(self._jobs.get(video_id), task)

    async def run(
        self,
        video_id: str,
        source: Path,
        info: MediaInfo,
        the_plan: Plan,
        renditions: tuple[Rendition, ...],
        todo: list[int],
        keyframes: tuple[float, ...],
    ) -> None:
        package = self._storage.package_dir(video_id)
        audio = bool(info.audio_codecs) and not (package / hls.AUDIO).exists()
        refusal = self.refusal(info, [the_plan.rungs[i] for i in todo])
        if refusal is not None:
            await self._packages.end(video_id, todo, ResizeResult(JobState.FAILED, error=refusal))
            return
        files = JobFiles(self._storage.derived_job_dir(video_id, "ladder"))
        work = self._storage.package_work_dir(video_id)
        await asyncio.to_thread(fresh, files.directory, work)
        job = self._spec(info, source, files, work, the_plan, renditions, todo, audio, keyframes)
        self._jobs[video_id] = job

        async def started() -> None:
            await self._packages.set(
                video_id,
                with_states(
                    await self._packages.renditions(video_id), dict.fromkeys(todo, RenditionState.RUNNING)
                ),
            )

        try:
            if self._before is not None:
                await self._before()
            result = await self._lane.run(job, on_start=started)
        finally:
            self._jobs.pop(video_id, None)
        try:
            if result.outcome is JobState.CANCELLED:
                raise asyncio.CancelledError
            names = [renditions[i].name for i in todo] + ([hls.AUDIO] if audio else [])
            if result.outcome is JobState.SUCCEEDED and not await self._packages.install(video_id, names):
                result = ResizeResult(JobState.FAILED, error="the package could not be moved into place")
            await self._packages.end(video_id, todo, result)
        finally:
            await asyncio.to_thread(remove, files.directory)

    def _spec(
        self,
        info: MediaInfo,
        source: Path,
        files: JobFiles,
        work: Path,
        the_plan: Plan,
        renditions: tuple[Rendition, ...],
        todo: list[int],
        audio: bool,
        keyframes: tuple[float, ...],
    ) -> LadderJob:
        settings = self._settings
        timeout = max(settings.jobs.job_timeout_s, self._hls.derived_timeout_factor * (info.duration_s or 0))
        rungs = tuple(
            LadderRung(
                renditions[i].name,
                the_plan.rungs[i].width,
                the_plan.rungs[i].height,
                the_plan.rungs[i].maxrate,
            )
            for i in todo
        )
        return LadderJob(
            source=str(source),
            directory=str(files.directory),
            output=str(work),
            rungs=rungs,
            audio=audio,
            segment_s=self._hls.hls_segment_s,
            keyframes_at=keyframes,
            tools=self._tools,
            x264_preset=settings.ffmpeg.x264_preset,
            x264_crf=settings.ffmpeg.x264_crf,
            timeout_s=timeout,
            max_memory_bytes=settings.ffmpeg.ffmpeg_max_memory_bytes,
            min_free_bytes=settings.storage.min_free_bytes,
            max_attempts=settings.jobs.job_max_attempts if self._lane.cluster else 0,
        )

    def refusal(self, info: MediaInfo, rungs: Sequence[Rung]) -> str | None:
        """Why the ladder may not run (its cost, the lane's queue): the renditions fail, the upload stays."""
        jobs = self._settings.jobs
        frames = info.frame_count or int((info.duration_s or 0) * (info.fps or 30))
        pixel_frames = sum(r.width * r.height for r in rungs) * frames
        if pixel_frames > jobs.max_job_pixel_frames:
            return (
                f"the ladder is {pixel_frames} pixel-frames (every rendition's width x height x frames),"
                f" over the limit of {jobs.max_job_pixel_frames} (max_job_pixel_frames)"
            )
        return self._lane.refusal_for_queue()
