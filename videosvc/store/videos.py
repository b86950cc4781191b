"""The `videos` table (with each video's newest job): one row per stored video."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from ..errors import VideoNotFound
from .cache import StatusCache
from .database import Database, Transaction
from .outbox import OutboxRepository
from .records import (
    ACTIVE_STATES,
    Original,
    OutboxMessage,
    PageKey,
    Pictures,
    Rendition,
    VideoRecord,
    VideoStatus,
    sql_list,
)
from .rows import STATUS_QUERY, join, pictures_json, renditions_json, status_of

#: The columns that hold what is derived from an upload (JSON, null until planned).
DerivedColumn = Literal["renditions", "pictures"]

ACTIVE = f"j.state IS NOT NULL AND j.state IN ({sql_list(ACTIVE_STATES)})"


class VideoRepository:
    def __init__(self, db: Database, outbox: OutboxRepository, cache: StatusCache) -> None:
        self._db = db
        self._outbox = outbox
        self._cache = cache

    async def insert(self, video: VideoRecord, messages: Sequence[OutboxMessage] = ()) -> None:
        original = video.original

        async def change(tx: Transaction) -> None:
            await tx.execute(
                "INSERT INTO videos (id, filename, size_bytes, width, height, duration_s, created_at,"
                " updated_at, audio_codecs, frame_count, original_width, original_height,"
                " original_size_bytes, original_audio_codecs, renditions, pictures)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    video.id, video.filename, video.size_bytes, video.width, video.height, video.duration_s,
                    video.created_at, video.updated_at, join(video.audio_codecs), video.frame_count,
                    original.width if original else None, original.height if original else None,
                    original.size_bytes if original else None,
                    join(original.audio_codecs) if original else None,
                    renditions_json(video.renditions), pictures_json(video.pictures),
                ),
            )  # fmt: skip
            tx.touch(video.id)
            await self._outbox.queue(tx, messages)

        await self._db.write(change)

    async def status(self, video_id: str) -> VideoStatus:
        """The video and its newest job: the same object until a commit changes it (the cache)."""
        cached = self._cache.get(video_id)
        if cached is not None:
            return cached
        generation = self._cache.generation
        rows = await self._db.fetch(STATUS_QUERY + " WHERE v.id = ?", (video_id,))
        if not rows:
            raise VideoNotFound(video_id)
        status = status_of(rows[0])
        self._cache.put(status, generation)
        return status

    async def page(self, limit: int, after: PageKey | None, processing: bool | None) -> list[VideoStatus]:
        """A page of the catalogue, newest first; keyset paging, so inserts and deletes never shift it."""
        where, args = [], []
        if after is not None:
            where.append("(v.created_at < ? OR (v.created_at = ? AND v.id < ?))")
            args += [after.created_at, after.created_at, after.video_id]
        if processing is not None:
            where.append(("" if processing else "NOT ") + f"({ACTIVE})")
        sql = STATUS_QUERY + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY v.created_at DESC, v.id DESC LIMIT ?"
        return [status_of(row) for row in await self._db.fetch(sql, (*args, limit))]

    async def delete(self, video_id: str, messages: Sequence[OutboxMessage] = ()) -> None:
        async def change(tx: Transaction) -> None:
            cursor = await tx.execute("DELETE FROM videos WHERE id = ?", (video_id,))
            if cursor.rowcount == 0:
                raise VideoNotFound(video_id)
            tx.touch(video_id)
            await self._outbox.queue(tx, messages)

        await self._db.write(change)

    async def delete_many(self, video_ids: Iterable[str]) -> None:
        ids = list(video_ids)

        async def change(tx: Transaction) -> None:
            await tx.conn.executemany("DELETE FROM videos WHERE id = ?", [(i,) for i in ids])
            tx.touch(*ids)

        await self._db.write(change)

    async def set_frame_count(self, video_id: str, frames: int) -> None:
        async def change(tx: Transaction) -> None:
            await tx.execute("UPDATE videos SET frame_count = ? WHERE id = ?", (frames, video_id))
            tx.touch(video_id)

        await self._db.write(change)

    async def set_original(self, video_id: str, original: Original) -> None:
        async def change(tx: Transaction) -> None:
            await tx.execute(
                "UPDATE videos SET original_width = ?, original_height = ?, original_size_bytes = ?,"
                " original_audio_codecs = ? WHERE id = ?",
                (original.width, original.height, original.size_bytes, join(original.audio_codecs), video_id),
            )
            tx.touch(video_id)

        await self._db.write(change)

    async def set_renditions(
        self, video_id: str, renditions: tuple[Rendition, ...] | None, messages: Sequence[OutboxMessage] = ()
    ) -> bool:
        """The package's renditions as they are now; False when the video is gone (deleted meanwhile)."""
        return await self._set_derived(video_id, "renditions", renditions_json(renditions), messages)

    async def with_renditions(self, planned: bool) -> list[VideoRecord]:
        """Videos with a planned package (`planned`), or with none, oldest first."""
        return await self._with_derived("renditions", planned)

    async def set_pictures(
        self, video_id: str, pictures: Pictures | None, messages: Sequence[OutboxMessage] = ()
    ) -> bool:
        """The poster and storyboard as they are now; False when the video is gone (deleted meanwhile)."""
        return await self._set_derived(video_id, "pictures", pictures_json(pictures), messages)

    async def with_pictures(self, planned: bool) -> list[VideoRecord]:
        """Videos with planned pictures (`planned`), or with none, oldest first."""
        return await self._with_derived("pictures", planned)

    async def _set_derived(
        self, video_id: str, column: DerivedColumn, value: str | None, messages: Sequence[OutboxMessage]
    ) -> bool:
        """One JSON column of what is derived from the upload, and the messages that say so."""

        async def change(tx: Transaction) -> bool:
            cursor = await tx.execute(f"UPDATE videos SET {column} = ? WHERE id = ?", (value, video_id))
            if cursor.rowcount == 0:
                return False
            tx.touch(video_id)
            await self._outbox.queue(tx, messages)
            return True

        return await self._db.write(change)

    async def _with_derived(self, column: DerivedColumn, planned: bool) -> list[VideoRecord]:
        where = "IS NOT NULL" if planned else "IS NULL"
        rows = await self._db.fetch(STATUS_QUERY + f" WHERE v.{column} {where} ORDER BY v.created_at")
        return [status_of(row).video for row in rows]

    async def without_original(self) -> list[VideoRecord]:
        rows = await self._db.fetch(STATUS_QUERY + " WHERE v.original_width IS NULL ORDER BY v.created_at")
        return [status_of(row).video for row in rows]

    async def ids(self) -> set[str]:
        return {row["id"] for row in await self._db.fetch("SELECT id FROM videos")}
