"""The database layer on a real SQLite file: cancellation, the status cache, the one job vocabulary."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from videosvc.store.records import JobState, VideoRecord, utc_now
from videosvc.store.tables import Tables


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Tables]:
    tables = await Tables.open(tmp_path / "videosvc.sqlite3", on_full=None, outbox_cap=100)
    yield tables
    await tables.close()


async def _video(db: Tables) -> str:
    video_id = str(uuid.uuid4())
    now = utc_now()
    await db.videos.insert(VideoRecord(video_id, "a.mp4", 1, 320, 240, 1.0, now, now, ()))
    return video_id


async def test_a_write_cancelled_midway_still_completes_and_leaves_the_writer_usable(db: Tables) -> None:
    """A DELETE cancels a job's task while it is inside a write (BEGIN ... COMMIT)."""
    video_id = await _video(db)
    job = await db.jobs.create(video_id, 64, 64)
    for pause in range(1, 5):  # cancel at successive awaits inside the transaction
        task = asyncio.create_task(db.jobs.mark_running(job))
        for _ in range(pause):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.1)  # the shielded transaction finishes on its own

    # Every attempt was recorded whole, and the writer takes the next change.
    status = await db.videos.status(video_id)
    assert status.active_job is not None and status.active_job.attempts == 4
    await db.jobs.end(job, JobState.FAILED, "stopped")
    status = await db.videos.status(video_id)
    assert status.active_job is None
    assert status.job is not None and status.job.state is JobState.FAILED
    await db.videos.delete(video_id)


async def test_get_never_serves_a_state_older_than_the_last_commit(db: Tables) -> None:
    video_id = await _video(db)
    assert (await db.videos.status(video_id)).active_job is None  # cached
    job = await db.jobs.create(video_id, 64, 64)
    assert (await db.videos.status(video_id)).active_job == job

    # A read racing a write: whatever the interleaving, once the write returns, GET shows it.
    read = asyncio.create_task(db.videos.status(video_id))
    await db.jobs.end(job, JobState.FAILED, "boom")
    await read
    status = await db.videos.status(video_id)
    assert status.active_job is None
    assert status.job is not None and status.job.error == "boom"


async def test_the_schema_allows_exactly_the_states_of_the_one_job_state_enum(db: Tables) -> None:
    """The SQL is written from `JobState`; the table's CHECK constraint must say the same."""
    rows = await db.db.fetch("SELECT sql FROM sqlite_master WHERE name = 'jobs'")
    check = rows[0]["sql"].split("CHECK", 1)[1]
    allowed = set(re.findall(r"'(\w+)'", check.split(")", 1)[0]))
    assert allowed == {state.value for state in JobState}
