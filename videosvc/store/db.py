"""The SQLite database: one connection, one writer, one transaction per change.

aiosqlite runs the connection in its own thread, so the event loop never waits
on the disk; an asyncio lock makes every method one atomic unit, so two
coroutines never interleave inside a transaction.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import aiosqlite

from ..errors import JobAlreadyActive, TooManyUploads, VideoNotFound
from ..events import EventBus, OutboxDropped, OutboxMessage, OutboxQueued, VideosChanged
from ..media.probe import MediaInfo
from .disk import out_of_space

log = logging.getLogger(__name__)

T = TypeVar("T")
#: What a 429 for unfinished uploads tells the client to wait before asking again.
UPLOADS_RETRY_AFTER_S = 30
#: One change to the database, given the writer connection inside an open transaction.
Change = Callable[[aiosqlite.Connection], Awaitable[T]]


class JobState(enum.StrEnum):
    QUEUED = "queued"  #: accepted, not yet handed to a worker
    RUNNING = "running"  #: handed to a worker (it may still wait in the pool's queue)
    SUCCEEDED = "succeeded"  #: the stored video is the resized one
    FAILED = "failed"  #: the stored video is unchanged; `error` says why
    CANCELLED = "cancelled"  #: stopped before it ended; the stored video is unchanged

    @property
    def active(self) -> bool:
        return self in (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class Original:
    """The upload as it came, kept so that every resize starts from it."""

    width: int
    height: int
    size_bytes: int
    audio_codecs: tuple[str, ...]


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
    #: What the last probe found; None when unknown (stored before it was recorded).
    audio_codecs: tuple[str, ...] | None = None
    #: Frames of the video stream; None when unknown (stored before it was recorded).
    frame_count: int | None = None
    #: None when originals are not kept, or not recorded yet (a row from before they were).
    original: Original | None = None


@dataclass(frozen=True)
class JobRecord:
    id: int
    video_id: str
    width: int
    height: int
    state: JobState
    attempts: int
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class VideoStatus:
    video: VideoRecord
    #: The newest job, whatever its state (at most one is ever active, and it is the newest).
    job: JobRecord | None

    @property
    def active_job(self) -> JobRecord | None:
        return self.job if self.job is not None and self.job.state.active else None


@dataclass(frozen=True)
class UploadRecord:
    """A resumable upload; its offset is its file's size, read from the disk, not kept here."""

    id: str
    length: int
    filename: str
    metadata: str
    owner: str | None
    created_at: str
    expires_at: float
    completed_at: str | None = None
    #: Who it counts against: the API key's name, or the client's address without keys.
    client: str | None = None


@dataclass(frozen=True)
class UploadCaps:
    """What unfinished uploads may hold, overall and per client; checked with the insert."""

    max_pending: int
    max_pending_per_client: int
    max_reserved_bytes_per_client: int


@dataclass(frozen=True)
class PageKey:
    """Where a page of the catalogue starts: after this (created_at, id), newest first."""

    created_at: str
    video_id: str


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StatusCache:
    """What GET shows, kept in memory: clients poll GET, and polling should cost nothing.

    Every write goes through `Database._transaction(video_id)`, which forgets that
    video, and a read only fills the cache if no write happened while it ran; so
    an entry is never staler than the database.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, VideoStatus] = OrderedDict()
        self._max_entries = max_entries
        self.generation = 0

    def get(self, video_id: str) -> VideoStatus | None:
        status = self._entries.get(video_id)
        if status is not None:
            self._entries.move_to_end(video_id)
        return status

    def put(self, status: VideoStatus, read_at_generation: int) -> None:
        if read_at_generation != self.generation:
            return  # a write landed while this was read: it may be stale already
        self._entries[status.video.id] = status
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget(self, video_ids: Iterable[str]) -> None:
        self.generation += 1
        for video_id in video_ids:
            self._entries.pop(video_id, None)


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery to attempt: one outbox row."""

    id: int
    message_id: str
    url: str
    event_type: str
    payload: str
    created_at: float
    attempts: int


class Database:
    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        bus: EventBus | None = None,
        on_full: Callable[[], bool] | None = None,
        outbox_cap: int = 10_000,
    ) -> None:
        self._conn = writer
        #: Rows the webhook outbox may hold; past it, the oldest are dropped as new ones come.
        self._outbox_cap = outbox_cap
        self._reader = reader
        self._lock = asyncio.Lock()
        self._cache = StatusCache()
        self._bus = bus
        #: Called when a write fails for lack of disk; True if it freed room (the write is retried).
        self._on_full = on_full

    @classmethod
    async def open(
        cls,
        path: Path,
        bus: EventBus | None = None,
        on_full: Callable[[], bool] | None = None,
        outbox_cap: int = 10_000,
    ) -> Database:
        # A second connection (and thread) for GET: it never waits behind a write.
        db = cls(await _connect(path), await _connect(path), bus=bus, on_full=on_full, outbox_cap=outbox_cap)
        await db.migrate()
        return db

    async def close(self) -> None:
        await self._reader.close()
        await self._conn.close()

    async def _write(self, change: Change[T], *video_ids: str, outbox: Sequence[OutboxMessage] = ()) -> T:
        """Run `change` as one transaction touching `video_ids`; returns what it returns.

        The outbox messages are written in the same transaction: a webhook is owed exactly
        when the change it reports is committed. The transaction runs in its own shielded
        task: a caller cancelled halfway (a DELETE dropping a job, a shutdown) cannot leave
        it open, and the cache forgets the videos only once COMMIT or ROLLBACK has really run.
        """
        return await asyncio.shield(asyncio.ensure_future(self._run_transaction(change, video_ids, outbox)))

    async def _run_transaction(
        self, change: Change[T], video_ids: tuple[str, ...], outbox: Sequence[OutboxMessage]
    ) -> T:
        committed = False
        trimmed = 0
        async with self._lock:
            try:
                try:
                    result, trimmed = await self._attempt(change, outbox)
                except sqlite3.OperationalError as e:
                    # A disk filled by someone else: give up the ballast, so that what frees space
                    # (a DELETE, a termination) can still be recorded, and try once more.
                    if not out_of_space(e) or self._on_full is None or not self._on_full():
                        raise
                    result, trimmed = await self._attempt(change, outbox)
                committed = True
                return result
            finally:
                self._cache.forget(video_ids)
                if committed and self._bus is not None:
                    if video_ids:
                        self._bus.emit(VideosChanged(video_ids))
                    if outbox:
                        self._bus.emit(OutboxQueued(sum(len(message.urls) for message in outbox)))
                    if trimmed:
                        reason = "the outbox is full (webhook_max_backlog): the oldest undelivered went"
                        self._bus.emit(OutboxDropped(trimmed, trimmed, reason))

    async def _attempt(self, change: Change[T], outbox: Sequence[OutboxMessage]) -> tuple[T, int]:
        """One transaction: the change, its outbox rows, and the outbox trimmed to its cap."""
        await self._conn.execute("BEGIN IMMEDIATE")
        trimmed = 0
        try:
            result = await change(self._conn)
            for message in outbox:
                await self._queue_message(message)
            if outbox:
                cursor = await self._conn.execute(
                    "DELETE FROM webhook_outbox WHERE id <="
                    " (SELECT id FROM webhook_outbox ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (self._outbox_cap,),
                )
                trimmed = max(0, cursor.rowcount)
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise
        await self._conn.execute("COMMIT")
        return result, trimmed

    async def _queue_message(self, message: OutboxMessage) -> None:
        """Inside a transaction: the message's payload from the video's state after the change."""
        data = message.data
        if data is None and message.render is not None:
            rows = list(
                await self._conn.execute_fetchall(STATUS_QUERY + " WHERE v.id = ?", (message.video_id,))
            )
            data = message.render(_status(rows[0]) if rows else None)
        now = time.time()
        payload = json.dumps(
            {"type": message.event_type, "timestamp": utc_now(), "data": data}, separators=(",", ":")
        )
        await self._conn.executemany(
            "INSERT INTO webhook_outbox (message_id, url, event_type, payload, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(message.message_id, url, message.event_type, payload, now, now) for url in message.urls],
        )

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

    async def insert_video(self, video: VideoRecord, outbox: Sequence[OutboxMessage] = ()) -> None:
        original = video.original

        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO videos (id, filename, size_bytes, width, height, duration_s, created_at,"
                " updated_at, audio_codecs, frame_count, original_width, original_height,"
                " original_size_bytes, original_audio_codecs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    video.id,
                    video.filename,
                    video.size_bytes,
                    video.width,
                    video.height,
                    video.duration_s,
                    video.created_at,
                    video.updated_at,
                    _join(video.audio_codecs),
                    video.frame_count,
                    original.width if original else None,
                    original.height if original else None,
                    original.size_bytes if original else None,
                    _join(original.audio_codecs) if original else None,
                ),
            )

        await self._write(change, video.id, outbox=outbox)

    async def get_status(self, video_id: str) -> VideoStatus:
        cached = self._cache.get(video_id)
        if cached is not None:
            return cached
        generation = self._cache.generation
        rows = list(await self._reader.execute_fetchall(STATUS_QUERY + " WHERE v.id = ?", (video_id,)))
        if not rows:
            raise VideoNotFound(video_id)
        status = _status(rows[0])
        self._cache.put(status, generation)
        return status

    async def list_statuses(
        self, limit: int, after: PageKey | None, processing: bool | None
    ) -> list[VideoStatus]:
        """A page of the catalogue, newest first; keyset paging, so inserts and deletes never shift it."""
        where, args = [], []
        if after is not None:
            where.append("(v.created_at < ? OR (v.created_at = ? AND v.id < ?))")
            args += [after.created_at, after.created_at, after.video_id]
        if processing is not None:
            where.append(
                ("" if processing else "NOT ") + "(j.state IS NOT NULL AND j.state IN ('queued', 'running'))"
            )
        sql = STATUS_QUERY + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY v.created_at DESC, v.id DESC LIMIT ?"
        rows = await self._reader.execute_fetchall(sql, (*args, limit))
        return [_status(row) for row in rows]

    async def delete_video(self, video_id: str, outbox: Sequence[OutboxMessage] = ()) -> None:
        async def change(conn: aiosqlite.Connection) -> None:
            cursor = await conn.execute("DELETE FROM videos WHERE id = ?", (video_id,))
            if cursor.rowcount == 0:
                raise VideoNotFound(video_id)

        await self._write(change, video_id, outbox=outbox)

    async def set_frame_count(self, video_id: str, frames: int) -> None:
        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE videos SET frame_count = ? WHERE id = ?", (frames, video_id))

        await self._write(change, video_id)

    async def set_original(self, video_id: str, original: Original) -> None:
        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "UPDATE videos SET original_width = ?, original_height = ?, original_size_bytes = ?,"
                " original_audio_codecs = ? WHERE id = ?",
                (
                    original.width,
                    original.height,
                    original.size_bytes,
                    _join(original.audio_codecs),
                    video_id,
                ),
            )

        await self._write(change, video_id)

    async def videos_without_original(self) -> list[VideoRecord]:
        rows = await self._reader.execute_fetchall(
            STATUS_QUERY + " WHERE v.original_width IS NULL ORDER BY v.created_at"
        )
        return [_status(row).video for row in rows]

    async def video_ids(self) -> set[str]:
        rows = await self._reader.execute_fetchall("SELECT id FROM videos")
        return {row["id"] for row in rows}

    async def delete_videos(self, video_ids: Iterable[str]) -> None:
        ids = list(video_ids)

        async def change(conn: aiosqlite.Connection) -> None:
            await conn.executemany("DELETE FROM videos WHERE id = ?", [(i,) for i in ids])

        await self._write(change, *ids)

    # -- webhook outbox ----------------------------------------------------------

    async def due_deliveries(self, now: float, limit: int, skip: Iterable[int] = ()) -> list[Delivery]:
        """Rows whose next attempt is due, but for `skip` (those being attempted now)."""
        skipped = tuple(skip)
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM webhook_outbox WHERE next_attempt_at <= ?"
            f" AND id NOT IN ({','.join('?' * len(skipped))}) ORDER BY next_attempt_at LIMIT ?",
            (now, *skipped, limit),
        )
        return [
            Delivery(
                row["id"], row["message_id"], row["url"], row["event_type"], row["payload"],
                row["created_at"], row["attempts"],
            )
            for row in rows
        ]  # fmt: skip

    async def next_delivery_at(self, skip: Iterable[int] = ()) -> float | None:
        skipped = tuple(skip)
        placeholders = ",".join("?" * len(skipped))
        sql = f"SELECT min(next_attempt_at) AS t FROM webhook_outbox WHERE id NOT IN ({placeholders})"
        rows = list(await self._reader.execute_fetchall(sql, skipped))
        return None if not rows or rows[0]["t"] is None else float(rows[0]["t"])

    async def outbox_size(self) -> int:
        rows = list(await self._reader.execute_fetchall("SELECT count(*) AS n FROM webhook_outbox"))
        return int(rows[0]["n"])

    async def delivered(self, delivery_id: int) -> bool:
        """Remove a delivery that is done (made, or given up); False if it was gone already (trimmed)."""

        async def change(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute("DELETE FROM webhook_outbox WHERE id = ?", (delivery_id,))
            return cursor.rowcount == 1

        return await self._write(change)

    async def settle_webhook_urls(self, urls: Sequence[str]) -> set[str]:
        """At start: forget the 410s of URLs no longer configured; the configured ones still disabled."""

        async def change(conn: aiosqlite.Connection) -> set[str]:
            rows = await conn.execute_fetchall("SELECT url FROM webhook_disabled_urls")
            gone = [(row["url"],) for row in rows if row["url"] not in urls]
            await conn.executemany("DELETE FROM webhook_disabled_urls WHERE url = ?", gone)
            return {row["url"] for row in rows if row["url"] in urls}

        return await self._write(change)

    async def drop_deliveries_except(self, urls: Sequence[str]) -> int:
        """Remove deliveries to any URL but these; how many went."""

        async def change(conn: aiosqlite.Connection) -> int:
            placeholders = ",".join("?" * len(urls))
            cursor = await conn.execute(f"DELETE FROM webhook_outbox WHERE url NOT IN ({placeholders})", urls)
            return max(0, cursor.rowcount)

        return await self._write(change)

    async def disable_webhook_url(self, url: str) -> int:
        """A URL that answered 410: disabled (across restarts), its deliveries dropped; how many."""

        async def change(conn: aiosqlite.Connection) -> int:
            await conn.execute(
                "INSERT OR IGNORE INTO webhook_disabled_urls (url, disabled_at) VALUES (?, ?)",
                (url, utc_now()),
            )
            cursor = await conn.execute("DELETE FROM webhook_outbox WHERE url = ?", (url,))
            return max(0, cursor.rowcount)

        return await self._write(change)

    async def retry_later(self, delivery_id: int, at: float, error: str) -> None:
        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
                " WHERE id = ?",
                (at, error[:500], delivery_id),
            )

        await self._write(change)

    # -- resumable uploads -----------------------------------------------------

    async def insert_upload(self, upload: UploadRecord, caps: UploadCaps, now: float) -> None:
        """Count, then insert, in one transaction: a burst of creations cannot pass a cap together.

        Raises TooManyUploads naming the cap. Uploads past their expiry count for nothing.
        """

        async def change(conn: aiosqlite.Connection) -> None:
            pending = "SELECT count(*), coalesce(sum(length), 0) FROM uploads WHERE completed_at IS NULL"
            rows = list(await conn.execute_fetchall(pending + " AND expires_at > ?", (now,)))
            if rows[0][0] >= caps.max_pending:
                raise TooManyUploads(
                    f"{rows[0][0]} uploads are unfinished (max_pending_uploads); finish or delete some first",
                    UPLOADS_RETRY_AFTER_S,
                )
            if upload.client is not None:
                rows = list(
                    await conn.execute_fetchall(
                        pending + " AND expires_at > ? AND client = ?", (now, upload.client)
                    )
                )
                count, reserved = rows[0][0], rows[0][1]
                if count >= caps.max_pending_per_client:
                    raise TooManyUploads(
                        f"this client has {count} unfinished uploads (max_pending_uploads_per_key)",
                        UPLOADS_RETRY_AFTER_S,
                    )
                if reserved + upload.length > caps.max_reserved_bytes_per_client:
                    raise TooManyUploads(
                        f"this client's unfinished uploads already hold {reserved} bytes;"
                        f" {upload.length} more would pass max_reserved_bytes_per_client"
                        f" ({caps.max_reserved_bytes_per_client})",
                        UPLOADS_RETRY_AFTER_S,
                    )
            await conn.execute(
                "INSERT INTO uploads (id, length, filename, metadata, owner, client, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.id,
                    upload.length,
                    upload.filename,
                    upload.metadata,
                    upload.owner,
                    upload.client,
                    upload.created_at,
                    upload.expires_at,
                ),
            )

        await self._write(change)

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        rows = list(await self._reader.execute_fetchall("SELECT * FROM uploads WHERE id = ?", (upload_id,)))
        return _upload(rows[0]) if rows else None

    async def pending_uploads(self) -> list[UploadRecord]:
        rows = await self._reader.execute_fetchall("SELECT * FROM uploads WHERE completed_at IS NULL")
        return [_upload(row) for row in rows]

    async def extend_upload(self, upload_id: str, expires_at: float) -> None:
        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE uploads SET expires_at = ? WHERE id = ?", (expires_at, upload_id))

        await self._write(change)

    async def complete_upload(self, upload_id: str) -> None:
        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE uploads SET completed_at = ? WHERE id = ?", (utc_now(), upload_id))

        await self._write(change)

    async def delete_uploads(self, upload_ids: Iterable[str]) -> None:
        ids = [(upload_id,) for upload_id in upload_ids]

        async def change(conn: aiosqlite.Connection) -> None:
            await conn.executemany("DELETE FROM uploads WHERE id = ?", ids)

        await self._write(change)

    async def expired_uploads(self, now: float) -> list[UploadRecord]:
        rows = await self._reader.execute_fetchall("SELECT * FROM uploads WHERE expires_at <= ?", (now,))
        return [_upload(row) for row in rows]

    async def rename_upload_owner(self, old: str, new: str) -> None:
        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE uploads SET owner = ?, client = ? WHERE owner = ?", (new, new, old))

        await self._write(change)

    async def delete_upload_if_expired(self, upload_id: str, now: float) -> bool:
        """Remove the row only if it is still expired now: a list read earlier may be stale."""

        async def change(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(
                "DELETE FROM uploads WHERE id = ? AND expires_at <= ?", (upload_id, now)
            )
            return cursor.rowcount == 1

        return await self._write(change)

    # -- jobs -----------------------------------------------------------------

    async def create_job(self, video_id: str, width: int, height: int) -> JobRecord:
        now = utc_now()

        async def change(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(
                "INSERT INTO jobs (video_id, width, height, state, created_at)"
                " SELECT id, ?, ?, 'queued', ? FROM videos WHERE id = ?",
                (width, height, now, video_id),
            )
            if cursor.rowcount == 0 or cursor.lastrowid is None:
                raise VideoNotFound(video_id)
            return cursor.lastrowid

        try:
            job_id = await self._write(change, video_id)
        except sqlite3.IntegrityError:
            # The partial unique index: this video already has an active job.
            raise JobAlreadyActive(video_id) from None
        return JobRecord(job_id, video_id, width, height, JobState.QUEUED, 0, created_at=now)

    async def mark_running(self, job: JobRecord) -> int:
        """Record a hand-over to a worker; returns the attempt number."""

        async def change(conn: aiosqlite.Connection) -> int:
            await conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1,"
                " started_at = coalesce(started_at, ?) WHERE id = ?",
                (utc_now(), job.id),
            )
            rows = list(await conn.execute_fetchall("SELECT attempts FROM jobs WHERE id = ?", (job.id,)))
            return int(rows[0]["attempts"]) if rows else 0

        return await self._write(change, job.video_id)

    async def requeue(self, job: JobRecord) -> None:
        """A job cut off by a clean shutdown: not an attempt, to be run at next start."""

        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0)"
                " WHERE id = ? AND state = 'running'",
                (job.id,),
            )

        await self._write(change, job.video_id)

    async def succeed_job(
        self, job: JobRecord, size_bytes: int, info: MediaInfo, outbox: Sequence[OutboxMessage] = ()
    ) -> None:
        """End a job that replaced its video, and record the video's new shape."""
        now = utc_now()

        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "UPDATE jobs SET state = 'succeeded', error = NULL, started_at = coalesce(started_at, ?),"
                " finished_at = ? WHERE id = ?",
                (now, now, job.id),
            )
            await conn.execute(
                "UPDATE videos SET size_bytes = ?, width = ?, height = ?, duration_s = ?, audio_codecs = ?,"
                " frame_count = coalesce(?, frame_count), updated_at = ? WHERE id = ?",
                (
                    size_bytes,
                    info.width,
                    info.height,
                    info.duration_s,
                    ",".join(info.audio_codecs),
                    info.frame_count,
                    now,
                    job.video_id,
                ),
            )

        await self._write(change, job.video_id, outbox=outbox)

    async def end_job(
        self, job: JobRecord, state: JobState, error: str | None = None, outbox: Sequence[OutboxMessage] = ()
    ) -> None:
        """End a job that left its video as it was: failed, cancelled, or succeeded with nothing to do."""
        assert not state.active
        now = utc_now()

        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "UPDATE jobs SET state = ?, error = ?, started_at = coalesce(started_at, ?), finished_at = ?"
                " WHERE id = ?",
                (state.value, error, now, now, job.id),
            )

        await self._write(change, job.video_id, outbox=outbox)

    async def discard_job(self, job: JobRecord) -> None:
        """Forget a job that was never queued."""

        async def change(conn: aiosqlite.Connection) -> None:
            await conn.execute("DELETE FROM jobs WHERE id = ?", (job.id,))

        await self._write(change, job.video_id)

    async def active_jobs(self) -> list[JobRecord]:
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY id"
        )
        return [_job_from(row) for row in rows]


async def _connect(path: Path) -> aiosqlite.Connection:
    connection = await aiosqlite.connect(path, isolation_level=None)
    connection.row_factory = sqlite3.Row
    # WAL: readers never block the writer. NORMAL is safe against process
    # crashes (only a power loss can drop the last commits).
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
        await connection.execute(f"PRAGMA {pragma}")
    return connection


#: A video with its newest job (j_*), in one read; callers add WHERE and ORDER BY.
STATUS_QUERY = """
SELECT v.*,
    j.id AS j_id, j.video_id AS j_video_id, j.width AS j_width, j.height AS j_height,
    j.state AS j_state, j.attempts AS j_attempts, j.error AS j_error, j.created_at AS j_created_at,
    j.started_at AS j_started_at, j.finished_at AS j_finished_at
FROM videos AS v
LEFT JOIN jobs AS j ON j.id = (SELECT max(id) FROM jobs WHERE video_id = v.id)
"""


def migrations_dir() -> Path:
    """`videosvc/sql/` in an installed package, else the repository's `sql/`."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "sql"
    return packaged if packaged.is_dir() else package.parent / "sql"


def migration_scripts() -> list[tuple[str, str]]:
    return [(path.name, path.read_text(encoding="utf-8")) for path in sorted(migrations_dir().glob("*.sql"))]


def _upload(row: sqlite3.Row) -> UploadRecord:
    return UploadRecord(
        id=row["id"],
        length=row["length"],
        filename=row["filename"],
        metadata=row["metadata"],
        owner=row["owner"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        completed_at=row["completed_at"],
        client=row["client"],
    )


def _status(row: sqlite3.Row) -> VideoStatus:
    return VideoStatus(video=_video(row), job=None if row["j_id"] is None else _job_from(row, "j_"))


def _video(row: sqlite3.Row) -> VideoRecord:
    original = None
    if row["original_width"] is not None:
        original = Original(
            width=row["original_width"],
            height=row["original_height"],
            size_bytes=row["original_size_bytes"],
            audio_codecs=_split(row["original_audio_codecs"] or ""),
        )
    return VideoRecord(
        id=row["id"],
        filename=row["filename"],
        size_bytes=row["size_bytes"],
        width=row["width"],
        height=row["height"],
        duration_s=row["duration_s"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        audio_codecs=None if row["audio_codecs"] is None else _split(row["audio_codecs"]),
        frame_count=row["frame_count"],
        original=original,
    )


def _join(codecs: tuple[str, ...] | None) -> str | None:
    return None if codecs is None else ",".join(codecs)


def _split(codecs: str) -> tuple[str, ...]:
    return tuple(codec for codec in codecs.split(",") if codec)


def _job_from(row: sqlite3.Row, prefix: str = "") -> JobRecord:
    return JobRecord(
        id=row[prefix + "id"],
        video_id=row[prefix + "video_id"],
        width=row[prefix + "width"],
        height=row[prefix + "height"],
        state=JobState(row[prefix + "state"]),
        attempts=row[prefix + "attempts"],
        error=row[prefix + "error"],
        created_at=row[prefix + "created_at"],
        started_at=row[prefix + "started_at"],
        finished_at=row[prefix + "finished_at"],
    )
