"""Publish: the one way a video comes to be stored, for every kind of upload (multipart, raw, tus).

An upload's body is received into a temporary file (POST) or a resumable
upload's file (tus); then it is checked (ISO-BMFF, complete, within the input
limits, probed) and flushed, moved into place under the video's id, kept as
the original, and only then is the row inserted. A refused file leaves
nothing behind: no row and no partial file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import uuid
from pathlib import Path

from ..config import Settings
from ..errors import EmptyUpload, NotAnMp4, UnsupportedMedia, UploadTooLarge, from_os_error
from ..events.bus import BytesMoved, EventBus
from ..events.outbox import VIDEO_STORED, Outbox
from ..media.probe import InputLimits, MediaInfo, MediaOverLimit, ProbeError, Toolchain, inspect_upload
from ..store.disk import DiskBudget
from ..store.records import Original, VideoRecord, utc_now
from ..store.storage import FileSink, Storage, remove, sync_file
from ..store.videos import VideoRepository
from ..uploads.names import clean_filename
from ..uploads.receiver import SNIFF_BYTES, IncomingUpload, Limits, ReceivedFile, check_head, receive
from .streaming import Streaming

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self,
        settings: Settings,
        videos: VideoRepository,
        storage: Storage,
        disk: DiskBudget,
        tools: Toolchain,
        probes: concurrent.futures.Executor,
        outbox: Outbox,
        bus: EventBus,
        streaming: Streaming,
    ) -> None:
        self._settings = settings
        self._videos = videos
        self._storage = storage
        self._disk = disk
        self._tools = tools
        self._probes = probes
        self._outbox = outbox
        self._bus = bus
        self._streaming = streaming
        self._keep_original = settings.storage.keep_original
        self._input_limits = InputLimits(
            settings.uploads.max_input_pixels, settings.uploads.max_input_streams
        )

    async def upload(self, upload: IncomingUpload) -> VideoRecord:
        """POST /file/: receive the body into a temp file, then publish it."""
        started = time.monotonic()
        received = await self.receive(upload)
        return await self.publish(received, upload.filename, receive_s=time.monotonic() - started)

    async def receive(self, upload: IncomingUpload) -> ReceivedFile:
        """The body, whole, in a temp file of its own (removed on any refusal): the size limit, the
        disk budget before each write, and an early look at the first bytes (a non-MP4 is refused
        before it is all sent)."""
        limit = self._settings.uploads.max_upload_bytes
        if upload.declared_bytes is not None and upload.declared_bytes > limit:
            raise UploadTooLarge(limit)
        temp = self._storage.new_temp_path()
        try:
            with self._disk.reserve(upload.declared_bytes or 0) as reservation:  # 507 before reading
                sink = await FileSink.open(temp)
                try:
                    size = await receive(
                        upload.chunks, sink, reservation, Limits(limit, lambda: UploadTooLarge(limit))
                    )
                finally:
                    await sink.close()
            if size == 0:
                raise EmptyUpload("the upload is empty: send an MP4 file")
        except OSError as e:
            await asyncio.to_thread(remove, temp)
            raise from_os_error(e) from None
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
        """Check the received file and store it as a video; it is consumed: moved, or removed if refused."""
        video_id = video_id or str(uuid.uuid4())
        path, size = received.path, received.size
        started = time.monotonic()
        try:
            info = await self._check(path)
            try:
                await asyncio.to_thread(self._storage.move_into_place, path, video_id)
                if self._keep_original:
                    await asyncio.to_thread(self._storage.keep_as_original, video_id)
            except OSError as e:
                await asyncio.to_thread(self._storage.remove_video, video_id)
                raise from_os_error(e) from None
        finally:
            await asyncio.to_thread(remove, path)  # refused, or already moved: nothing left either way
        record = self._record(video_id, filename, size, info)
        try:
            await self._videos.insert(record, self._outbox.message(VIDEO_STORED, video_id))
        except BaseException:
            await asyncio.to_thread(self._storage.remove_video, video_id)
            raise
        self._streaming.stored(record, info)
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

    def _record(self, video_id: str, filename: str | None, size: int, info: MediaInfo) -> VideoRecord:
        now = utc_now()
        original = Original(info.width, info.height, size, info.audio_codecs) if self._keep_original else None
        return VideoRecord(
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
            original=original,
            renditions=self._streaming.planned(info),
            pictures=self._streaming.planned_pictures(),
        )

    async def _check(self, path: Path) -> MediaInfo:
        """ISO-BMFF, within the input limits, probed as the mp4/mov family with a video stream; and
        flushed to disk. Probing and flushing are independent: both at once. Probes have an executor
        of their own, so a slow one never delays another request's file I/O."""
        check_head(await asyncio.to_thread(_read_head, path))
        loop = asyncio.get_running_loop()
        probed, synced = await asyncio.gather(
            loop.run_in_executor(self._probes, inspect_upload, str(path), self._tools, self._input_limits),
            asyncio.to_thread(sync_file, path),
            return_exceptions=True,
        )
        if isinstance(probed, MediaOverLimit):
            raise UnsupportedMedia(f"the video is over a limit of this service: {probed}")
        if isinstance(probed, ProbeError):
            raise NotAnMp4(str(probed))
        for outcome in (probed, synced):
            if isinstance(outcome, BaseException):
                raise from_os_error(outcome)
        if not isinstance(probed, MediaInfo):  # pragma: no cover - gather returns one or the other
            raise TypeError(probed)
        if not probed.is_mp4_family:
            raise NotAnMp4(f"the container is {','.join(probed.format_names)}, not MP4")
        return probed


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(SNIFF_BYTES)
