"""The `jobs` table: one row per resize asked for; at most one active per video (a unique index)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..errors import JobAlreadyActive, VideoNotFound
from .database import Database, Transaction
from .outbox import OutboxRepository
from .records import ACTIVE_STATES, JobRecord, JobState, OutboxMessage, VideoShape, sql_list, utc_now
from .rows import job_of


class JobRepository:
    def __init__(self, db: Database, outbox: OutboxRepository) -> None:
        self._db = db
        self._outbox = outbox

    async def create(self, video_id: str, width: int, height: int) -> JobRecord:
        now = utc_now()

        async def change(tx: Transaction) -> int:
            cursor = await tx.execute(
                "INSERT INTO jobs (video_id, width, height, state, created_at)"
                " SELECT id, ?, ?, ?, ? FROM videos WHERE id = ?",
                (width, height, JobState.QUEUED.value, now, video_id),
            )
            if cursor.rowcount == 0 or cursor.lastrowid is None:
                raise VideoNotFound(video_id)
            tx.touch(video_id)
            return cursor.lastrowid

        try:
            job_id = await self._db.write(change)
        except sqlite3.IntegrityError:
            # The partial unique index: this video already has an active job.
            raise JobAlreadyActive(video_id) from None
        return JobRecord(job_id, video_id, width, height, JobState.QUEUED, 0, created_at=now)

    async def mark_running(self, job: JobRecord) -> int:
        """Record a hand-over to a worker; returns the attempt number."""

        async def change(tx: Transaction) -> int:
            await tx.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, started_at = coalesce(started_at, ?)"
                " WHERE id = ?",
                (JobState.RUNNING.value, utc_now(), job.id),
            )
            tx.touch(job.video_id)
            rows = await tx.fetch("SELECT attempts FROM jobs WHERE id = ?", (job.id,))
            return int(rows[0]["attempts"]) if rows else 0

        return await self._db.write(change)

    async def requeue(self, job: JobRecord) -> None:
        """A job cut off by no fault of its own (a shutdown, another's crash): not an attempt."""

        async def change(tx: Transaction) -> None:
            await tx.execute(
                "UPDATE jobs SET state = ?, attempts = max(attempts - 1, 0) WHERE id = ? AND state = ?",
                (JobState.QUEUED.value, job.id, JobState.RUNNING.value),
            )
            tx.touch(job.video_id)

        await self._db.write(change)

    async def succeed(
        self, job: JobRecord, shape: VideoShape, messages: Sequence[OutboxMessage] = ()
    ) -> None:
        """End a job that changed its video, and record the video's new shape."""
        now = utc_now()

        async def change(tx: Transaction) -> None:
            await tx.execute(
                "UPDATE jobs SET state = ?, error = NULL, started_at = coalesce(started_at, ?),"
                " finished_at = ? WHERE id = ?",
                (JobState.SUCCEEDED.value, now, now, job.id),
            )
            await tx.execute(
                "UPDATE videos SET size_bytes = ?, width = ?, height = ?, duration_s = ?, audio_codecs = ?,"
                " frame_count = coalesce(?, frame_count), updated_at = ? WHERE id = ?",
                (
                    shape.size_bytes, shape.width, shape.height, shape.duration_s,
                    ",".join(shape.audio_codecs), shape.frame_count, now, job.video_id,
                ),
            )  # fmt: skip
            tx.touch(job.video_id)
            await self._outbox.queue(tx, messages)

        await self._db.write(change)

    async def end(
        self,
        job: JobRecord,
        state: JobState,
        error: str | None = None,
        messages: Sequence[OutboxMessage] = (),
    ) -> None:
        """End a job that left its video as it was: failed, cancelled, or succeeded with nothing to do."""
        if state.active:
            raise ValueError(f"a job does not end {state.value}")
        now = utc_now()

        async def change(tx: Transaction) -> None:
            await tx.execute(
                "UPDATE jobs SET state = ?, error = ?, started_at = coalesce(started_at, ?), finished_at = ?"
                " WHERE id = ?",
                (state.value, error, now, now, job.id),
            )
            tx.touch(job.video_id)
            await self._outbox.queue(tx, messages)

        await self._db.write(change)

    async def discard(self, job: JobRecord) -> None:
        """Forget a job that was never queued."""

        async def change(tx: Transaction) -> None:
            await tx.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
            tx.touch(job.video_id)

        await self._db.write(change)

    async def active(self) -> list[JobRecord]:
        rows = await self._db.fetch(
            f"SELECT * FROM jobs WHERE state IN ({sql_list(ACTIVE_STATES)}) ORDER BY id"
        )
        return [job_of(row) for row in rows]
