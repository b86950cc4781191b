"""The SQLite database: one writer, one transaction per change, reads that never wait behind it.

As datasette does it: every write is a function run whole inside one
transaction by the one writer (`write(change)`); reads go through a second
connection, so a GET never waits behind a write. aiosqlite runs each
connection in a thread of its own, so the event loop never waits on the disk.
The tables' queries live in their repositories (`videos`, `jobs`, `uploads`,
`outbox`); this module knows no table but the migrations' own.

After each commit the listeners hear what it did (`Commit`): the status cache
forgets the videos it touched, and the application tells the event bus.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .disk import out_of_space
from .records import Commit, utc_now

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = sqlite3.Row


class Transaction:
    """What a change gets: the writer connection inside an open transaction, and a note of
    what it touched (told to the listeners once it is committed)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.video_ids: set[str] = set()
        self.queued = 0
        self.trimmed = 0

    def touch(self, *video_ids: str) -> None:
        self.video_ids.update(video_ids)

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> aiosqlite.Cursor:
        return await self.conn.execute(sql, tuple(args))

    async def fetch(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return list(await self.conn.execute_fetchall(sql, tuple(args)))


#: One change to the database, run whole inside one transaction.
Change = Callable[[Transaction], Awaitable[T]]
CommitListener = Callable[[Commit], None]


class Database:
    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, on_full: Callable[[], bool] | None
    ) -> None:
        self._conn = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        #: Called when a write fails for lack of disk; True if it freed room (the write is retried).
        self._on_full = on_full
        self._listeners: list[CommitListener] = []

    @classmethod
    async def open(cls, path: Path, on_full: Callable[[], bool] | None = None) -> Database:
        # A second connection (and thread) for reads: they never wait behind a write.
        db = cls(await _connect(path), await _connect(path), on_full)
        await db.migrate()
        return db

    async def close(self) -> None:
        await self._reader.close()
        await self._conn.close()

    def listen(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    async def fetch(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        """Rows of a read, on the reader connection."""
        return list(await self._reader.execute_fetchall(sql, tuple(args)))

    async def write(self, change: Change[T]) -> T:
        """Run `change` as one transaction; returns what it returns.

        The transaction runs in its own shielded task: a caller cancelled halfway (a DELETE
        dropping a job, a shutdown) cannot leave it open, and the listeners hear of it only
        once COMMIT has really run.
        """
        return await asyncio.shield(asyncio.ensure_future(self._run(change)))

    async def _run(self, change: Change[T]) -> T:
        async with self._lock:
            try:
                result, tx = await self._attempt(change)
            except sqlite3.OperationalError as e:
                # A disk filled by someone else: give up the ballast, so that what frees space
                # (a DELETE, a termination) can still be recorded, and try once more.
                if not out_of_space(e) or self._on_full is None or not self._on_full():
                    raise
                result, tx = await self._attempt(change)
            commit = Commit(tuple(sorted(tx.video_ids)), tx.queued, tx.trimmed)
            for listener in self._listeners:
                try:
                    listener(commit)
                except Exception:  # a broken listener must not turn a committed change into an error
                    log.exception("a commit listener failed")
            return result

    async def _attempt(self, change: Change[T]) -> tuple[T, Transaction]:
        tx = Transaction(self._conn)
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            result = await change(tx)
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise
        await self._conn.execute("COMMIT")
        return result, tx

    async def migrate(self) -> list[str]:
        """Apply the `sql/*.sql` files not yet recorded, in name order."""
        async with self._lock:
            await self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {
                row["name"] for row in await self._conn.execute_fetchall("SELECT name FROM schema_migrations")
            }
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


async def _connect(path: Path) -> aiosqlite.Connection:
    connection = await aiosqlite.connect(path, isolation_level=None)
    connection.row_factory = sqlite3.Row
    # WAL: readers never block the writer. NORMAL is safe against process
    # crashes (only a power loss can drop the last commits).
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
        await connection.execute(f"PRAGMA {pragma}")
    return connection


def migrations_dir() -> Path:
    """`videosvc/sql/` in an installed package, else the repository's `sql/`."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "sql"
    return packaged if packaged.is_dir() else package.parent / "sql"


def migration_scripts() -> list[tuple[str, str]]:
    return [(path.name, path.read_text(encoding="utf-8")) for path in sorted(migrations_dir().glob("*.sql"))]
