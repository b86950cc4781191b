"""Resumable uploads (tus 1.0): create, append at an offset, report, terminate.

The offset of an upload is the size of its file on disk, so it never counts a
byte that is not there (after a kill -9, HEAD reports what really arrived).
How a PATCH's body is appended is `uploads.chunks`; who may write an upload,
and when one request takes over from another, is `uploads.writers`; expiry is
`uploads.sweeper`. When the last byte is in, the file goes through
`VideoService.publish`, the same checks and the same step as POST /file/, and
the upload's id becomes the video's.

Plain domain code: it knows nothing of HTTP (the tus header grammar is in
`web/tus.py`) and raises the errors of `errors.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..config import Settings
from ..errors import (
    EmptyUpload,
    OffsetMismatch,
    UploadForbidden,
    UploadGone,
    UploadNotFound,
    UploadTooLarge,
    VideoServiceError,
)
from ..store.disk import DiskBudget
from ..store.records import UploadCaps, UploadRecord, utc_now
from ..store.storage import Storage, remove
from ..store.uploads import UploadRepository
from .chunks import Chunk, PastTheEnd, append_chunk
from .holds import Holds
from .names import clean_filename
from .receiver import ReceivedFile
from .sweeper import Sweeper
from .writers import Writers

log = logging.getLogger(__name__)

#: Stores a received file as a video under an id: `VideoService.publish`.
Publish = Callable[[ReceivedFile, "str | None", str], Awaitable[object]]


@dataclass(frozen=True)
class UploadState:
    """What HEAD tells of an upload."""

    id: str
    length: int
    offset: int
    metadata: str
    expires_at: float

    @property
    def complete(self) -> bool:
        return self.offset >= self.length


@dataclass(frozen=True)
class NewUpload:
    length: int
    #: The display name from the metadata (not yet cleaned).
    filename: str
    #: The Upload-Metadata header as sent, echoed by HEAD.
    metadata: str
    #: The API key that owns it (only that key may touch it); None without keys.
    owner: str | None
    #: Who it counts against: the key, or the client's address without keys.
    client: str | None


class ResumableUploads:
    def __init__(
        self, settings: Settings, rows: UploadRepository, storage: Storage, disk: DiskBudget, publish: Publish
    ) -> None:
        self._settings = settings
        self._rows = rows
        self._storage = storage
        self._disk = disk
        self._publish_file = publish
        self._writers = Writers()
        self._holds = Holds(disk)
        self.sweeper = Sweeper(settings, rows, storage, disk, self._writers, self._holds)

    @property
    def max_bytes(self) -> int:
        return self._settings.uploads.max_upload_bytes

    # -- the lifecycle ---------------------------------------------------------

    async def create(self, new: NewUpload, body: Chunk | None = None) -> UploadState:
        """A new upload (with its first bytes, creation-with-upload). Nothing is left of a refused one."""
        if new.length < 1:
            raise EmptyUpload("the file is empty: an empty file is not a video")
        if new.length > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)
        limits = self._settings.uploads
        now = time.time()
        record = UploadRecord(
            id=str(uuid.uuid4()),
            length=new.length,
            filename=clean_filename(new.filename),
            metadata=new.metadata.strip(),
            owner=new.owner,
            client=new.client,
            created_at=utc_now(),
            # Until its first byte arrives, an upload holds its place (and its disk) only briefly.
            expires_at=now + min(limits.upload_first_byte_timeout_s, limits.upload_expiry_s),
        )
        reservation = self._disk.reserve(new.length)  # 507 before anything is written
        caps = UploadCaps(
            limits.max_pending_uploads,
            limits.max_pending_uploads_per_key,
            limits.max_reserved_bytes_per_client,
        )
        part = self._storage.upload_path(record.id)
        try:
            await asyncio.to_thread(part.touch)
            await self._rows.insert(record, caps, now)  # 429 when a cap is reached
        except BaseException:
            reservation.release()
            await asyncio.to_thread(remove, part)
            raise
        self._holds.hold(record.id, reservation)
        log.info("upload created", extra={"upload_id": record.id, "length": new.length})
        state = UploadState(record.id, record.length, 0, record.metadata, record.expires_at)
        if body is None:
            return state
        try:
            return await self.append(record.id, new.owner, 0, body)
        except BaseException:
            # The client has no Location to resume or end it with: nobody could, so it goes now.
            await asyncio.shield(self._forget(record.id))
            raise

    async def state(self, upload_id: str, owner: str | None) -> UploadState:
        record = await self._record(upload_id, owner)
        return UploadState(
            record.id, record.length, await self._offset(record), record.metadata, record.expires_at
        )

    async def append(self, upload_id: str, owner: str | None, offset: int, body: Chunk) -> UploadState:
        """Write a PATCH's body at `offset`; when it completes the upload, store the video."""
        await self._writers.judged(
            upload_id, lambda: self._acceptable(upload_id, owner, offset, body.declared_bytes)
        )
        async with self._writers.turn(upload_id, offset) as me:
            record, current = await self._acceptable(upload_id, owner, offset, body.declared_bytes)
            written = 0
            if record.completed_at is None and current < record.length:
                reservation = self._holds.of(record.id, record.length - current)
                written = await append_chunk(
                    self._storage, self._disk, me, record.id, record.length, current, body, reservation
                )
                current += written
            if record.completed_at is None and current >= record.length:
                return await self._publish(record)
            expires_at = record.expires_at
            if written or current:
                expires_at = time.time() + self._settings.uploads.upload_expiry_s
                await self._rows.extend(record.id, expires_at)
            return UploadState(record.id, record.length, current, record.metadata, expires_at)

    async def terminate(self, upload_id: str, owner: str | None) -> None:
        await self._writers.judged(upload_id, lambda: self._acceptable(upload_id, owner, None, None))
        async with self._writers.turn(upload_id, None):
            record = await self._record(upload_id, owner)
            await self._forget(record.id)
        log.info("upload terminated", extra={"upload_id": record.id})

    async def _publish(self, record: UploadRecord) -> UploadState:
        """The last byte is in: store the video, in a task of its own that nothing interrupts."""
        await self._writers.publish(record.id, self._store(record))
        return UploadState(record.id, record.length, record.length, record.metadata, record.expires_at)

    async def _store(self, record: UploadRecord) -> None:
        part = self._storage.upload_path(record.id)
        size = await asyncio.to_thread(lambda: part.stat().st_size)
        try:
            await self._publish_file(ReceivedFile(part, size), record.filename or None, record.id)
        except VideoServiceError:
            # Refused (415, 507, ...): the upload is removed with its bytes, as a refused POST leaves nothing.
            await self._forget(record.id)
            raise
        await self._rows.complete(record.id)
        self._holds.release(record.id)

    # -- bookkeeping ------------------------------------------------------------

    async def _acceptable(
        self, upload_id: str, owner: str | None, offset: int | None, declared: int | None
    ) -> tuple[UploadRecord, int]:
        record = await self._record(upload_id, owner)
        current = await self._offset(record)
        if offset is not None:
            if offset != current:
                raise OffsetMismatch(
                    f"Upload-Offset is {offset}, but the upload is at {current}: HEAD, then resume"
                )
            if declared is not None and declared > record.length - current:
                raise PastTheEnd(record.length, record.length - current)
        return record, current

    async def _record(self, upload_id: str, owner: str | None) -> UploadRecord:
        record = await self._rows.get(upload_id)
        if record is None:
            raise UploadNotFound(upload_id)
        if record.expires_at <= time.time():
            raise UploadGone("this upload expired (upload_expiry_s); start a new one")
        if record.owner is not None and owner != record.owner:
            raise UploadForbidden("this upload was created with another API key")
        return record

    async def _offset(self, record: UploadRecord) -> int:
        if record.completed_at is not None:
            return record.length
        try:
            return await asyncio.to_thread(lambda: self._storage.upload_path(record.id).stat().st_size)
        except FileNotFoundError:
            raise UploadGone("this upload's bytes are gone; start a new one") from None

    async def _forget(self, upload_id: str) -> None:
        """Bytes first, then the row: on a full disk, removing the bytes is what makes room."""
        await asyncio.to_thread(self._storage.remove_upload, upload_id)
        self._holds.release(upload_id)
        await self._rows.delete([upload_id])
