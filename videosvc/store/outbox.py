"""The `webhook_outbox` table: deliveries owed, written in the transaction of the change they report.

A row keeps the video as the change left it (its records, as data), not the
rendered payload: rendering (the GET shape, signed links) happens when the
delivery is made, outside the writer's lock. The table has a cap: past it, the
oldest undelivered rows are dropped in the same transaction, and the commit
says how many.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence

from .database import Database, Transaction
from .records import Delivery, OutboxMessage, status_to_dict, utc_now
from .rows import STATUS_QUERY, status_of


class OutboxRepository:
    def __init__(self, db: Database, cap: int) -> None:
        self._db = db
        #: Rows the outbox may hold; past it, the oldest are dropped as new ones come.
        self._cap = cap

    async def queue(self, tx: Transaction, messages: Sequence[OutboxMessage]) -> None:
        """Inside a change's transaction: its messages, each with the video as the change left it."""
        if not messages:
            return
        now = time.time()
        for message in messages:
            status = message.last_seen
            if status is None:
                rows = await tx.fetch(STATUS_QUERY + " WHERE v.id = ?", (message.video_id,))
                status = status_of(rows[0]) if rows else None
            payload = json.dumps(
                {
                    "type": message.event_type,
                    "timestamp": utc_now(),
                    "status": status_to_dict(status) if status else None,
                },
                separators=(",", ":"),
            )
            await tx.conn.executemany(
                "INSERT INTO webhook_outbox (message_id, url, event_type, payload, created_at,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(message.message_id, url, message.event_type, payload, now, now) for url in message.urls],
            )
            tx.queued += len(message.urls)
        cursor = await tx.execute(
            "DELETE FROM webhook_outbox WHERE id <="
            " (SELECT id FROM webhook_outbox ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self._cap,),
        )
        tx.trimmed += max(0, cursor.rowcount)

    async def due(self, now: float, limit: int, skip: Iterable[int] = ()) -> list[Delivery]:
        """Rows whose next attempt is due, but for `skip` (those being attempted now)."""
        skipped = tuple(skip)
        rows = await self._db.fetch(
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

    async def next_at(self, skip: Iterable[int] = ()) -> float | None:
        skipped = tuple(skip)
        placeholders = ",".join("?" * len(skipped))
        sql = f"SELECT min(next_attempt_at) AS t FROM webhook_outbox WHERE id NOT IN ({placeholders})"
        rows = await self._db.fetch(sql, skipped)
        return None if not rows or rows[0]["t"] is None else float(rows[0]["t"])

    async def size(self) -> int:
        return int((await self._db.fetch("SELECT count(*) AS n FROM webhook_outbox"))[0]["n"])

    async def delivered(self, delivery_id: int) -> bool:
        """Remove a delivery that is done (made, or given up); False if it was gone already (trimmed)."""

        async def change(tx: Transaction) -> bool:
            cursor = await tx.execute("DELETE FROM webhook_outbox WHERE id = ?", (delivery_id,))
            return cursor.rowcount == 1

        return await self._db.write(change)

    async def retry_later(self, delivery_id: int, at: float, error: str) -> None:
        async def change(tx: Transaction) -> None:
            await tx.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
                " WHERE id = ?",
                (at, error[:500], delivery_id),
            )

        await self._db.write(change)

    async def settle_urls(self, urls: Sequence[str]) -> set[str]:
        """At start: forget the 410s of URLs no longer configured; the configured ones still disabled."""

        async def change(tx: Transaction) -> set[str]:
            rows = await tx.fetch("SELECT url FROM webhook_disabled_urls")
            gone = [(row["url"],) for row in rows if row["url"] not in urls]
            await tx.conn.executemany("DELETE FROM webhook_disabled_urls WHERE url = ?", gone)
            return {row["url"] for row in rows if row["url"] in urls}

        return await self._db.write(change)

    async def drop_except(self, urls: Sequence[str]) -> int:
        """Remove deliveries to any URL but these; how many went."""

        async def change(tx: Transaction) -> int:
            placeholders = ",".join("?" * len(urls))
            cursor = await tx.execute(f"DELETE FROM webhook_outbox WHERE url NOT IN ({placeholders})", urls)
            return max(0, cursor.rowcount)

        return await self._db.write(change)

    async def disable_url(self, url: str) -> int:
        """A URL that answered 410: disabled (across restarts), its deliveries dropped; how many."""

        async def change(tx: Transaction) -> int:
            await tx.execute(
                "INSERT OR IGNORE INTO webhook_disabled_urls (url, disabled_at) VALUES (?, ?)",
                (url, utc_now()),
            )
            cursor = await tx.execute("DELETE FROM webhook_outbox WHERE url = ?", (url,))
            return max(0, cursor.rowcount)

        return await self._db.write(change)
