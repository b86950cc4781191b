"""What is derived from each stored video, built in the background: its HLS package (SPEC §13) and
its pictures (§14), in the derived lane (§17).

At store time both are planned: the renditions and the pictures, `queued`, are
written with the video's row. Then, off every request's path, in this order:

1. *Fast first play.* An upload a player takes as it is (`media.ladder`) is cut
   into segments without re-encoding, at once, by a bounded child process of
   this server (not behind queued work): it is the top rendition, and the
   master playlist lists it as soon as it is whole.
2. *The pictures.* The poster and storyboard, one cheap job in the derived lane
   (`videos.pictures`).
3. *The ladder.* One job in the derived lane encodes every other rendition from
   one decode (`jobs.ladder`), with keyframes at the copied rendition's segment
   starts (or every `hls_segment_s`), so players switch at any segment.

A rendition is listed only once it is whole and flushed: its folder is moved
into the package first, then the master playlist is replaced. A crash halfway
loses nothing listed; the next start builds what is not ready, from the start.
A PATCH resize never touches the package: it is built from the upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from ..config import Settings
from ..errors import VideoNotFound
from ..events.bus import EventBus
from ..events.outbox import Outbox
from ..hooks import Hooks
from ..jobs.contract import JobFiles
from ..jobs.ladder import copy_name
from ..jobs.lane import DerivedLane
from ..media import hls
from ..media.ladder import Plan, plan, plan_ladder
from ..media.probe import InputLimits, MediaInfo, ProbeError, Toolchain, inspect_upload
from ..store.records import Pictures, Rendition, RenditionState, VideoRecord
from ..store.storage import Storage
from ..store.videos import VideoRepository
from .first_play import FirstPlay
from .ladders import Ladders
from .packages import UNFINISHED, Packages, planned_renditions
from .pictures import PictureMaker

log = logging.getLogger(__name__)


#: At shutdown, how long builds get to notice their cancel files (ffmpeg looks every 0.1 s).
STOP_TIMEOUT_S = 5.0


class Streaming:
    def __init__(
        self,
        settings: Settings,
        videos: VideoRepository,
        storage: Storage,
        tools: Toolchain,
        lane: DerivedLane,
        outbox: Outbox,
        bus: EventBus,
        hooks: Hooks,
    ) -> None:
        self._settings = settings
        self._hls = settings.hls
        self._videos = videos
        self._storage = storage
        self._tools = tools
        self._lane = lane
        self._packages = Packages(videos, storage, outbox, bus)
        self._limits = InputLimits(settings.uploads.max_input_pixels, settings.uploads.max_input_streams)
        self._first_play = FirstPlay(settings, storage, tools, self._packages)
        self._ladders = Ladders(settings, storage, tools, lane, self._packages, hooks.before_ladder)
        self._pictures = PictureMaker(settings, videos, storage, tools, lane, outbox)
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[str] = set()
        self._backfill: asyncio.Task[None] | None = None

    # -- what the other rooms ask

    def planned(self, info: MediaInfo) -> tuple[Rendition, ...] | None:
        """The renditions a new upload will get (None when HLS is off)."""
        if not self._hls.hls_enabled:
            return None
        return planned_renditions(plan(info, self._hls.hls_ladder, self._hls.hls_segment_s))

    def planned_pictures(self) -> Pictures | None:
        """The pictures a new upload will get (None when they are off)."""
        return self._pictures.planned()

    def stored(self, video: VideoRecord, info: MediaInfo) -> None:
        """A video was stored with a planned package or pictures: build them now, in the background."""
        if video.renditions is not None or video.pictures is not None:
            self._packages.stored_at[video.id] = time.monotonic()
            self._start(video.id, info)

    async def stop(self, video_id: str) -> None:
        """Stop what builds the video's package (a DELETE); returns once it ended."""
        task = self._builds.get(video_id)
        if task is None:
            return
        self._stopping.add(video_id)
        try:
            await self._ask_to_stop(video_id, task)
            await asyncio.wait([task])
        finally:
            self._stopping.discard(video_id)

    async def _ask_to_stop(self, video_id: str, task: asyncio.Task[None]) -> None:
        """Its ffmpeg through the cancel files (a copy, a ladder on a worker); a ladder still waiting
        for a worker, by cancelling its task."""
        for step in ("copy", "pictures", "ladder"):
            with contextlib.suppress(FileNotFoundError):
                JobFiles(self._storage.derived_job_dir(video_id, step)).cancel.touch()
        await self._pictures.stop(video_id, task)
        await self._ladders.stop(video_id, task)

    async def resume(self) -> None:
        """At start: finish the packages and pictures a stop cut short; plan those of videos stored
        without them (turned on since, or an upgrade), built one at a time in the background."""
        unfinished: dict[str, VideoRecord] = {}
        for video in await self._videos.with_renditions(planned=True):
            if any(r.state in UNFINISHED for r in video.renditions or ()):
                unfinished[video.id] = video
        for video in await self._videos.with_pictures(planned=True):
            if video.pictures is not None and video.pictures.state in UNFINISHED:
                unfinished[video.id] = video
        for video_id in unfinished:
            log.info("resuming what is derived from a video", extra={"video_id": video_id})
            self._start(video_id, None)
        waiting: dict[str, VideoRecord] = {}
        if self._hls.hls_enabled:
            waiting |= {video.id: video for video in await self._videos.with_renditions(planned=False)}
        if self._settings.pictures.pictures_enabled:
            waiting |= {video.id: video for video in await self._videos.with_pictures(planned=False)}
        todo = sorted((video for video in waiting.values() if video.id not in unfinished), key=_created)
        if todo:
            log.info("%d stored video(s) get an HLS package or pictures, one at a time", len(todo))
            self._backfill = asyncio.create_task(self._plan_each(todo), name="derived-backfill")

    async def close(self) -> None:
        """Stop every build (its ffmpeg too); what is not ready stays planned, for the next start."""
        if self._backfill is not None:
            self._backfill.cancel()
        for video_id, task in list(self._builds.items()):
            await self._ask_to_stop(video_id, task)
        tasks = [task for task in (self._backfill, *self._builds.values()) if task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- building

    def _start(self, video_id: str, info: MediaInfo | None) -> None:
        task = asyncio.create_task(self._build(video_id, info), name=f"hls-{video_id}")
        self._builds[video_id] = task

        def forget(_: object) -> None:
            if self._builds.get(video_id) is task:
                del self._builds[video_id]

        task.add_done_callback(forget)

    async def _plan_each(self, videos: Sequence[VideoRecord]) -> None:
        for video in videos:
            try:
                info = await asyncio.to_thread(
                    inspect_upload, str(self._source(video.id)), self._tools, self._limits
                )
            except (ProbeError, OSError) as e:
                log.warning("cannot plan an HLS package: %s", e, extra={"video_id": video.id})
                continue
            renditions = self.planned(info) if video.renditions is None else None
            pictures = self.planned_pictures() if video.pictures is None else None
            if renditions is not None and not await self._videos.set_renditions(video.id, renditions):
                continue  # deleted meanwhile
            if pictures is not None and not await self._videos.set_pictures(video.id, pictures):
                continue
            if renditions is None and pictures is None:
                continue
            self._start(video.id, info)
            await asyncio.wait([self._builds[video.id]])

    async def _build(self, video_id: str, info: MediaInfo | None) -> None:
        try:
            await self._build_package(video_id, info)
        except VideoNotFound:
            pass  # deleted meanwhile
        except asyncio.CancelledError:
            if video_id not in self._stopping:
                raise  # a shutdown: what is unfinished stays planned
        except Exception as e:  # a bug or a database failure: fail what is unfinished, never leave it
            log.exception("building what is derived from a video failed", extra={"video_id": video_id})
            with contextlib.suppress(Exception):
                await self._packages.end_unfinished(video_id, f"internal error: {type(e).__name__}")
            with contextlib.suppress(Exception):
                await self._pictures.end_unfinished(video_id, f"internal error: {type(e).__name__}")
        finally:
            self._packages.stored_at.pop(video_id, None)

    async def _build_package(self, video_id: str, info: MediaInfo | None) -> None:
        source = self._source(video_id)
        if info is None:
            info = await asyncio.to_thread(inspect_upload, str(source), self._tools, self._limits)
        video = (await self._videos.status(video_id)).video
        if video.renditions is None:  # pictures only (HLS off)
            await self._make_pictures(video_id, source, info)
            return
        the_plan = plan(info, self._hls.hls_ladder, self._hls.hls_segment_s)
        renditions = await self._packages.renditions(video_id)
        if len(renditions) != len(the_plan.rungs):  # planned under other settings: plan again
            renditions = await self._packages.set(video_id, planned_renditions(the_plan))
        package = self._storage.package_dir(video_id)
        await asyncio.to_thread(package.mkdir, parents=True, exist_ok=True)
        keyframes: tuple[float, ...] = ()
        if the_plan.copy_first:
            if renditions[0].state in UNFINISHED:
                copied = await self._first_play.run(video_id, source, info, renditions)
                if copied is None:  # a player may take it, but ffmpeg would not cut it: encode it all
                    rungs = plan_ladder(info.width, info.height, self._hls.hls_ladder, info.fps)
                    the_plan = Plan(tuple(rungs), False, "the stream copy failed")
                    renditions = await self._packages.set(video_id, planned_renditions(the_plan))
                renditions = await self._packages.renditions(video_id)
            if the_plan.copy_first and renditions[0].state is RenditionState.READY:
                keyframes = (await asyncio.to_thread(hls.measure, package / copy_name())).segment_starts
        await self._make_pictures(video_id, source, info)
        todo = [i for i, r in enumerate(renditions) if r.state in UNFINISHED]
        if todo:
            await self._ladders.run(video_id, source, info, the_plan, renditions, todo, keyframes)

    async def _make_pictures(self, video_id: str, source: Path, info: MediaInfo) -> None:
        """Right after fast first play, before the ladder: the poster and storyboard, if planned."""
        pictures = (await self._videos.status(video_id)).video.pictures
        if pictures is not None and pictures.state in UNFINISHED:
            await self._pictures.make(video_id, source, info)

    def _source(self, video_id: str) -> Path:
        """The upload as it came: the original when it is kept, else the stored video."""
        original = self._storage.original_path(video_id)
        return original if original.exists() else self._storage.video_path(video_id)


def _created(video: VideoRecord) -> str:
    return video.created_at
