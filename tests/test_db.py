"""The database layer on a real SQLite file: cancellation and the status cache."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from videosvc.store.db import Database, JobState, VideoRecord, utc_now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "videosvc.sqlite3")
    yield database
    await database.close()


async def _video(db: Database) -> str:
    video_id = str(uuid.uuid4())
    now = utc_now()
    await db.insert_video(VideoRecord(video_id, "a.mp4", 1, 320, 240, 1.0, now, now, ()))
    return video_id


async def test_a_write_cancelled_midway_still_completes_and_leaves_the_writer_usable(db: Database) -> None:
    """A DELETE cancels a job's task while it is inside a write (BEGIN ... COMMIT)."""
    video_id = await _video(db)
    job = await db.create_job(video_id, 64, 64)
    for pause in range(1, 5):  # cancel at successive awaits inside the transaction
        task = asyncio.create_task(db.mark_running(job))
        for _ in range(pause):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.1)  # the shielded transaction finishes on its own

    # Every attempt was recorded whole, and the writer takes the next change.
    status = await db.get_status(video_id)
    assert status.active_job is not None and status.active_job.attempts == 4
    await db.end_job(job, JobState.FAILED, "stopped")
    status = await db.get_status(video_id)
    assert status.active_job is None
    assert status.job is not None and status.job.state is JobState.FAILED
    await db.delete_video(video_id)


async def test_get_never_serves_a_state_older_than_the_last_commit(db: Database) -> None:
    video_id = await _video(db)
    assert (await db.get_status(video_id)).active_job is None  # cached
    job = await db.create_job(video_id, 64, 64)
    assert (await db.get_status(video_id)).active_job == job

    # A read racing a write: whatever the interleaving, once the write returns, GET shows it.
    read = asyncio.create_task(db.get_status(video_id))
    await db.end_job(job, JobState.FAILED, "boom")
    await read
    status = await db.get_status(video_id)
    assert status.active_job is None
    assert status.job is not None and status.job.error == "boom"
