"""Unfinished uploads that expired are removed, in the background and at start; the rest are counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable

from ..config import Settings
from ..signing import key_name
from ..store.disk import DiskBudget
from ..store.storage import Storage
from ..store.uploads import UploadRepository
from .holds import Holds
from .writers import Writers

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self,
        settings: Settings,
        rows: UploadRepository,
        storage: Storage,
        disk: DiskBudget,
        writers: Writers,
        holds: Holds,
    ) -> None:
        self._settings = settings
        self._rows = rows
        self._storage = storage
        self._disk = disk
        self._writers = writers
        self._holds = holds

    async def sweep(self, after_listing: Callable[[], Awaitable[None]] | None = None) -> int:
        """Remove expired uploads (rows and bytes); how many went.

        The list is only a list of candidates: each is removed under its writer lock, and only if
        its row is still expired at that moment, so a PATCH that extended it meanwhile keeps it.
        `after_listing` is a pause a test injects between the two.
        """
        expired = await self._rows.expired(time.time())
        if after_listing is not None:
            await after_listing()
        gone = 0
        for record in expired:
            if self._writers.busy(record.id):
                continue  # a request holds it right now: its end extends the expiry
            async with self._writers.lock(record.id):
                if not await self._rows.delete_if_expired(record.id, time.time()):
                    continue
                await asyncio.to_thread(self._storage.remove_upload, record.id)
                self._holds.release(record.id)
            gone += 1
            log.info("upload expired; removed", extra={"upload_id": record.id})
        return gone

    async def reconcile(self) -> None:
        """At start: partial files without a row, and rows whose file is gone, are dropped; the rest
        hold their reservations again."""
        files = await asyncio.to_thread(self._storage.stored_upload_ids)
        records = {record.id: record for record in await self._rows.pending()}
        for orphan in sorted(files - set(records)):
            log.warning("removing a partial upload with no row", extra={"upload_id": orphan})
            await asyncio.to_thread(self._storage.remove_upload, orphan)
        missing = sorted(set(records) - files)
        if missing:
            await self._rows.delete(missing)
        # Owners were named by their key's place in api_keys before ("key-0"): by its fingerprint now.
        for index, key in enumerate(self._settings.http.api_keys):
            await self._rows.rename_owner(f"key-{index}", key_name(key))
        await self.sweep()
        for record in await self._rows.pending():
            with contextlib.suppress(FileNotFoundError):
                size = await asyncio.to_thread(os.path.getsize, self._storage.upload_path(record.id))
                self._holds.of(record.id, record.length - size)

    async def run(self) -> None:
        """Forever: sweep a few times per expiry period, at most once a minute, and keep the ballast."""
        limits = self._settings.uploads
        interval = min(60.0, limits.upload_expiry_s / 4, limits.upload_first_byte_timeout_s / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
                await asyncio.to_thread(self._disk.keep_ballast)
            except Exception:
                log.exception("sweeping expired uploads failed; will try again")
