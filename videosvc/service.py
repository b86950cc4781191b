"""The domain layer: store, describe, resize and delete videos.

It knows nothing of HTTP: it takes plain values and an async stream of bytes,
and raises the errors of `errors.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import time
import unicodedata
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import (
    EmptyUpload,
    InsufficientStorage,
    InvalidRequest,
    NotAnMp4,
    UploadTooLarge,
    VideoNotFound,
)
from .jobs.runner import JobRunner
from .jobs.worker import read_progress
from .media.probe import MediaInfo, ProbeError, Toolchain, has_ftyp_header, probe_complete
from .store.db import Database, VideoRecord, VideoStatus, utc_now
from .store.storage import BackgroundWriter, Storage, remove, sync_file

log = logging.getLogger(__name__)

#: Check free disk again after this many bytes of an upload (a statvfs call: cheap).
DISK_CHECK_EVERY_BYTES = 8 * 1024**2
#: Uploads are written in blocks of this size, each in a thread while the next is received.
WRITE_BLOCK_BYTES = 4 * 1024**2
MAX_FILENAME_CHARS = 255


@dataclass(frozen=True)
class IncomingUpload:
    chunks: AsyncIterator[bytes]
    filename: str | None
    #: From Content-Length, when the client sent one.
    declared_bytes: int | None = None


@dataclass(frozen=True)
class VideoView:
    """What GET shows of a video."""

    status: VideoStatus
    #: 0-100 while a job runs and ffmpeg has reported, else None.
    progress: int | None


class VideoService:
    def __init__(
        self, settings: Settings, db: Database, storage: Storage, runner: JobRunner, tools: Toolchain
    ) -> None:
        self._settings = settings
        self._db = db
        self._storage = storage
        self._runner = runner
        self._tools = tools
        # One lock per video for PATCH and DELETE, so neither sees the other half-done.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, video_id: str) -> asyncio.Lock:
        lock = self._locks.get(video_id)
        if lock is None:
            lock = self._locks[video_id] = asyncio.Lock()
        return lock

    async def reconcile(self) -> None:
        """Make rows and files agree after a crash: each without the other is dropped."""
        rows = await self._db.video_ids()
        files = await asyncio.to_thread(self._storage.stored_video_ids)
        for orphan in sorted(files - rows):
            log.warning("removing stored file with no database row", extra={"video_id": orphan})
            await asyncio.to_thread(remove, self._storage.video_path(orphan))
        missing = sorted(rows - files)
        if missing:
            for video_id in missing:
                log.warning("removing database row whose file is gone", extra={"video_id": video_id})
            await self._db.delete_videos(missing)

    async def store(self, upload: IncomingUpload) -> VideoRecord:
        limit = self._settings.http.max_upload_bytes
        if upload.declared_bytes is not None and upload.declared_bytes > limit:
            raise UploadTooLarge(limit)
        await asyncio.to_thread(self._storage.ensure_free, upload.declared_bytes or 0)
        video_id = str(uuid.uuid4())
        temp = self._storage.new_temp_path()
        started = time.monotonic()
        try:
            size = await self._receive(upload.chunks, temp, limit)
            received = time.monotonic()
            # Probing and flushing to disk are independent: do both at once.
            probed, synced = await asyncio.gather(
                asyncio.to_thread(probe_complete, str(temp), self._tools),
                asyncio.to_thread(sync_file, temp),
                return_exceptions=True,
            )
            if isinstance(probed, ProbeError):
                raise NotAnMp4(str(probed))
            for outcome in (probed, synced):
                if isinstance(outcome, BaseException):
                    raise _disk_full_as_507(outcome)
            assert isinstance(probed, MediaInfo)
            info = probed
            if not info.is_mp4_family:
                raise NotAnMp4(f"the container is {','.join(info.format_names)}, not MP4")
            try:
                await asyncio.to_thread(self._storage.move_into_place, temp, video_id)
            except OSError as e:
                raise _disk_full_as_507(e) from None
        finally:
            await asyncio.to_thread(remove, temp)
        now = utc_now()
        record = VideoRecord(
            id=video_id,
            filename=clean_filename(upload.filename) or f"{video_id}.mp4",
            size_bytes=size,
            width=info.width,
            height=info.height,
            duration_s=info.duration_s,
            created_at=now,
            updated_at=now,
            audio_codecs=info.audio_codecs,
        )
        try:
            await self._db.insert_video(record)
        except BaseException:
            await asyncio.to_thread(remove, self._storage.video_path(video_id))
            raise
        log.info(
            "video stored",
            extra={
                "video_id": video_id,
                "size_bytes": size,
                "receive_s": round(received - started, 3),
                "check_and_store_s": round(time.monotonic() - received, 3),
            },
        )
        return record

    async def _receive(self, chunks: AsyncIterator[bytes], temp: Path, limit: int) -> int:
        """Stream to `temp`; check the header, the size limit and free space on the way."""
        try:
            return await self._write_chunks(chunks, temp, limit)
        except OSError as e:
            raise _disk_full_as_507(e) from None

    async def _write_chunks(self, chunks: AsyncIterator[bytes], temp: Path, limit: int) -> int:
        size = 0
        checked_header = False
        next_disk_check = DISK_CHECK_EVERY_BYTES
        pending: list[bytes] = []
        pending_bytes = 0
        out = await BackgroundWriter.open(temp)
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                pending.append(chunk)
                pending_bytes += len(chunk)
                if not checked_header and pending_bytes >= 8:
                    head = b"".join(pending)[:8]
                    if not has_ftyp_header(head):
                        raise NotAnMp4("the file does not start with an ISO-BMFF 'ftyp' box")
                    checked_header = True
                if pending_bytes >= WRITE_BLOCK_BYTES:
                    await out.write(b"".join(pending))
                    pending, pending_bytes = [], 0
                if size >= next_disk_check:
                    await asyncio.to_thread(self._storage.ensure_free, DISK_CHECK_EVERY_BYTES)
                    next_disk_check += DISK_CHECK_EVERY_BYTES
            if pending:
                await out.write(b"".join(pending))
        finally:
            await out.close()
        if size == 0:
            raise EmptyUpload("the upload is empty: send an MP4 file")
        if not checked_header:
            raise NotAnMp4("the file is too short to be an MP4")
        return size

    async def describe(self, video_id: str) -> VideoView:
        status = await self._db.get_status(video_id)
        progress = None
        if status.active_job is not None and status.video.duration_s:
            files = self._runner.progress_file(status.active_job.id)
            progress = read_progress(files, status.video.duration_s)
        return VideoView(status, progress)

    async def start_resize(self, video_id: str, width: int, height: int) -> None:
        limit = self._settings.jobs.max_dimension
        for name, value in (("width", width), ("height", height)):
            if value > limit:
                raise InvalidRequest(f"{name}: must be at most {limit} (max_dimension), got {value}")
        async with self._lock(video_id):
            job = await self._db.create_job(video_id, width, height)
            try:
                self._runner.submit(job)
            except BaseException:
                # Refused (503): as if the request never came, so no failure to report later.
                await self._db.discard_job(job)
                raise

    async def delete(self, video_id: str) -> None:
        async with self._lock(video_id):
            status = await self._db.get_status(video_id)
            if status.active_job is not None:
                await self._runner.cancel_for_delete(status.active_job.id)
            # Row first: if removing the file then fails, the start-up reconciliation
            # removes the orphan; the reverse order would show a video with no bytes.
            with contextlib.suppress(VideoNotFound):  # gone meanwhile: the outcome is the same
                await self._db.delete_video(video_id)
            await asyncio.to_thread(remove, self._storage.video_path(video_id))
        log.info("video deleted", extra={"video_id": video_id})


def _disk_full_as_507(error: BaseException) -> BaseException:
    """A full disk is the client's 507, not our 500; any other error stays what it is."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("the disk filled up: the upload could not be stored")
    return error


_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f\"\\/]")


def clean_filename(name: str | None) -> str:
    """A display name: no path, no control characters or quotes, bounded length."""
    if not name:
        return ""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip(" .")
    # Surrogates from undecodable bytes would break JSON encoders downstream.
    name = name.encode("utf-8", "replace").decode("utf-8")
    if len(name) > MAX_FILENAME_CHARS:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        name = name[: MAX_FILENAME_CHARS - len(keep) - 1] + "." + keep if keep else name[:MAX_FILENAME_CHARS]
    return name
