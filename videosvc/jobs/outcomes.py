"""The one place where a job ends: the stored file replaced, then its row, its webhook (in the
same transaction) and its event.

Every ending goes through `record`, whoever decides it: the runner at the end of
a run, the start-up recovery (a job that finished before a crash, or one that
was interrupted too often), and the resize use case (a resize that needs no
encoding, or the original restored). "Replace, then record" is done here
only: a crash between the two leaves the new video with an active row, which
the next start recognises (`jobs.recovery`) and records.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path

from ..events.bus import EventBus, JobEnded
from ..events.outbox import JOB_FAILED, JOB_SUCCEEDED, Outbox
from ..hooks import Pause
from ..store.jobs import JobRepository
from ..store.records import JobRecord, JobState, VideoShape
from ..store.storage import Storage
from .contract import ResizeResult

log = logging.getLogger(__name__)


class JobOutcomes:
    def __init__(
        self,
        jobs: JobRepository,
        storage: Storage,
        outbox: Outbox,
        bus: EventBus,
        before_record: Pause | None = None,
    ) -> None:
        self._jobs = jobs
        self._storage = storage
        self._outbox = outbox
        self._bus = bus
        self._before_record = before_record

    async def record(self, job: JobRecord, result: ResizeResult) -> tuple[tuple[str, float], ...]:
        """End `job` as `result` says; returns the steps of a success, `replace` and `record` included.

        A success with an `output` file replaces the stored video with it first; one with `info` but
        no output found its video already in place (a crash between replace and record); one with
        neither changed nothing (the video had the asked size already).
        """
        steps = result.steps
        if result.outcome is JobState.SUCCEEDED:
            steps = await self._succeeded(job, result)
        elif result.outcome is JobState.FAILED:
            messages = self._outbox.message(JOB_FAILED, job.video_id)
            await self._jobs.end(job, JobState.FAILED, result.error or "the job failed", messages)
        else:
            await self._jobs.end(job, JobState.CANCELLED, "the job was cancelled")
        self._bus.emit(JobEnded(job.id, job.video_id, result.outcome, result.elapsed_s, steps))
        return steps

    async def end_run(
        self, job: JobRecord, result: ResizeResult, *, deleted: bool, shutting_down: bool
    ) -> None:
        """A run of a job is over: recorded as it ended, and logged; or, when its video was deleted,
        only told (the row went with the video); or, cut off by a shutdown, queued for the next start."""
        fields = {"job_id": job.id, "video_id": job.video_id, "elapsed_s": round(result.elapsed_s, 3)}
        if result.outcome is JobState.SUCCEEDED and (result.output is None or result.info is None):
            result = dataclasses.replace(
                result, outcome=JobState.FAILED, error="the worker returned no output"
            )
        try:
            if deleted:  # `video.deleted` told the world; a cancel all the same for the metrics
                self._bus.emit(JobEnded(job.id, job.video_id, JobState.CANCELLED, result.elapsed_s))
                log.info("job dropped: its video was deleted", extra=fields)
            elif result.outcome is JobState.CANCELLED and shutting_down:
                await self._jobs.requeue(job)
                log.info("job interrupted by shutdown; it will resume at next start", extra=fields)
            else:
                steps = await self.record(job, result)
                if result.outcome is JobState.SUCCEEDED:
                    log.info(
                        "job finished", extra={**fields, **{f"{name}_s": round(s, 3) for name, s in steps}}
                    )
                elif result.outcome is JobState.FAILED:
                    log.warning("job failed", extra={**fields, "error": result.error or "the job failed"})
        except Exception as e:
            log.exception("recording the job's outcome failed", extra=fields)
            with contextlib.suppress(Exception):
                error = f"internal error while finishing: {type(e).__name__}"
                await self.record(job, ResizeResult(JobState.FAILED, error=error))

    async def _succeeded(self, job: JobRecord, result: ResizeResult) -> tuple[tuple[str, float], ...]:
        steps = result.steps
        messages = self._outbox.message(JOB_SUCCEEDED, job.video_id)
        if result.info is None:
            await self._jobs.end(job, JobState.SUCCEEDED, messages=messages)
            return steps
        if result.output is not None:
            replacing = time.monotonic()
            size = await asyncio.to_thread(self._storage.move_into_place, Path(result.output), job.video_id)
            steps = (*steps, ("replace", time.monotonic() - replacing))
            if self._before_record is not None:
                await self._before_record()
        else:  # replaced before a crash: the stored video is the output already
            size = await asyncio.to_thread(lambda: self._storage.video_path(job.video_id).stat().st_size)
        recording = time.monotonic()
        info = result.info
        shape = VideoShape(
            size, info.width, info.height, info.duration_s, info.audio_codecs, info.frame_count
        )
        await self._jobs.succeed(job, shape, messages)
        return (*steps, ("record", time.monotonic() - recording)) if steps else ()
