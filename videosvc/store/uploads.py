"""The `uploads` table: resumable uploads not yet done (their offset is their file's size, not a column)."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import TooManyUploads
from .database import Database, Transaction
from .records import UploadCaps, UploadRecord, utc_now
from .rows import upload_of

#: What a 429 for unfinished uploads tells the client to wait before asking again.
UPLOADS_RETRY_AFTER_S = 30
PENDING = (
    "SELECT count(*), coalesce(sum(length), 0) FROM uploads WHERE completed_at IS NULL AND expires_at > ?"
)


class UploadRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, upload: UploadRecord, caps: UploadCaps, now: float) -> None:
        """Count, then insert, in one transaction: a burst of creations cannot pass a cap together.

        Raises TooManyUploads naming the cap. Uploads past their expiry count for nothing.
        """

        async def change(tx: Transaction) -> None:
            count = (await tx.fetch(PENDING, (now,)))[0][0]
            if count >= caps.max_pending:
                raise TooManyUploads(
                    f"{count} uploads are unfinished (max_pending_uploads); finish or delete some first",
                    UPLOADS_RETRY_AFTER_S,
                )
            if upload.client is not None:
                await _check_client(tx, upload, caps, now)
            await tx.execute(
                "INSERT INTO uploads (id, length, filename, metadata, owner, client, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.id, upload.length, upload.filename, upload.metadata, upload.owner, upload.client,
                    upload.created_at, upload.expires_at,
                ),
            )  # fmt: skip

        await self._db.write(change)

    async def get(self, upload_id: str) -> UploadRecord | None:
        rows = await self._db.fetch("SELECT * FROM uploads WHERE id = ?", (upload_id,))
        return upload_of(rows[0]) if rows else None

    async def pending(self) -> list[UploadRecord]:
        return [
            upload_of(row) for row in await self._db.fetch("SELECT * FROM uploads WHERE completed_at IS NULL")
        ]

    async def expired(self, now: float) -> list[UploadRecord]:
        return [
            upload_of(row)
            for row in await self._db.fetch("SELECT * FROM uploads WHERE expires_at <= ?", (now,))
        ]

    async def extend(self, upload_id: str, expires_at: float) -> None:
        async def change(tx: Transaction) -> None:
            await tx.execute("UPDATE uploads SET expires_at = ? WHERE id = ?", (expires_at, upload_id))

        await self._db.write(change)

    async def complete(self, upload_id: str) -> None:
        async def change(tx: Transaction) -> None:
            await tx.execute("UPDATE uploads SET completed_at = ? WHERE id = ?", (utc_now(), upload_id))

        await self._db.write(change)

    async def delete(self, upload_ids: Iterable[str]) -> None:
        ids = [(upload_id,) for upload_id in upload_ids]

        async def change(tx: Transaction) -> None:
            await tx.conn.executemany("DELETE FROM uploads WHERE id = ?", ids)

        await self._db.write(change)

    async def delete_if_expired(self, upload_id: str, now: float) -> bool:
        """Remove the row only if it is still expired now: a list read earlier may be stale."""

        async def change(tx: Transaction) -> bool:
            cursor = await tx.execute(
                "DELETE FROM uploads WHERE id = ? AND expires_at <= ?", (upload_id, now)
            )
            return cursor.rowcount == 1

        return await self._db.write(change)

    async def rename_owner(self, old: str, new: str) -> None:
        async def change(tx: Transaction) -> None:
            await tx.execute("UPDATE uploads SET owner = ?, client = ? WHERE owner = ?", (new, new, old))

        await self._db.write(change)


async def _check_client(tx: Transaction, upload: UploadRecord, caps: UploadCaps, now: float) -> None:
    rows = await tx.fetch(PENDING + " AND client = ?", (now, upload.client))
    count, reserved = rows[0][0], rows[0][1]
    if count >= caps.max_pending_per_client:
        raise TooManyUploads(
            f"this client has {count} unfinished uploads (max_pending_uploads_per_key)", UPLOADS_RETRY_AFTER_S
        )
    if reserved + upload.length > caps.max_reserved_bytes_per_client:
        raise TooManyUploads(
            f"this client's unfinished uploads already hold {reserved} bytes; {upload.length} more would pass"
            f" max_reserved_bytes_per_client ({caps.max_reserved_bytes_per_client})",
            UPLOADS_RETRY_AFTER_S,
        )
