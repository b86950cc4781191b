"""A video's poster and storyboard: planned at store time, made in the derived lane (SPEC §14, §17).

They are made from the upload right after fast first play and before the
ladder, by one job (`jobs.pictures`) on the lane's backend (a local process at
low priority, or the Dask cluster). Their admission never refuses an upload:
over `max_job_pixel_frames` or the lane's queue cap, the pictures are marked
failed with the reason. What the job wrote is moved into `pictures/<id>/` once
whole; then the row says `ready`, and GET shows `posterUrl` and `storyboardUrl`.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from ..config import Settings
from ..errors import VideoNotFound
from ..events.outbox import PICTURES_FAILED, PICTURES_READY, Outbox
from ..jobs.contract import JobFiles, PicturesJob, ResizeResult
from ..jobs.lane import DerivedLane
from ..jobs.pictures import RESULT
from ..media.pictures import POSTER, POSTER_MAX_SIDE, SPRITE, STORYBOARD, fit, plan_storyboard
from ..media.probe import MediaInfo, Toolchain
from ..store.records import JobState, Pictures, RenditionState
from ..store.storage import Storage, remove
from ..store.videos import VideoRepository

#: Pictures whose work is not over.
UNFINISHED = (RenditionState.QUEUED, RenditionState.RUNNING)
FILES = (POSTER, SPRITE, STORYBOARD)


class PictureMaker:
    def __init__(
        self,
        settings: Settings,
        videos: VideoRepository,
        storage: Storage,
        tools: Toolchain,
        lane: DerivedLane,
        outbox: Outbox,
    ) -> None:
        self._settings = settings
        self._videos = videos
        self._storage = storage
        self._tools = tools
        self._lane = lane
        self._outbox = outbox
        #: The job each video's pictures were handed to the lane with, to stop that very run.
        self._jobs: dict[str, PicturesJob] = {}

    def planned(self) -> Pictures | None:
        """What a new upload gets (None when pictures are off)."""
        return Pictures(RenditionState.QUEUED) if self._settings.pictures.pictures_enabled else None

    async def stop(self, video_id: str, task: asyncio.Task[None]) -> None:
        """Through its cancel file once a worker holds it; before, its build task is cancelled."""
        await self._lane.stop_or_cancel(self._jobs.get(video_id), task)

    async def make(self, video_id: str, source: Path, info: MediaInfo) -> None:
        """Make the video's poster and storyboard, and record how that ended."""
        job = self._spec(video_id, source, info)
        refusal = self.refusal(info, job)
        if refusal is not None:
            await self._record(video_id, Pictures(RenditionState.FAILED, refusal))
            return
        files = JobFiles(Path(job.directory))
        await asyncio.to_thread(_fresh, files.directory, Path(job.output))
        self._jobs[video_id] = job

        async def started() -> None:
            await self._record(video_id, Pictures(RenditionState.RUNNING))

        try:
            result = await self._lane.run(job, on_start=started)
        finally:
            self._jobs.pop(video_id, None)
        try:
            if result.outcome is JobState.CANCELLED:
                raise asyncio.CancelledError
            await self._ended(video_id, job, result)
        finally:
            await asyncio.to_thread(remove, files.directory)
            await asyncio.to_thread(remove, Path(job.output))

    async def _ended(self, video_id: str, job: PicturesJob, result: ResizeResult) -> None:
        if result.outcome is JobState.SUCCEEDED:
            try:
                poster_time = await asyncio.to_thread(
                    _install, Path(job.output), self._storage.pictures_dir(video_id)
                )
            except (OSError, ValueError) as e:
                result = ResizeResult(
                    JobState.FAILED, error=f"the pictures could not be moved into place: {e}"
                )
            else:
                await self._record(
                    video_id, Pictures(RenditionState.READY, poster_time=poster_time), PICTURES_READY
                )
                return
        await self._record(
            video_id,
            Pictures(RenditionState.FAILED, result.error or "the pictures job failed"),
            PICTURES_FAILED,
        )

    async def _record(self, video_id: str, pictures: Pictures, event: str | None = None) -> None:
        messages = self._outbox.message(event, video_id) if event else ()
        if not await self._videos.set_pictures(video_id, pictures, messages):
            raise VideoNotFound(video_id)

    async def end_unfinished(self, video_id: str, error: str) -> None:
        pictures = (await self._videos.status(video_id)).video.pictures
        if pictures is not None and pictures.state in UNFINISHED:
            await self._record(video_id, Pictures(RenditionState.FAILED, error), PICTURES_FAILED)

    def refusal(self, info: MediaInfo, job: PicturesJob) -> str | None:
        """Why the job may not run (its cost, the lane's queue): the pictures fail, the upload stays."""
        jobs = self._settings.jobs
        if not job.keyframes_only:  # every frame is decoded: as costly as a resize of the video
            frames = info.frame_count or int((info.duration_s or 0) * (info.fps or 30))
            pixel_frames = info.width * info.height * frames
            if pixel_frames > jobs.max_job_pixel_frames:
                return (
                    f"its keyframes are too far apart for a cheap storyboard, and decoding every frame is"
                    f" {pixel_frames} pixel-frames, over max_job_pixel_frames ({jobs.max_job_pixel_frames})"
                )
        return self._lane.refusal_for_queue()

    def _spec(self, video_id: str, source: Path, info: MediaInfo) -> PicturesJob:
        return pictures_job(
            self._settings,
            info,
            source,
            self._storage.derived_job_dir(video_id, "pictures"),
            self._storage.pictures_work_dir(video_id),
            self._tools,
            cluster=self._lane.cluster,
        )


def pictures_job(
    settings: Settings,
    info: MediaInfo,
    source: Path,
    directory: Path,
    output: Path,
    tools: Toolchain,
    cluster: bool,
) -> PicturesJob:
    """The job that makes a video's pictures (what the derived lane runs, and what bench.pictures times)."""
    duration = info.duration_s or 0.0
    board = plan_storyboard(info.width, info.height, duration, info.max_keyframe_gap_s)
    poster_width, poster_height = fit(info.width, info.height, POSTER_MAX_SIDE)
    return PicturesJob(
        source=str(source),
        directory=str(directory),
        output=str(output),
        duration_s=duration,
        poster_width=poster_width,
        poster_height=poster_height,
        interval_s=board.interval_s,
        count=board.count,
        tile_width=board.tile_width,
        tile_height=board.tile_height,
        columns=board.columns,
        keyframes_only=board.keyframes_only,
        tools=tools,
        timeout_s=max(settings.jobs.job_timeout_s, settings.hls.derived_timeout_factor * duration),
        max_memory_bytes=settings.ffmpeg.ffmpeg_max_memory_bytes,
        min_free_bytes=settings.storage.min_free_bytes,
        max_attempts=settings.jobs.job_max_attempts if cluster else 0,
    )


def _fresh(*folders: Path) -> None:
    for folder in folders:
        remove(folder)
        folder.mkdir(parents=True)


def _install(work: Path, target: Path) -> float:
    """The pictures, flushed, renamed into the video's folder; the poster's time."""
    poster_time = float(json.loads((work / RESULT).read_text(encoding="utf-8"))["poster_time"])
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        with open(work / name, "rb") as f:
            os.fsync(f.fileno())
        os.replace(work / name, target / name)
    remove(work)  # before the row says ready: nothing half-made is left beside what is shown
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return poster_time
