"""The database and its repositories, opened together: what the rest of the service holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cache import StatusCache
from .database import Database
from .jobs import JobRepository
from .outbox import OutboxRepository
from .uploads import UploadRepository
from .videos import VideoRepository


@dataclass(frozen=True)
class Tables:
    db: Database
    videos: VideoRepository
    jobs: JobRepository
    uploads: UploadRepository
    outbox: OutboxRepository

    @classmethod
    async def open(cls, path: Path, on_full: Callable[[], bool] | None, outbox_cap: int) -> Tables:
        db = await Database.open(path, on_full)
        cache = StatusCache()
        db.listen(cache.on_commit)
        outbox = OutboxRepository(db, outbox_cap)
        return cls(
            db, VideoRepository(db, outbox, cache), JobRepository(db, outbox), UploadRepository(db), outbox
        )

    async def close(self) -> None:
        await self.db.close()
