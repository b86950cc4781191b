"""The domain layer: store, describe, resize and delete videos.

It knows nothing of HTTP: it takes plain values and an async stream of bytes,
and raises the errors of `errors.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import logging
import re
import time
import unicodedata
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import (
    EmptyUpload,
    InsufficientStorage,
    InvalidRequest,
    NotAnMp4,
    OriginalNotKept,
    ServiceBusy,
    UnsupportedMedia,
    UploadTooLarge,
    VideoNotFound,
)
from .events import VIDEO_DELETED, VIDEO_STORED, BytesMoved, EventBus, Outbox
from .jobs.contract import read_progress
from .jobs.outcomes import JobOutcomes
from .jobs.runner import JobRunner
from .media.isobmff import BoxError, has_ftyp_header, read_tracks
from .media.probe import InputLimits, MediaInfo, MediaOverLimit, ProbeError, Toolchain, inspect_upload, probe
from .media.sniff import not_mp4_reason
from .signing import BadSignature, Signer
from .store.db import Database, JobRecord, JobState, Original, PageKey, VideoRecord, VideoStatus, utc_now
from .store.storage import BackgroundWriter, Storage, remove, sync_file

log = logging.getLogger(__name__)

#: Check free disk again after this many bytes of an upload (a statvfs call: cheap).
DISK_CHECK_EVERY_BYTES = 8 * 1024**2
#: Uploads are written in blocks of this size, each in a thread while the next is received.
WRITE_BLOCK_BYTES = 4 * 1024**2
MAX_FILENAME_CHARS = 255
#: The first bytes of an upload, read to tell what a file that is not an MP4 looks like.
SNIFF_BYTES = 1024


@dataclass(frozen=True)
class IncomingUpload:
    chunks: AsyncIterator[bytes]
    filename: str | None
    #: From Content-Length, when the client sent one.
    declared_bytes: int | None = None


@dataclass(frozen=True)
class ReceivedFile:
    """An upload's bytes, whole, in a file of their own, not yet checked."""

    path: Path
    size: int


@dataclass(frozen=True)
class JobInfo:
    """The newest job of a video, as clients see it."""

    state: JobState
    width: int
    height: int
    #: 0-99 while it runs (from ffmpeg's reports), 100 once it succeeded, else None.
    progress: int | None
    error: str | None
    queued_at: str | None
    started_at: str | None
    finished_at: str | None


@dataclass(frozen=True)
class VideoInfo:
    """What GET /file/{id}/ shows of a video: the view model the web layer renders."""

    id: str
    filename: str
    size_bytes: int
    width: int
    height: int
    duration_s: float | None
    created_at: str
    updated_at: str
    #: None when originals are not kept.
    original: Original | None
    job: JobInfo | None

    @property
    def processing(self) -> bool:
        return self.job is not None and self.job.state.active

    @property
    def processing_success(self) -> bool | None:
        """The outcome of the newest job; None before the first, and while one is queued or running."""
        if self.job is None or self.job.state.active:
            return None
        return self.job.state is JobState.SUCCEEDED

    @property
    def processing_error(self) -> str | None:
        return None if self.job is None or self.job.state.active else self.job.error

    @property
    def progress(self) -> int | None:
        return self.job.progress if self.processing and self.job else None


@dataclass(frozen=True)
class Page:
    videos: list[VideoInfo]
    #: Opaque; None on the last page.
    next_cursor: str | None


class Variant(enum.StrEnum):
    CURRENT = "current"  #: the stored video, resized or not
    ORIGINAL = "original"  #: the upload as it came


class VideoService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        runner: JobRunner,
        tools: Toolchain,
        signer: Signer,
        outcomes: JobOutcomes,
        outbox: Outbox,
        bus: EventBus,
    ) -> None:
        self._settings = settings
        self._signer = signer
        self._outcomes = outcomes
        self._outbox = outbox
        self._bus = bus
        self._keep_original = settings.storage.keep_original
        self._db = db
        self._storage = storage
        self._runner = runner
        self._tools = tools
        self._input_limits = InputLimits(settings.http.max_input_pixels, settings.http.max_input_streams)
        # Probes are processes that may take seconds: a pool of their own bounds how many run.
        self._probes = concurrent.futures.ThreadPoolExecutor(
            settings.ffmpeg.probe_concurrency, thread_name_prefix="probe"
        )
        # One lock per video for PATCH and DELETE, so neither sees the other half-done.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, video_id: str) -> asyncio.Lock:
        lock = self._locks.get(video_id)
        if lock is None:
            lock = self._locks[video_id] = asyncio.Lock()
        return lock

    async def close(self) -> None:
        await asyncio.to_thread(self._probes.shutdown, wait=True, cancel_futures=True)

    async def reconcile(self) -> None:
        """Make rows and files agree after a crash or an upgrade.

        A file without a row, or a row without its file, is dropped. Rows from
        before originals were kept take their stored video as the original.
        """
        rows = await self._db.video_ids()
        storage = self._storage
        files = await asyncio.to_thread(storage.stored_video_ids)
        originals = await asyncio.to_thread(storage.stored_original_ids)
        for orphan in sorted((files | originals) - rows):
            log.warning("removing stored file with no database row", extra={"video_id": orphan})
            await asyncio.to_thread(storage.remove_video, orphan)
        missing = sorted(rows - files)
        if missing:
            for video_id in missing:
                log.warning("removing database row whose file is gone", extra={"video_id": video_id})
            await self._db.delete_videos(missing)
        if self._keep_original:
            await self._adopt_originals(originals)

    async def _adopt_originals(self, originals: set[str]) -> None:
        """Rows with no original recorded (an upgrade from a version that kept none): the stored
        video becomes the original, by hard link. A row whose original file is gone likewise."""
        adopted = 0
        for video in await self._db.videos_without_original():
            await asyncio.to_thread(self._storage.keep_as_original, video.id)
            await self._db.set_original(video.id, _original_of(video))
            adopted += 1
        for video_id in sorted(await self._db.video_ids()):
            if video_id not in originals:
                status = await self._db.get_status(video_id)
                if status.video.original is not None:
                    log.warning("original missing; keeping the stored video as the original",
                                extra={"video_id": video_id})  # fmt: skip
                    await asyncio.to_thread(self._storage.keep_as_original, video_id)
                    await self._db.set_original(video_id, _original_of(status.video))
        if adopted:
            log.info("kept %d stored video(s) as their originals (upgrade)", adopted)

    async def store(self, upload: IncomingUpload) -> VideoRecord:
        """POST /file/: receive the body into a temp file, then publish it."""
        started = time.monotonic()
        received = await self.receive(upload)
        return await self.publish(received, upload.filename, receive_s=time.monotonic() - started)

    async def receive(self, upload: IncomingUpload) -> ReceivedFile:
        """The body, whole, in a temp file of its own (removed on any refusal): size limit, free disk,
        and an early look at the first bytes, so a non-MP4 is refused before it is all sent."""
        limit = self._settings.http.max_upload_bytes
        if upload.declared_bytes is not None and upload.declared_bytes > limit:
            raise UploadTooLarge(limit)
        await asyncio.to_thread(self._storage.ensure_free, upload.declared_bytes or 0)
        temp = self._storage.new_temp_path()
        try:
            size = await self._receive(upload.chunks, temp, limit)
        except BaseException:
            await asyncio.to_thread(remove, temp)
            raise
        return ReceivedFile(temp, size)

    async def publish(
        self,
        received: ReceivedFile,
        filename: str | None,
        video_id: str | None = None,
        receive_s: float = 0.0,
    ) -> VideoRecord:
        """The one way a video comes to be stored, for every kind of upload (multipart, raw, tus).

        The received file is checked (ISO-BMFF, complete, within the input limits, probed) and
        flushed, moved into place under the video's id, kept as the original, and only then is
        the row inserted. It is consumed: moved, or removed if refused.
        """
        video_id = video_id or str(uuid.uuid4())
        path, size = received.path, received.size
        started = time.monotonic()
        try:
            head = await asyncio.to_thread(_read_head, path)
            if not has_ftyp_header(head):
                raise NotAnMp4(
                    not_mp4_reason(head) if len(head) >= 8 else "the file is too short to be an MP4"
                )
            # Probing and flushing to disk are independent: do both at once. Probes have an
            # executor of their own, so a slow one never delays another request's file I/O.
            loop = asyncio.get_running_loop()
            probed, synced = await asyncio.gather(
                loop.run_in_executor(
                    self._probes, inspect_upload, str(path), self._tools, self._input_limits
                ),
                asyncio.to_thread(sync_file, path),
                return_exceptions=True,
            )
            if isinstance(probed, MediaOverLimit):
                raise UnsupportedMedia(f"the video is over a limit of this service: {probed}")
            if isinstance(probed, ProbeError):
                raise NotAnMp4(str(probed))
            for outcome in (probed, synced):
                if isinstance(outcome, BaseException):
                    raise resource_error(outcome)
            assert isinstance(probed, MediaInfo)
            info = probed
            if not info.is_mp4_family:
                raise NotAnMp4(f"the container is {','.join(info.format_names)}, not MP4")
            try:
                await asyncio.to_thread(self._storage.move_into_place, path, video_id)
                if self._keep_original:
                    await asyncio.to_thread(self._storage.keep_as_original, video_id)
            except OSError as e:
                await asyncio.to_thread(self._storage.remove_video, video_id)
                raise resource_error(e) from None
        finally:
            await asyncio.to_thread(remove, path)  # refused, or already moved: nothing left either way
        now = utc_now()
        record = VideoRecord(
            id=video_id,
            filename=clean_filename(filename) or f"{video_id}.mp4",
            size_bytes=size,
            width=info.width,
            height=info.height,
            duration_s=info.duration_s,
            created_at=now,
            updated_at=now,
            audio_codecs=info.audio_codecs,
            frame_count=info.frame_count,
            original=Original(info.width, info.height, size, info.audio_codecs)
            if self._keep_original
            else None,
        )
        try:
            await self._db.insert_video(record, outbox=self._outbox.message(VIDEO_STORED, video_id))
        except BaseException:
            await asyncio.to_thread(self._storage.remove_video, video_id)
            raise
        self._bus.emit(BytesMoved("in", size))
        log.info(
            "video stored",
            extra={
                "video_id": video_id,
                "size_bytes": size,
                "receive_s": round(receive_s, 3),
                "check_and_store_s": round(time.monotonic() - started, 3),
            },
        )
        return record

    async def _receive(self, chunks: AsyncIterator[bytes], temp: Path, limit: int) -> int:
        """Stream to `temp`; check the header, the size limit and free space on the way."""
        try:
            return await self._write_chunks(chunks, temp, limit)
        except OSError as e:
            raise resource_error(e) from None

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
                if not checked_header and pending_bytes >= SNIFF_BYTES:
                    head = b"".join(pending)[:SNIFF_BYTES]
                    if not has_ftyp_header(head):
                        raise NotAnMp4(not_mp4_reason(head))
                    checked_header = True
                if pending_bytes >= WRITE_BLOCK_BYTES:
                    await out.write(pending)
                    pending, pending_bytes = [], 0
                if size >= next_disk_check:
                    await asyncio.to_thread(self._storage.ensure_free, DISK_CHECK_EVERY_BYTES)
                    next_disk_check += DISK_CHECK_EVERY_BYTES
            if pending:
                await out.write(pending)
        finally:
            await out.close()
        if size == 0:
            raise EmptyUpload("the upload is empty: send an MP4 file")
        if not checked_header:
            head = b"".join(pending)[:SNIFF_BYTES] if pending else b""
            if len(head) < 8:
                raise NotAnMp4("the file is too short to be an MP4")
            if not has_ftyp_header(head):
                raise NotAnMp4(not_mp4_reason(head))
        return size

    async def describe(self, video_id: str) -> VideoInfo:
        return self._info(await self._db.get_status(video_id))

    async def status(self, video_id: str) -> VideoStatus:
        """The video's stored state: the same object until a write changes it (the status cache)."""
        return await self._db.get_status(video_id)

    def info(self, status: VideoStatus) -> VideoInfo:
        """What GET shows of a stored state, with a running job's progress as of now."""
        return self._info(status)

    async def catalogue(self, limit: int, cursor: str | None, processing: bool | None) -> Page:
        """A page of videos, newest first. The cursor is opaque and signed; a forged one is refused."""
        after = None
        if cursor is not None:
            try:
                state = self._signer.decode_cursor(cursor)
                after = PageKey(str(state["c"]), str(state["i"]))
            except (BadSignature, KeyError):
                raise InvalidRequest(
                    "cursor: not one this service handed out (or from before a restart);"
                    " start from the first page"
                ) from None
        statuses = await self._db.list_statuses(limit + 1, after, processing)
        more = len(statuses) > limit
        videos = [self._info(status) for status in statuses[:limit]]
        next_cursor = None
        if more:
            last = videos[-1]
            next_cursor = self._signer.encode_cursor({"c": last.created_at, "i": last.id})
        return Page(videos, next_cursor)

    def _info(self, status: VideoStatus) -> VideoInfo:
        return describe_status(status, self._keep_original, self._progress)

    def _progress(self, job: JobRecord, video: VideoRecord) -> int | None:
        if not video.duration_s:
            return None
        return read_progress(self._runner.progress_file(job.id), video.duration_s)

    async def content_path(self, video_id: str, variant: Variant) -> tuple[Path, VideoInfo]:
        """Where the bytes of a video (or its original) are, and what it is."""
        info = await self.describe(video_id)
        if variant is Variant.ORIGINAL:
            if not self._keep_original:
                raise OriginalNotKept
            return self._storage.original_path(video_id), info
        return self._storage.video_path(video_id), info

    async def start_resize(self, video_id: str, width: int, height: int, client: str | None = None) -> None:
        """Queue a resize; `client` (an API key's name) has its own share of the queue.

        A resize to the size the video has now, or (originals kept) to the original's
        size, needs no encoding: it ends at once, and GET shows it succeeded.
        """
        limits = self._settings.jobs
        for name, value in (("width", width), ("height", height)):
            if value > limits.max_dimension:
                raise InvalidRequest(
                    f"{name}: must be at most {limits.max_dimension} (max_dimension), got {value}"
                )
        if width * height > limits.max_output_pixels:
            raise InvalidRequest(
                f"{width}x{height} is {width * height} pixels, over the limit of {limits.max_output_pixels}"
                " (max_output_pixels); ask for a smaller size"
            )
        video = (await self._db.get_status(video_id)).video
        frames = video.frame_count or await self._count_frames(video)
        work = width * height * frames
        if work > limits.max_job_pixel_frames:
            raise InvalidRequest(
                f"resizing {frames} frames to {width}x{height} is {work} pixel-frames of work, over the limit"
                f" of {limits.max_job_pixel_frames} (max_job_pixel_frames); ask for a smaller size"
            )
        with self._runner.admission(client):  # 429 when the queue, or this client's share, is full
            async with self._lock(video_id):
                job = await self._db.create_job(video_id, width, height)
                video = (await self._db.get_status(video_id)).video
                original = video.original if self._keep_original else None
                if (width, height) == (video.width, video.height):
                    await self._outcomes.succeeded(job)
                    log.info("job finished: the video already has that size", extra={"job_id": job.id})
                    return
                if original is not None and (width, height) == (original.width, original.height):
                    await self._restore_original(job, original)
                    return
                try:
                    self._runner.submit(job, client)
                except BaseException:
                    # Refused (503): as if the request never came, so no failure to report later.
                    await self._db.discard_job(job)
                    raise

    async def _restore_original(self, job: JobRecord, original: Original) -> None:
        """The original's size was asked for: it is the answer, swapped in without encoding."""
        try:
            size = await asyncio.to_thread(self._storage.restore_original, job.video_id)
            info = await asyncio.get_running_loop().run_in_executor(
                self._probes, probe, str(self._storage.video_path(job.video_id)), self._tools
            )
        except (OSError, ProbeError) as e:
            await self._outcomes.failed(job, f"restoring the original failed: {e}")
            raise
        await self._outcomes.succeeded(job, size, info)
        log.info("job finished: the original restored", extra={"job_id": job.id, "video_id": job.video_id})

    async def _count_frames(self, video: VideoRecord) -> int:
        """Frames of a video stored before they were recorded: read its index once, and keep it."""
        path = str(self._storage.video_path(video.id))
        loop = asyncio.get_running_loop()
        try:
            tracks = await loop.run_in_executor(self._probes, read_tracks, path)
            frames = max((t.sample_count for t in tracks if t.kind == "vide"), default=0)
        except (BoxError, OSError):
            frames = 0
        if not frames:  # a fragmented file has no count in its index: assume 60 fps
            frames = max(1, round((video.duration_s or 0) * 60))
        await self._db.set_frame_count(video.id, frames)
        return frames

    async def delete(self, video_id: str) -> None:
        async with self._lock(video_id):
            status = await self._db.get_status(video_id)
            if status.active_job is not None:
                await self._runner.cancel_for_delete(status.active_job.id)
            # Row first: if removing the file then fails, the start-up reconciliation
            # removes the orphan; the reverse order would show a video with no bytes.
            with contextlib.suppress(VideoNotFound):  # gone meanwhile: the outcome is the same
                await self._db.delete_video(
                    video_id, outbox=self._outbox.message(VIDEO_DELETED, video_id, last_seen=status)
                )
            await asyncio.to_thread(self._storage.remove_video, video_id)
        log.info("video deleted", extra={"video_id": video_id})


def describe_status(
    status: VideoStatus,
    keep_original: bool,
    progress: Callable[[JobRecord, VideoRecord], int | None] | None = None,
) -> VideoInfo:
    """The view model of a video's row: what GET, the catalogue, live streams and webhooks show."""
    video, job = status.video, status.job
    job_info = None
    if job is not None:
        percent = None
        if job.state is JobState.SUCCEEDED:
            percent = 100
        elif job.state.active and progress is not None:
            percent = progress(job, video)
        job_info = JobInfo(
            state=job.state,
            width=job.width,
            height=job.height,
            progress=percent,
            error=job.error,
            queued_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
    return VideoInfo(
        id=video.id,
        filename=video.filename,
        size_bytes=video.size_bytes,
        width=video.width,
        height=video.height,
        duration_s=video.duration_s,
        created_at=video.created_at,
        updated_at=video.updated_at,
        original=video.original if keep_original else None,
        job=job_info,
    )


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(SNIFF_BYTES)


def _original_of(video: VideoRecord) -> Original:
    return Original(video.width, video.height, video.size_bytes, video.audio_codecs or ())


def resource_error(error: BaseException) -> BaseException:
    """A full disk is the client's 507 and a lack of file handles a 503, not our 500; else as is."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("not enough free disk space: the upload could not be stored")
    if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
        return ServiceBusy("the service is out of file handles for the moment; retry shortly")
    return error


_UNSAFE_CHARS = re.compile(r"[\"\\/]")


def clean_filename(name: str | None) -> str:
    """A display name: no path, no control characters or quotes, bounded length."""
    if not name:
        return ""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Control and format characters (C0, C1, bidi overrides, zero-width) would let a
    # name pose as another in a listing or a log: each becomes "_".
    name = "".join("_" if unicodedata.category(c) in ("Cc", "Cf") else c for c in name)
    name = _UNSAFE_CHARS.sub("_", name).strip(" .")
    # Surrogates from undecodable bytes would break JSON encoders downstream.
    name = name.encode("utf-8", "replace").decode("utf-8")
    if len(name) > MAX_FILENAME_CHARS:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        name = name[: MAX_FILENAME_CHARS - len(keep) - 1] + "." + keep if keep else name[:MAX_FILENAME_CHARS]
    return name
