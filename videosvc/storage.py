"""Where bytes live under `data_dir`, and how they get there safely.

    data_dir/videosvc.sqlite3   the database
    data_dir/videos/<id>.mp4    stored videos, named by id, never by the client
    data_dir/tmp/               uploads being received (emptied at start-up)
    data_dir/jobs/<job-id>/     one directory per running job (emptied at start-up)

Every file reaches `videos/` by `os.replace` of a complete, fsynced file on
the same filesystem, so a reader (or a crash) sees the old bytes or the new
ones, never half of either.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import InsufficientStorage

log = logging.getLogger(__name__)

VIDEO_SUFFIX = ".mp4"


@dataclass(frozen=True)
class Storage:
    root: Path
    min_free_bytes: int

    @property
    def database_path(self) -> Path:
        return self.root / "videosvc.sqlite3"

    @property
    def videos_dir(self) -> Path:
        return self.root / "videos"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def video_path(self, video_id: str) -> Path:
        # Callers pass canonical UUIDs only, so this can never leave videos_dir.
        return self.videos_dir / f"{video_id}{VIDEO_SUFFIX}"

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    def new_temp_path(self) -> Path:
        return self.tmp_dir / f"{uuid.uuid4()}.part"

    def prepare(self) -> None:
        """Create the layout; throw away what a crash left half-done."""
        for folder in (self.videos_dir, self.tmp_dir, self.jobs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for leftover in [*self.tmp_dir.iterdir(), *self.jobs_dir.iterdir()]:
            log.warning("removing leftover %s from an earlier run", leftover.relative_to(self.root))
            remove(leftover)

    def stored_video_ids(self) -> set[str]:
        return {p.name.removesuffix(VIDEO_SUFFIX) for p in self.videos_dir.glob(f"*{VIDEO_SUFFIX}")}

    def ensure_free(self, incoming_bytes: int) -> None:
        """Raise unless `incoming_bytes` more still leaves `min_free_bytes` free."""
        free = shutil.disk_usage(self.root).free
        if free - incoming_bytes < self.min_free_bytes:
            raise InsufficientStorage(
                f"not enough free disk space: {free} bytes free, the upload needs {incoming_bytes}"
                f" and {self.min_free_bytes} must stay free (min_free_bytes)"
            )

    def commit(self, temp: Path, video_id: str) -> Path:
        """Move a complete temp file into place, durably."""
        target = self.video_path(video_id)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temp, target)
        _fsync_dir(self.videos_dir)
        return target


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
