"""The SQLite database: one connection, one writer, one transaction per change.

aiosqlite runs the connection in its own thread, so the event loop never waits
on the disk; an asyncio lock makes every method one atomic unit, so two
coroutines never interleave inside a transaction.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from .errors import JobAlreadyActive, VideoNotFound

log = logging.getLogger(__name__)


class JobState(enum.StrEnum):
    QUEUED = "queued"  #: accepted, not yet handed to a worker
    RUNNING = "running"  #: handed to a worker (it may still wait in the pool's queue)
    SUCCEEDED = "succeeded"  #: the stored video is the resized one
    FAILED = "failed"  #: the stored video is unchanged; `error` says why


ACTIVE_STATES = (JobState.QUEUED.value, JobState.RUNNING.value)


@dataclass(frozen=True)
class VideoRecord:
    id: str
    filename: str
    size_bytes: int
    width: int
    height: int
    duration_s: float | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class JobRecord:
    id: int
    video_id: str
    width: int
    height: int
    state: JobState
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class VideoStatus:
    video: VideoRecord
    #: The queued or running job, if any.
    active_job: JobRecord | None
    #: The newest finished job, if any.
    last_job: JobRecord | None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Database:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._conn = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Database:
        connection = await aiosqlite.connect(path, isolation_level=None)
        connection.row_factory = sqlite3.Row
        # WAL: readers never block the writer. NORMAL is safe against process
        # crashes (only a power loss can drop the last commits).
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
            await connection.execute(f"PRAGMA {pragma}")
        db = cls(connection)
        await db.migrate()
        return db

    async def close(self) -> None:
        await self._conn.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def migrate(self) -> list[str]:
        """Apply the `sql/*.sql` files not yet recorded, in name order."""
        async with self._lock:
            await self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            rows = await self._conn.execute_fetchall("SELECT name FROM schema_migrations")
            done = {row["name"] for row in rows}
            applied = []
            for name, script in migration_scripts():
                if name in done:
                    continue
                quoted = name.replace("'", "''")
                # One script, one transaction: a migration applies whole or not at all.
                await self._conn.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\n;"
                    f"INSERT INTO schema_migrations (name, applied_at) VALUES ('{quoted}', '{utc_now()}');\n"
                    "COMMIT;"
                )
                log.info("applied migration %s", name)
                applied.append(name)
            return applied

    # -- videos ---------------------------------------------------------------

    async def insert_video(self, video: VideoRecord) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO videos"
                " (id, filename, size_bytes, width, height, duration_s, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    video.id,
                    video.filename,
                    video.size_bytes,
                    video.width,
                    video.height,
                    video.duration_s,
                    video.created_at,
                    video.updated_at,
                ),
            )

    async def get_status(self, video_id: str) -> VideoStatus:
        async with self._lock:
            rows = list(await self._conn.execute_fetchall("SELECT * FROM videos WHERE id = ?", (video_id,)))
            if not rows:
                raise VideoNotFound(video_id)
            jobs = await self._conn.execute_fetchall(
                "SELECT * FROM jobs WHERE id IN ("
                " (SELECT max(id) FROM jobs WHERE video_id = :v AND state IN ('queued', 'running')),"
                " (SELECT max(id) FROM jobs WHERE video_id = :v AND state IN ('succeeded', 'failed')))",
                {"v": video_id},
            )
        records = [_job(row) for row in jobs]
        return VideoStatus(
            video=_video(rows[0]),
            active_job=next((j for j in records if j.state.value in ACTIVE_STATES), None),
            last_job=next((j for j in records if j.state.value not in ACTIVE_STATES), None),
        )

    async def delete_video(self, video_id: str) -> None:
        async with self._transaction() as conn:
            cursor = await conn.execute("DELETE FROM videos WHERE id = ?", (video_id,))
            if cursor.rowcount == 0:
                raise VideoNotFound(video_id)

    async def video_ids(self) -> set[str]:
        async with self._lock:
            rows = await self._conn.execute_fetchall("SELECT id FROM videos")
        return {row["id"] for row in rows}

    async def delete_videos(self, video_ids: Iterable[str]) -> None:
        async with self._transaction() as conn:
            await conn.executemany("DELETE FROM videos WHERE id = ?", [(i,) for i in video_ids])

    # -- jobs -----------------------------------------------------------------

    async def create_job(self, video_id: str, width: int, height: int) -> JobRecord:
        try:
            async with self._transaction() as conn:
                cursor = await conn.execute(
                    "INSERT INTO jobs (video_id, width, height, state, created_at)"
                    " SELECT id, ?, ?, 'queued', ? FROM videos WHERE id = ?",
                    (width, height, utc_now(), video_id),
                )
                if cursor.rowcount == 0:
                    raise VideoNotFound(video_id)
                job_id = cursor.lastrowid
        except sqlite3.IntegrityError:
            # The partial unique index: this video already has an active job.
            raise JobAlreadyActive(video_id) from None
        assert job_id is not None
        return JobRecord(job_id, video_id, width, height, JobState.QUEUED, 0)

    async def mark_running(self, job_id: int) -> int:
        """Record a hand-over to a worker; returns the attempt number."""
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1 WHERE id = ?", (job_id,)
            )
            rows = list(await conn.execute_fetchall("SELECT attempts FROM jobs WHERE id = ?", (job_id,)))
        return int(rows[0]["attempts"]) if rows else 0

    async def requeue(self, job_id: int) -> None:
        """A job cut off by a clean shutdown: not an attempt, to be run at next start."""
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0)"
                " WHERE id = ? AND state = 'running'",
                (job_id,),
            )

    async def succeed_job(
        self, job: JobRecord, size_bytes: int, width: int, height: int, duration_s: float | None
    ) -> None:
        """End a job that replaced its video, and record the video's new shape."""
        now = utc_now()
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET state = 'succeeded', error = NULL, finished_at = ? WHERE id = ?",
                (now, job.id),
            )
            await conn.execute(
                "UPDATE videos SET size_bytes = ?, width = ?, height = ?, duration_s = ?, updated_at = ?"
                " WHERE id = ?",
                (size_bytes, width, height, duration_s, now, job.video_id),
            )

    async def fail_job(self, job_id: int, error: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET state = 'failed', error = ?, finished_at = ? WHERE id = ?",
                (error, utc_now(), job_id),
            )

    async def active_jobs(self) -> list[JobRecord]:
        async with self._lock:
            rows = await self._conn.execute_fetchall(
                "SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY id"
            )
        return [_job(row) for row in rows]


def migrations_dir() -> Path:
    """`videosvc/sql/` in an installed package, else the repository's `sql/`."""
    packaged = Path(__file__).with_name("sql")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "sql"


def migration_scripts() -> list[tuple[str, str]]:
    return [(path.name, path.read_text(encoding="utf-8")) for path in sorted(migrations_dir().glob("*.sql"))]


def _video(row: sqlite3.Row) -> VideoRecord:
    return VideoRecord(
        id=row["id"],
        filename=row["filename"],
        size_bytes=row["size_bytes"],
        width=row["width"],
        height=row["height"],
        duration_s=row["duration_s"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        video_id=row["video_id"],
        width=row["width"],
        height=row["height"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        error=row["error"],
    )
