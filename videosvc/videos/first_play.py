"""Fast first play: an upload a player takes as it is becomes the top rendition without re-encoding.

Its own streams are cut into segments at its keyframes by a stream copy (~0.1-0.5 s for
minutes of video), run at once by this server as a bounded child process (`COPIES_AT_ONCE`,
a time limit, a memory ceiling, the disk margin): not behind queued work, so the master
playlist lists it within seconds of the upload. The ladder then adds the other renditions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from ..config import Settings
from ..jobs.contract import JobFiles
from ..jobs.ladder import build_copy_args, copy_name
from ..jobs.supervise import Rules, run_ffmpeg
from ..media import hls
from ..media.probe import MediaInfo, Toolchain
from ..store.records import JobState, Rendition, RenditionState
from ..store.storage import Storage, remove
from .packages import Packages, fresh, with_states

log = logging.getLogger(__name__)

#: Stream copies at once: each is a short, I/O-bound child process.
COPIES_AT_ONCE = 2
#: A stream copy's time limit: it reads and writes the file once.
COPY_TIMEOUT_S = 300.0


class FirstPlay:
    def __init__(self, settings: Settings, storage: Storage, tools: Toolchain, packages: Packages) -> None:
        self._settings = settings
        self._storage = storage
        self._tools = tools
        self._packages = packages
        self._copies = asyncio.Semaphore(COPIES_AT_ONCE)

    async def run(
        self, video_id: str, source: Path, info: MediaInfo, renditions: tuple[Rendition, ...]
    ) -> Rendition | None:
        """Fast first play: the upload's own streams, segmented, as the top rendition (and the audio)."""
        files = JobFiles(self._storage.derived_job_dir(video_id, "copy"))
        work = self._storage.package_work_dir(video_id)
        async with self._copies:
            await self._packages.set(video_id, with_states(renditions, {0: RenditionState.RUNNING}))
            await asyncio.to_thread(fresh, files.directory, work)
            audio = bool(info.audio_codecs)
            args = build_copy_args(
                str(source), str(work), audio, self._settings.hls.hls_segment_s, self._tools, files
            )
            rules = Rules(
                COPY_TIMEOUT_S, self._settings.ffmpeg.ffmpeg_max_memory_bytes,
                self._settings.storage.min_free_bytes, "not enough free disk space (min_free_bytes)",
            )  # fmt: skip
            try:
                _, ended = await asyncio.to_thread(run_ffmpeg, args, files, rules, time.monotonic(), None)
            finally:
                await asyncio.to_thread(remove, files.directory)
        if ended is not None and ended.outcome is JobState.CANCELLED:
            raise asyncio.CancelledError
        names = [copy_name()] + ([hls.AUDIO] if audio else [])
        if ended is not None or not await self._packages.install(video_id, names):
            log.warning(
                "the upload could not be packaged as it is; encoding every rendition",
                extra={"video_id": video_id, "error": ended.error if ended else "incomplete"},
            )
            return None
        ready = await self._packages.record(video_id, [0], {})
        return ready[0]
