"""Rows to records: how each table's rows read as the records of `records.py`."""

from __future__ import annotations

import json

from .database import Row
from .records import (
    JobRecord,
    JobState,
    Original,
    Pictures,
    Rendition,
    UploadRecord,
    VideoRecord,
    VideoStatus,
)

#: A video with its newest job (j_*), in one read; callers add WHERE and ORDER BY.
STATUS_QUERY = """
SELECT v.*,
    j.id AS j_id, j.video_id AS j_video_id, j.width AS j_width, j.height AS j_height,
    j.state AS j_state, j.attempts AS j_attempts, j.error AS j_error, j.created_at AS j_created_at,
    j.started_at AS j_started_at, j.finished_at AS j_finished_at
FROM videos AS v
LEFT JOIN jobs AS j ON j.id = (SELECT max(id) FROM jobs WHERE video_id = v.id)
"""


def status_of(row: Row) -> VideoStatus:
    return VideoStatus(video=video_of(row), job=None if row["j_id"] is None else job_of(row, "j_"))


def video_of(row: Row) -> VideoRecord:
    original = None
    if row["original_width"] is not None:
        original = Original(
            width=row["original_width"],
            height=row["original_height"],
            size_bytes=row["original_size_bytes"],
            audio_codecs=split(row["original_audio_codecs"] or ""),
        )
    return VideoRecord(
        id=row["id"],
        filename=row["filename"],
        size_bytes=row["size_bytes"],
        width=row["width"],
        height=row["height"],
        duration_s=row["duration_s"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        audio_codecs=None if row["audio_codecs"] is None else split(row["audio_codecs"]),
        frame_count=row["frame_count"],
        original=original,
        renditions=renditions_of(row["renditions"]),
        pictures=pictures_of(row["pictures"]),
    )


def renditions_of(text: str | None) -> tuple[Rendition, ...] | None:
    return None if text is None else tuple(Rendition.from_dict(item) for item in json.loads(text))


def renditions_json(renditions: tuple[Rendition, ...] | None) -> str | None:
    if renditions is None:
        return None
    return json.dumps([{**vars(r), "state": r.state.value} for r in renditions], separators=(",", ":"))


def pictures_of(text: str | None) -> Pictures | None:
    return None if text is None else Pictures.from_dict(json.loads(text))


def pictures_json(pictures: Pictures | None) -> str | None:
    return None if pictures is None else json.dumps(pictures.to_dict(), separators=(",", ":"))


def job_of(row: Row, prefix: str = "") -> JobRecord:
    return JobRecord(
        id=row[prefix + "id"],
        video_id=row[prefix + "video_id"],
        width=row[prefix + "width"],
        height=row[prefix + "height"],
        state=JobState(row[prefix + "state"]),
        attempts=row[prefix + "attempts"],
        error=row[prefix + "error"],
        created_at=row[prefix + "created_at"],
        started_at=row[prefix + "started_at"],
        finished_at=row[prefix + "finished_at"],
    )


def join(codecs: tuple[str, ...] | None) -> str | None:
    return None if codecs is None else ",".join(codecs)


def split(codecs: str) -> tuple[str, ...]:
    return tuple(codec for codec in codecs.split(",") if codec)


def upload_of(row: Row) -> UploadRecord:
    return UploadRecord(
        id=row["id"],
        length=row["length"],
        filename=row["filename"],
        metadata=row["metadata"],
        owner=row["owner"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        completed_at=row["completed_at"],
        client=row["client"],
    )
