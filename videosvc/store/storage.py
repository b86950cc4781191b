"""Where bytes live under `data_dir`, and how they get there safely.

    data_dir/videosvc.sqlite3   the database
    data_dir/videos/<id>.mp4    stored videos (the current rendition), named by id, never by the client
    data_dir/originals/<id>.mp4 each upload as it came (a hard link to the same bytes until a resize)
    data_dir/tmp/               uploads being received (emptied at start-up)
    data_dir/uploads/<id>.part  resumable uploads in progress (kept across restarts until they expire)
    data_dir/jobs/<job-id>/     one directory per running job (emptied at start-up)
    data_dir/hls/<id>/          each video's HLS package: master.m3u8, a folder per rendition
    data_dir/hls/<id>/.work/    renditions being built (moved beside it once whole)
    data_dir/pictures/<id>/     each video's poster.jpg, storyboard.jpg and storyboard.vtt
    data_dir/thumbnails/<id>/   thumbnails made on request, a cache (least recently used evicted)
    data_dir/quarantine/<id>/   files found at start with no row (kept for a person to look at)

Every file reaches `videos/` by `os.replace` of a complete, fsynced file on
the same filesystem, so a reader (or a crash) sees the old bytes or the new
ones, never half of either.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from ..aio import run_to_end

log = logging.getLogger(__name__)

T = TypeVar("T")

VIDEO_SUFFIX = ".mp4"


@dataclass(frozen=True)
class Storage:
    root: Path

    @property
    def database_path(self) -> Path:
        return self.root / "videosvc.sqlite3"

    @property
    def videos_dir(self) -> Path:
        return self.root / "videos"

    @property
    def originals_dir(self) -> Path:
        return self.root / "originals"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    def upload_path(self, upload_id: str) -> Path:
        return self.uploads_dir / f"{upload_id}.part"

    def new_chunk_path(self, upload_id: str) -> Path:
        """A chunk sent with a checksum waits here until it is verified: a file of its own for each
        request, so one request's cleanup never removes another's (emptied at start-up)."""
        return self.uploads_dir / f"{upload_id}.{uuid.uuid4().hex[:12]}.chunk"

    def remove_upload(self, upload_id: str) -> None:
        remove(self.upload_path(upload_id))

    def stored_upload_ids(self) -> set[str]:
        return {p.name.removesuffix(".part") for p in self.uploads_dir.glob("*.part")}

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def video_path(self, video_id: str) -> Path:
        # Callers pass canonical UUIDs only, so this can never leave videos_dir.
        return self.videos_dir / f"{video_id}{VIDEO_SUFFIX}"

    def original_path(self, video_id: str) -> Path:
        return self.originals_dir / f"{video_id}{VIDEO_SUFFIX}"

    @property
    def hls_dir(self) -> Path:
        return self.root / "hls"

    def package_dir(self, video_id: str) -> Path:
        return self.hls_dir / video_id

    def package_file(self, video_id: str, name: str) -> str:
        """A file of a package, as a string: served per segment, where pathlib's joins cost more
        than the open. `name` is a package file's relative name (playback's pattern checked it)."""
        return f"{self._package_prefix}{video_id}/{name}"

    @functools.cached_property
    def _package_prefix(self) -> str:
        return os.path.join(self.hls_dir, "")

    def package_work_dir(self, video_id: str) -> Path:
        return self.package_dir(video_id) / ".work"

    def derived_job_dir(self, video_id: str, step: str) -> Path:
        """The job folder of a derived job (a ladder, a copy) of a video: one of each at a time."""
        return self.jobs_dir / f"{step}-{video_id}"

    @property
    def pictures_root(self) -> Path:
        return self.root / "pictures"

    def pictures_dir(self, video_id: str) -> Path:
        return self.pictures_root / video_id

    def pictures_work_dir(self, video_id: str) -> Path:
        return self.pictures_dir(video_id) / ".work"

    @property
    def thumbnails_root(self) -> Path:
        return self.root / "thumbnails"

    def thumbnails_dir(self, video_id: str) -> Path:
        return self.thumbnails_root / video_id

    def stored_package_ids(self) -> set[str]:
        """The videos with derived files on disk: an HLS package, pictures, thumbnails."""
        roots = (self.hls_dir, self.pictures_root, self.thumbnails_root)
        return {p.name for root in roots if root.is_dir() for p in root.iterdir() if p.is_dir()}

    def remove_package(self, video_id: str) -> None:
        remove(self.package_dir(video_id))

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    def new_temp_path(self) -> Path:
        return self.tmp_dir / f"{uuid.uuid4()}.part"

    def prepare(self) -> None:
        """Create the layout; throw away what a crash left half-done."""
        folders = (
            self.videos_dir,
            self.originals_dir,
            self.uploads_dir,
            self.tmp_dir,
            self.jobs_dir,
            self.hls_dir,
            self.pictures_root,
            self.thumbnails_root,
        )
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        chunks = self.uploads_dir.glob("*.chunk")  # unverified: never counted, so never kept
        work = self.hls_dir.glob("*/.work")  # renditions half built: their jobs start over
        pictures = self.pictures_root.glob("*/.work")  # likewise pictures
        thumbnails = self.thumbnails_root.glob("*/.*")  # a thumbnail being written
        half_done = [
            *self.tmp_dir.iterdir(),
            *self.jobs_dir.iterdir(),
            *chunks,
            *work,
            *pictures,
            *thumbnails,
        ]
        for leftover in half_done:
            log.warning("removing leftover %s from an earlier run", leftover.relative_to(self.root))
            remove(leftover)

    def stored_video_ids(self) -> set[str]:
        return {p.name.removesuffix(VIDEO_SUFFIX) for p in self.videos_dir.glob(f"*{VIDEO_SUFFIX}")}

    def stored_original_ids(self) -> set[str]:
        return {p.name.removesuffix(VIDEO_SUFFIX) for p in self.originals_dir.glob(f"*{VIDEO_SUFFIX}")}

    def keep_as_original(self, video_id: str) -> None:
        """Make the stored video the original too: a hard link, so no byte is copied."""
        self._link_into_place(self.video_path(video_id), self.original_path(video_id), self.originals_dir)

    def original_as_output(self, video_id: str) -> Path:
        """The original under a temp name (a hard link: no byte copied), to be moved into place as a
        resize's output is: restoring the original is a resize that needed no encoding."""
        temp = self.new_temp_path()
        try:
            os.link(self.original_path(video_id), temp)
        except OSError:  # a filesystem without hard links: copy, durably
            shutil.copyfile(self.original_path(video_id), temp)
            sync_file(temp)
        return temp

    def _link_into_place(self, source: Path, target: Path, folder: Path) -> int:
        temp = self.new_temp_path()
        try:
            try:
                os.link(source, temp)
            except OSError:  # a filesystem without hard links: copy, durably
                shutil.copyfile(source, temp)
                sync_file(temp)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(folder)
        return target.stat().st_size

    def remove_video(self, video_id: str) -> None:
        """Every byte stored for a video: the current rendition, the original, what was derived."""
        remove(self.video_path(video_id))
        remove(self.original_path(video_id))
        remove(self.package_dir(video_id))
        remove(self.pictures_dir(video_id))
        remove(self.thumbnails_dir(video_id))

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def quarantine_video(self, video_id: str) -> bool:
        """A video's files that have no row, kept aside (`quarantine/<id>/`) rather than deleted: a
        database restored from its backup may be a few seconds behind them. What can be made again
        (its package, pictures, thumbnails) goes. False when there was nothing to keep."""
        kept = [path for path in (self.video_path(video_id), self.original_path(video_id)) if path.exists()]
        if kept:
            folder = self.quarantine_dir / video_id
            folder.mkdir(parents=True, exist_ok=True)
            for path in kept:
                os.replace(path, folder / path.parent.name)  # quarantine/<id>/videos, .../originals
        self.remove_video(video_id)
        return bool(kept)

    def move_into_place(self, finished: Path, video_id: str) -> int:
        """Rename a complete, already fsynced file to the video's path, durably; returns its size.

        Used for new uploads and for resized videos alike: either way, a reader or a
        crash sees the old bytes or the new ones.
        """
        target = self.video_path(video_id)
        os.replace(finished, target)
        _fsync_dir(self.videos_dir)
        return target.stat().st_size


class FileSink:
    """Where an upload's bytes go: a file, written in a thread while the next bytes are received.

    Network and disk overlap, the event loop never waits on the disk, and at most
    one batch is in flight, so memory stays bounded whatever the file's size. A
    digest (a tus checksum) is updated in the writer thread too. `close` runs to
    its end even when its caller is cancelled: a takeover never finds a thread
    still writing to the file it is about to write.
    """

    def __init__(self, file: BinaryIO, digest: Digest | None = None) -> None:
        self._file = file
        self._digest = digest
        self._in_flight: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, path: Path, *, append: bool = False, digest: Digest | None = None) -> FileSink:
        # Unbuffered: what was handed over is in the file once written (a tus offset is the file's size).
        file = await asyncio.to_thread(open, path, "ab" if append else "wb", buffering=0)
        return cls(file, digest)

    @property
    def digest(self) -> Digest | None:
        return self._digest

    async def write(self, blocks: list[bytes]) -> None:
        """Hand `blocks` to the thread, written one after the other: never joined into one copy here."""
        await self.flush()
        self._in_flight = asyncio.ensure_future(asyncio.to_thread(self._write, blocks))

    def _write(self, blocks: list[bytes]) -> None:
        for block in blocks:
            view = memoryview(block)
            while view:  # a raw write may take less than it was given
                view = view[self._file.write(view) or 0 :]
            if self._digest is not None:
                self._digest.update(block)

    async def flush(self) -> None:
        """Wait for the batch in flight; its error (a full disk) surfaces here."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight

    async def close(self, *, durable: bool = False) -> None:
        """Wait for the batch in flight, then close (after an fsync when `durable`)."""
        await run_to_end(self._close(durable))

    async def _close(self, durable: bool) -> None:
        try:
            await self.flush()
        finally:
            await asyncio.to_thread(_close_file, self._file, durable)


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


def _close_file(file: BinaryIO, durable: bool) -> None:
    try:
        if durable:
            file.flush()
            os.fsync(file.fileno())
    finally:
        file.close()


def append_file(source: Path, target: Path) -> None:
    """Append `source` to `target`, durably (a verified tus chunk to its upload)."""
    with open(source, "rb") as chunk, open(target, "ab") as out:
        shutil.copyfileobj(chunk, out, 1024 * 1024)
        out.flush()
        os.fsync(out.fileno())


def sync_file(path: Path) -> None:
    """Flush a file's bytes to disk, so a rename of it can never expose a hole after a crash."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
