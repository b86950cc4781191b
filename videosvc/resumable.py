"""Resumable uploads (tus 1.0): create, append at an offset, report, terminate, expire.

The offset of an upload is the size of its file on disk, so it never counts a
byte that is not there (after a kill -9, HEAD reports what really arrived). A
chunk sent with a checksum goes to a file of its own and is appended only once
verified; a chunk without one is appended as it arrives, so a dropped
connection keeps what it delivered. One PATCH writes at a time: a newer one
takes over from an older one at once (the older, stalled on a dead connection,
is cancelled), instead of waiting for it to time out. When the last byte is
in, the file goes through `VideoService.publish`, the same checks and the same
step as POST /file/, and the upload's id becomes the video's.

Plain domain code: it knows nothing of HTTP and raises the errors of `errors.py`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import (
    ChecksumMismatch,
    EmptyUpload,
    InvalidRequest,
    OffsetMismatch,
    TooManyUploads,
    UploadForbidden,
    UploadGone,
    UploadNotFound,
    UploadTooLarge,
    VideoServiceError,
)
from .service import ReceivedFile, VideoService, clean_filename, resource_error
from .store.db import Database, UploadRecord, utc_now
from .store.storage import Storage, remove

log = logging.getLogger(__name__)

#: Checksum algorithms of the tus checksum extension, by their tus names.
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
#: The Upload-Metadata header, whole; its values are base64.
MAX_METADATA_BYTES = 4096
#: Uploads finished this long ago are forgotten (their ids are videos by then).
COMPLETED_KEPT_S = 3600.0
#: Free disk is checked again after this many bytes of a PATCH.
DISK_CHECK_EVERY_BYTES = 8 * 1024**2
RETRY_AFTER_S = 30


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
    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, header: str) -> Checksum:
        """`Upload-Checksum: <algorithm> <base64 digest>`; 400 for what cannot be checked."""
        algorithm, _, encoded = header.strip().partition(" ")
        if algorithm not in CHECKSUMS:
            raise InvalidRequest(
                f"Upload-Checksum: algorithm {algorithm[:20]!r} is not supported;"
                f" supported: {', '.join(CHECKSUMS)}"
            )
        try:
            digest = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("Upload-Checksum: the digest is not valid base64") from None
        return cls(algorithm, digest)


def parse_metadata(header: str) -> dict[str, bytes]:
    """`Upload-Metadata: key base64,key2 base64,...` (a value may be absent); 400 for anything else."""
    if len(header) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes")
    pairs: dict[str, bytes] = {}
    if not header.strip():
        return pairs
    for item in header.split(","):
        key, _, encoded = item.strip().partition(" ")
        if not key or not key.isascii() or not key.isprintable() or " " in key:
            raise InvalidRequest(
                "Upload-Metadata: each key must be printable ASCII, without spaces or commas"
            )
        if key in pairs:
            raise InvalidRequest(f"Upload-Metadata: the key {key[:40]!r} is given twice")
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"Upload-Metadata: the value of {key[:40]!r} is not valid base64") from None
    return pairs


class ResumableUploads:
    def __init__(self, settings: Settings, db: Database, storage: Storage, videos: VideoService) -> None:
        self._settings = settings
        self._db = db
        self._storage = storage
        self._videos = videos
        #: The task of the PATCH now writing each upload: a newer PATCH cancels it.
        self._writers: dict[str, asyncio.Task[object]] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def max_bytes(self) -> int:
        return self._settings.http.max_upload_bytes

    # -- the lifecycle ---------------------------------------------------------

    async def create(self, length: int, metadata: str, owner: str | None) -> UploadState:
        if length < 1:
            raise EmptyUpload("Upload-Length must be at least 1: an empty file is not a video")
        if length > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)
        fields = parse_metadata(metadata)
        name = fields.get("filename") or fields.get("name") or b""
        await self._check_room(owner)
        await asyncio.to_thread(self._storage.ensure_free, length)
        now = time.time()
        record = UploadRecord(
            id=str(uuid.uuid4()),
            length=length,
            filename=clean_filename(name.decode("utf-8", "replace")),
            metadata=metadata.strip(),
            owner=owner,
            created_at=utc_now(),
            expires_at=now + self._settings.http.upload_expiry_s,
        )
        await asyncio.to_thread(self._storage.upload_path(record.id).touch)
        try:
            await self._db.insert_upload(record)
        except BaseException:
            await asyncio.to_thread(remove, self._storage.upload_path(record.id))
            raise
        log.info("upload created", extra={"upload_id": record.id, "length": length})
        return UploadState(record.id, length, 0, record.metadata, record.expires_at)

    async def _check_room(self, owner: str | None) -> None:
        pending = await self._db.pending_uploads()
        limits = self._settings.http
        if len(pending) >= limits.max_pending_uploads:
            raise TooManyUploads(
                f"{len(pending)} uploads are unfinished (max_pending_uploads); finish or delete some first",
                RETRY_AFTER_S,
            )
        if owner is not None:
            mine = sum(1 for upload in pending if upload.owner == owner)
            if mine >= limits.max_pending_uploads_per_key:
                raise TooManyUploads(
                    f"this API key has {mine} unfinished uploads (max_pending_uploads_per_key)", RETRY_AFTER_S
                )

    async def state(self, upload_id: str, owner: str | None) -> UploadState:
        record = await self._record(upload_id, owner)
        return UploadState(
            record.id, record.length, await self._offset(record), record.metadata, record.expires_at
        )

    async def append(
        self,
        upload_id: str,
        owner: str | None,
        offset: int,
        chunks: AsyncIterator[bytes],
        declared_bytes: int | None,
        checksum: Checksum | None,
    ) -> UploadState:
        """Write a PATCH's body at `offset`; when it completes the upload, store the video."""
        await self._take_over(upload_id)
        record = await self._record(upload_id, owner)
        current = await self._offset(record)
        if offset != current:
            raise OffsetMismatch(
                f"Upload-Offset is {offset}, but the upload is at {current}: HEAD, then resume"
            )
        remaining = record.length - current
        if declared_bytes is not None and declared_bytes > remaining:
            raise _PastTheEnd(record.length, remaining)
        if record.completed_at is None and remaining > 0:
            written = await self._write(record, chunks, remaining, checksum)
            current += written
        expires_at = time.time() + self._settings.http.upload_expiry_s
        if record.completed_at is None and current >= record.length:
            await self._publish(record)
        else:
            await self._db.extend_upload(record.id, expires_at)
        return UploadState(record.id, record.length, current, record.metadata, expires_at)

    async def terminate(self, upload_id: str, owner: str | None) -> None:
        await self._take_over(upload_id)
        record = await self._record(upload_id, owner)
        await self._forget(record.id)
        log.info("upload terminated", extra={"upload_id": record.id})

    # -- writing --------------------------------------------------------------

    async def _take_over(self, upload_id: str) -> None:
        """Become the one writer of this upload; a PATCH still at it (stalled, most likely) is ended."""
        me = asyncio.current_task()
        assert me is not None
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = self._locks[upload_id] = asyncio.Lock()
        async with lock:
            previous = self._writers.get(upload_id)
            self._writers[upload_id] = me
        if previous is not None and previous is not me and not previous.done():
            log.info("a newer request took over the upload", extra={"upload_id": upload_id})
            previous.cancel()
            await asyncio.wait([previous])

        def release(_: object) -> None:
            if self._writers.get(upload_id) is me:
                del self._writers[upload_id]

        me.add_done_callback(release)

    async def _write(
        self, record: UploadRecord, chunks: AsyncIterator[bytes], remaining: int, checksum: Checksum | None
    ) -> int:
        """Append the body; returns the bytes kept.

        With a checksum: all or nothing. Without: what arrived is kept (tus: store as much as
        possible), except for a body that runs past Upload-Length, which leaves nothing.
        """
        part = self._storage.upload_path(record.id)
        target = self._storage.upload_chunk_path(record.id) if checksum else part
        digest = CHECKSUMS[checksum.algorithm]() if checksum else None
        written = 0
        next_disk_check = DISK_CHECK_EVERY_BYTES
        out = await asyncio.to_thread(open, target, "wb" if checksum else "ab")
        start = await asyncio.to_thread(lambda: part.stat().st_size)
        kept = False
        try:
            async for chunk in chunks:
                if written + len(chunk) > remaining:
                    raise _PastTheEnd(record.length, remaining)
                # Each chunk is on disk before the next is read: HEAD's offset is what arrived.
                await asyncio.to_thread(_write_and_hash, out, chunk, digest)
                written += len(chunk)
                if written >= next_disk_check:
                    await asyncio.to_thread(self._storage.ensure_free, DISK_CHECK_EVERY_BYTES)
                    next_disk_check += DISK_CHECK_EVERY_BYTES
            if checksum is not None and digest is not None and digest.digest() != checksum.digest:
                raise ChecksumMismatch(
                    f"the chunk does not match its {checksum.algorithm} checksum; it was discarded"
                )
            kept = True
        except _PastTheEnd:
            if checksum is None:
                await asyncio.shield(asyncio.to_thread(os.truncate, part, start))
            raise
        except OSError as e:
            raise resource_error(e) from None
        finally:
            await asyncio.shield(asyncio.to_thread(_close_durably, out))
            if checksum is not None:
                if kept:
                    await asyncio.shield(asyncio.to_thread(_append_durably, target, part))
                await asyncio.shield(asyncio.to_thread(remove, target))
        return written

    async def _publish(self, record: UploadRecord) -> None:
        """The last byte is in: the same checks and the same step as POST /file/."""
        part = self._storage.upload_path(record.id)
        size = await asyncio.to_thread(lambda: part.stat().st_size)
        try:
            await self._videos.publish(ReceivedFile(part, size), record.filename or None, video_id=record.id)
        except VideoServiceError:
            # Refused (415, 507, ...): the upload is removed with its bytes, as a refused POST leaves nothing.
            await self._forget(record.id)
            raise
        await self._db.complete_upload(record.id)

    # -- bookkeeping ------------------------------------------------------------

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
        await self._db.delete_uploads([upload_id])
        await asyncio.to_thread(remove, self._storage.upload_path(upload_id))
        await asyncio.to_thread(remove, self._storage.upload_chunk_path(upload_id))

    async def sweep(self) -> int:
        """Remove expired uploads (rows and bytes), and uploads finished long ago; how many went."""
        now = time.time()
        gone = 0
        for record in await self._db.expired_uploads(now):
            if record.id in self._writers:
                continue  # a PATCH is writing it right now: its end extends the expiry
            await self._forget(record.id)
            gone += 1
            log.info("upload expired; removed", extra={"upload_id": record.id})
        return gone

    async def reconcile(self) -> None:
        """At start: partial files without a row, and rows whose file is gone, are dropped."""
        files = await asyncio.to_thread(self._storage.stored_upload_ids)
        records = {record.id: record for record in await self._db.pending_uploads()}
        for orphan in sorted(files - set(records)):
            log.warning("removing a partial upload with no row", extra={"upload_id": orphan})
            await asyncio.to_thread(remove, self._storage.upload_path(orphan))
        missing = sorted(set(records) - files)
        if missing:
            await self._db.delete_uploads(missing)
        await self.sweep()

    async def run_sweeper(self) -> None:
        """Forever: sweep a few times per expiry period, at most once a minute."""
        interval = min(60.0, self._settings.http.upload_expiry_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeping expired uploads failed; will try again")


class _PastTheEnd(UploadTooLarge):
    def __init__(self, length: int, remaining: int) -> None:
        VideoServiceError.__init__(
            self,
            f"the chunk goes past Upload-Length ({length}): only {remaining} more bytes fit;"
            " nothing of it was kept",
        )
        self.limit_bytes = length


def _write_and_hash(out: object, chunk: bytes, digest: object) -> None:
    out.write(chunk)  # type: ignore[attr-defined]
    if digest is not None:
        digest.update(chunk)  # type: ignore[attr-defined]


def _close_durably(out: object) -> None:
    with contextlib.suppress(OSError):
        out.flush()  # type: ignore[attr-defined]
        os.fsync(out.fileno())  # type: ignore[attr-defined]
    out.close()  # type: ignore[attr-defined]


def _append_durably(chunk: Path, part: Path) -> None:
    with open(chunk, "rb") as source, open(part, "ab") as target:
        shutil.copyfileobj(source, target, 1024 * 1024)
        target.flush()
        os.fsync(target.fileno())
