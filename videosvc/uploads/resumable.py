"""Resumable uploads (tus 1.0): create, append at an offset, report, terminate, expire.

The offset of an upload is the size of its file on disk, so it never counts a
byte that is not there (after a kill -9, HEAD reports what really arrived). A
chunk sent with a checksum goes to a file of its own and is appended only once
verified; a chunk without one is appended as it arrives, so a dropped
connection keeps what it delivered. When the last byte is in, the file goes
through `VideoService.publish`, the same checks and the same step as POST
/file/, and the upload's id becomes the video's.

One writer per upload, and the rules of a takeover (SPEC §7, §12):

- A request is first judged on its own (the upload exists, is this client's,
  the offset is the upload's): a refused request changes nothing at all.
- An acceptable PATCH takes over at once from an older one still at it (most
  likely stalled on a dead connection): the older is cancelled, and what it
  wrote past the offset the newer one agreed on is cut back, so the newer
  writes exactly where it said it would. Bytes of PATCHes already answered are
  never touched.
- A publish (the last byte is in, the video is being stored) is never
  interrupted: a request that comes meanwhile waits for it, then is judged
  again against what it left.

Plain domain code: it knows nothing of HTTP (the tus header grammar is in
`web/tus.py`) and raises the errors of `errors.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..errors import (
    ChecksumMismatch,
    EmptyUpload,
    OffsetMismatch,
    UploadForbidden,
    UploadGone,
    UploadNotFound,
    UploadTooLarge,
    VideoServiceError,
)
from ..signing import key_name
from ..store.db import Database, UploadCaps, UploadRecord, utc_now
from ..store.disk import DiskBudget, Reservation
from ..store.storage import FileSink, Storage, append_file, remove, run_to_end
from ..videos.names import clean_filename
from ..videos.publish import ReceivedFile, resource_error
from .receiver import Limits, receive

log = logging.getLogger(__name__)

#: Checksum algorithms of the tus checksum extension, by their tus names.
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


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
class Checksum:
    """A chunk's `Upload-Checksum`: one of CHECKSUMS, and the digest it must have."""

    algorithm: str
    digest: bytes


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


@dataclass(frozen=True)
class Chunk:
    """The body of one PATCH."""

    chunks: AsyncIterator[bytes]
    #: From Content-Length, when the client sent one.
    declared_bytes: int | None
    checksum: Checksum | None = None


class _Writer:
    """A request that means to write an upload: waiting its turn, then writing."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        #: Set by a newer request that took over: cut what this one wrote back to here.
        self.stop_at: int | None = None


class ResumableUploads:
    def __init__(
        self, settings: Settings, db: Database, storage: Storage, disk: DiskBudget, publish: Publish
    ) -> None:
        self._settings = settings
        self._db = db
        self._storage = storage
        self._disk = disk
        self._publish_file = publish
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        #: The requests that mean to write each upload (the one writing, and any waiting).
        self._writers: dict[str, list[_Writer]] = {}
        #: Uploads whose last byte is in and whose video is being stored: never interrupted.
        self._publishing: dict[str, asyncio.Task[None]] = {}
        #: The disk each unfinished upload's declared bytes hold.
        self._reservations: dict[str, Reservation] = {}

    @property
    def max_bytes(self) -> int:
        return self._settings.http.max_upload_bytes

    # -- the lifecycle ---------------------------------------------------------

    async def create(self, new: NewUpload, body: Chunk | None = None) -> UploadState:
        """A new upload (with its first bytes, creation-with-upload). Nothing is left of a refused one."""
        if new.length < 1:
            raise EmptyUpload("the file is empty: an empty file is not a video")
        if new.length > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)
        limits = self._settings.http
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
            await self._db.insert_upload(record, caps, now)  # 429 when a cap is reached
        except BaseException:
            reservation.release()
            await asyncio.to_thread(remove, part)
            raise
        self._reservations[record.id] = reservation
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
        await self._judge(upload_id, owner, offset, body.declared_bytes)
        async with self._turn(upload_id, offset) as me:
            record, current = await self._acceptable(upload_id, owner, offset, body.declared_bytes)
            written = 0
            if record.completed_at is None and current < record.length:
                written = await self._write(me, record, current, body)
                current += written
            if record.completed_at is None and current >= record.length:
                return await self._publish(record)
            expires_at = record.expires_at
            if written or current:
                expires_at = time.time() + self._settings.http.upload_expiry_s
                await self._db.extend_upload(record.id, expires_at)
            return UploadState(record.id, record.length, current, record.metadata, expires_at)

    async def terminate(self, upload_id: str, owner: str | None) -> None:
        await self._judge(upload_id, owner, None, None)
        async with self._turn(upload_id, None):
            record = await self._record(upload_id, owner)
            await self._forget(record.id)
        log.info("upload terminated", extra={"upload_id": record.id})

    # -- who writes ------------------------------------------------------------

    async def _judge(
        self, upload_id: str, owner: str | None, offset: int | None, declared: int | None
    ) -> None:
        """Refuse what is not acceptable, changing nothing; wait out a publish in progress."""
        while True:
            await self._acceptable(upload_id, owner, offset, declared)
            publishing = self._publishing.get(upload_id)
            if publishing is None:
                return
            with contextlib.suppress(Exception):  # its own request reports how it ended
                await asyncio.shield(publishing)

    @contextlib.asynccontextmanager
    async def _turn(self, upload_id: str, offset: int | None) -> AsyncIterator[_Writer]:
        """Become the one writer of the upload: the requests still at it are ended, and this one
        waits until they have let go (their files closed, their extra bytes cut back)."""
        me = _Writer(_current_task())
        # Synchronous with the judgement just made: nothing can have moved in between.
        for other in self._writers.get(upload_id, []):
            other.stop_at = offset
            other.task.cancel()
            log.info("a newer request took over the upload", extra={"upload_id": upload_id})
        self._writers.setdefault(upload_id, []).append(me)
        try:
            async with self._lock(upload_id):
                yield me
        finally:
            writers = self._writers.get(upload_id, [])
            writers.remove(me)
            if not writers:
                self._writers.pop(upload_id, None)

    def _lock(self, upload_id: str) -> asyncio.Lock:
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = self._locks[upload_id] = asyncio.Lock()
        return lock

    # -- writing --------------------------------------------------------------

    async def _write(self, me: _Writer, record: UploadRecord, start: int, body: Chunk) -> int:
        """Append the body; returns the bytes kept.

        With a checksum: all or nothing. Without: what arrived is kept (tus: store as much as
        possible), except for a body that runs past Upload-Length, which leaves nothing, and
        bytes past where a newer request took over.
        """
        part = self._storage.upload_path(record.id)
        reservation = self._reservation(record, start)
        limits = Limits(
            room=record.length - start, too_much=lambda: PastTheEnd(record.length, record.length - start),
            block_bytes=0, sniff=False,
        )  # fmt: skip
        checksum = body.checksum
        target = self._storage.new_chunk_path(record.id) if checksum else part
        sink = await FileSink.open(
            target, append=checksum is None, digest=CHECKSUMS[checksum.algorithm]() if checksum else None
        )
        try:
            try:
                written = await receive(body.chunks, sink, reservation, limits)
            finally:
                await sink.close(durable=True)
            if checksum is not None:
                assert sink.digest is not None
                if sink.digest.digest() != checksum.digest:
                    raise ChecksumMismatch(
                        f"the chunk does not match its {checksum.algorithm} checksum; it was discarded"
                    )
                self._disk.reserve(written).release()  # the copy needs room while the chunk is kept
                await run_to_end(asyncio.to_thread(append_file, target, part))
            return written
        except PastTheEnd:
            if checksum is None:
                await self._cut_back(part, start, reservation)
            raise
        except asyncio.CancelledError:
            if checksum is None and me.stop_at is not None:
                await self._cut_back(part, me.stop_at, reservation)
            raise
        except OSError as e:
            raise resource_error(e) from None
        finally:
            if checksum is not None:
                await run_to_end(asyncio.to_thread(remove, target))

    async def _cut_back(self, part: Any, size: int, reservation: Reservation) -> None:
        def truncate() -> int:
            extra = os.path.getsize(part) - size
            if extra > 0:
                os.truncate(part, size)
            return max(0, extra)

        reservation.refund(await run_to_end(asyncio.to_thread(truncate)))

    def _reservation(self, record: UploadRecord, offset: int) -> Reservation:
        reservation = self._reservations.get(record.id)
        if reservation is None:  # an upload from before a restart that was not counted yet
            reservation = self._reservations[record.id] = self._disk.reserve(
                record.length - offset, force=True
            )
        return reservation

    async def _publish(self, record: UploadRecord) -> UploadState:
        """The last byte is in: store the video, in a task of its own that nothing interrupts."""
        task = asyncio.ensure_future(self._store(record))
        self._publishing[record.id] = task
        task.add_done_callback(lambda _: self._publishing.pop(record.id, None))
        await asyncio.shield(task)
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
        await self._db.complete_upload(record.id)
        self._release(record.id)

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
        record = await self._db.get_upload(upload_id)
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
        self._release(upload_id)
        await self._db.delete_uploads([upload_id])

    def _release(self, upload_id: str) -> None:
        reservation = self._reservations.pop(upload_id, None)
        if reservation is not None:
            reservation.release()

    async def sweep(self, after_listing: Callable[[], Awaitable[None]] | None = None) -> int:
        """Remove expired uploads (rows and bytes); how many went.

        The list is only a list of candidates: each is removed under its writer lock, and only if
        its row is still expired at that moment, so a PATCH that extended it meanwhile keeps it.
        `after_listing` is a pause a test injects between the two.
        """
        expired = await self._db.expired_uploads(time.time())
        if after_listing is not None:
            await after_listing()
        gone = 0
        for record in expired:
            lock = self._lock(record.id)
            if lock.locked() or record.id in self._publishing:
                continue  # a request holds it right now: its end extends the expiry
            async with lock:
                if not await self._db.delete_upload_if_expired(record.id, time.time()):
                    continue
                await asyncio.to_thread(self._storage.remove_upload, record.id)
                self._release(record.id)
            gone += 1
            log.info("upload expired; removed", extra={"upload_id": record.id})
        return gone

    async def reconcile(self) -> None:
        """At start: partial files without a row, and rows whose file is gone, are dropped; the rest
        hold their reservations again."""
        files = await asyncio.to_thread(self._storage.stored_upload_ids)
        records = {record.id: record for record in await self._db.pending_uploads()}
        for orphan in sorted(files - set(records)):
            log.warning("removing a partial upload with no row", extra={"upload_id": orphan})
            await asyncio.to_thread(self._storage.remove_upload, orphan)
        missing = sorted(set(records) - files)
        if missing:
            await self._db.delete_uploads(missing)
        # Owners were named by their key's place in api_keys before ("key-0"): by its fingerprint now.
        keys = self._settings.http.api_keys
        for index, key in enumerate(keys):
            await self._db.rename_upload_owner(f"key-{index}", key_name(key))
        await self.sweep()
        for record in await self._db.pending_uploads():
            with contextlib.suppress(FileNotFoundError):
                self._reservation(record, await self._offset(record))

    async def run_sweeper(self) -> None:
        """Forever: sweep a few times per expiry period, at most once a minute, and keep the ballast."""
        limits = self._settings.http
        interval = min(60.0, limits.upload_expiry_s / 4, limits.upload_first_byte_timeout_s / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
                await asyncio.to_thread(self._disk.keep_ballast)
            except Exception:
                log.exception("sweeping expired uploads failed; will try again")


#: Stores a received file as a video under an id: `VideoService.publish`.
Publish = Callable[[ReceivedFile, "str | None", str], Awaitable[object]]


class PastTheEnd(UploadTooLarge):
    def __init__(self, length: int, remaining: int) -> None:
        VideoServiceError.__init__(
            self,
            f"the chunk goes past Upload-Length ({length}): only {remaining} more bytes fit;"
            " nothing of it was kept",
        )
        self.limit_bytes = length


def _current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - every request runs in a task
        raise RuntimeError("uploads are written from a task")
    return task
