"""The one place where a job ends: its row, its webhook (in the same transaction), its event.

Every ending goes through here, whoever decides it: the runner at the end of a
run, the start-up recovery (a job that finished before a crash, or one that
was interrupted too often), and the service (a resize that needs no encoding).
Webhooks, live streams and metrics hear of it as subscribers, not as edits here.
"""

from __future__ import annotations

import time

from ..events import JOB_FAILED, JOB_SUCCEEDED, EventBus, JobEnded, Outbox
from ..media.probe import MediaInfo
from ..store.db import Database, JobRecord, JobState


class JobOutcomes:
    def __init__(self, db: Database, outbox: Outbox, bus: EventBus) -> None:
        self._db = db
        self._outbox = outbox
        self._bus = bus

    async def succeeded(
        self,
        job: JobRecord,
        size_bytes: int | None = None,
        info: MediaInfo | None = None,
        elapsed_s: float = 0.0,
        steps: tuple[tuple[str, float], ...] = (),
    ) -> None:
        """`info` is the stored video's new shape; None when the video did not change (no encoding).

        `steps`: the seconds each step of the job took so far; the record is timed here.
        """
        recording = time.monotonic()
        messages = self._outbox.message(JOB_SUCCEEDED, job.video_id)
        if info is None or size_bytes is None:
            await self._db.end_job(job, JobState.SUCCEEDED, outbox=messages)
        else:
            await self._db.succeed_job(job, size_bytes, info, outbox=messages)
        steps = (*steps, ("record", time.monotonic() - recording)) if steps else ()
        self._bus.emit(JobEnded(job.id, job.video_id, JobState.SUCCEEDED.value, elapsed_s, steps))

    async def failed(self, job: JobRecord, error: str, elapsed_s: float = 0.0) -> None:
        await self._db.end_job(
            job, JobState.FAILED, error, outbox=self._outbox.message(JOB_FAILED, job.video_id)
        )
        self._bus.emit(JobEnded(job.id, job.video_id, JobState.FAILED.value, elapsed_s))

    async def cancelled(self, job: JobRecord, elapsed_s: float = 0.0) -> None:
        await self._db.end_job(job, JobState.CANCELLED, "the job was cancelled")
        self._bus.emit(JobEnded(job.id, job.video_id, JobState.CANCELLED.value, elapsed_s))

    def dropped(self, job: JobRecord, elapsed_s: float = 0.0) -> None:
        """Its video was deleted, the row with it (`video.deleted` told that); a cancel all the same."""
        self._bus.emit(JobEnded(job.id, job.video_id, JobState.CANCELLED.value, elapsed_s))
