"""Marshmallow schemas: they validate requests and document the API."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

MIN_DIMENSION_EXCLUSIVE = 20


class Dimension(fields.Integer):
    """A JSON integer (not a string, float or boolean), even, greater than 20."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, required=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        # bool is an int subclass in Python; in JSON it is not a number.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"must be a JSON integer, got {_json_type(value)}")
        if value <= MIN_DIMENSION_EXCLUSIVE:
            raise ValidationError(f"must be greater than {MIN_DIMENSION_EXCLUSIVE}, got {value}")
        if value % 2:
            raise ValidationError(f"must be even, got {value}")
        return value


def _json_type(value: Any) -> str:
    names = {str: "a string", float: "a number with a fraction", bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


#: The rules of `Dimension` in OpenAPI terms; `maximum` is max_dimension, filled in by `document_limits`.
DIMENSION_RULES = {"minimum": MIN_DIMENSION_EXCLUSIVE + 2, "multipleOf": 2}


class ResizeRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    width = Dimension(metadata={"description": "Target width in pixels", "example": 640, **DIMENSION_RULES})
    height = Dimension(metadata={"description": "Target height in pixels", "example": 360, **DIMENSION_RULES})


class UploadResponseSchema(Schema):
    id = fields.UUID(required=True, metadata={"description": "The new video's id"})


class SuccessSchema(Schema):
    success = fields.Boolean(required=True)


class JobSchema(Schema):
    state = fields.String(
        required=True,
        metadata={"enum": ["queued", "running", "succeeded", "failed", "cancelled"],
                  "description": "queued and running are active; the others say how it ended"},
    )  # fmt: skip
    width = fields.Integer(required=True)
    height = fields.Integer(required=True)
    progress = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"minimum": 0, "maximum": 100,
                  "description": "0-99 while it runs (from ffmpeg), 100 once it succeeded, else null"},
    )  # fmt: skip
    error = fields.String(required=True, allow_none=True, metadata={"description": "Why it failed"})
    queuedAt = fields.String(required=True, metadata={"description": "ISO 8601 UTC"})
    startedAt = fields.String(
        required=True, allow_none=True, metadata={"description": "First handed to a worker"}
    )
    finishedAt = fields.String(required=True, allow_none=True)


class RenditionSchema(Schema):
    width = fields.Integer(required=True)
    height = fields.Integer(required=True)
    bandwidth = fields.Integer(
        required=True,
        allow_none=True,
        metadata={
            "description": "The measured peak bit rate of its video segments, bits/s, once ready (the"
            " master playlist's BANDWIDTH adds the audio's)"
        },
    )
    state = fields.String(
        required=True,
        validate=validate.OneOf(["queued", "running", "ready", "failed"]),
        metadata={"description": "ready: listed in the master playlist; failed: see error"},
    )
    error = fields.String(required=True, allow_none=True, metadata={"description": "Why it failed"})


class PicturesSchema(Schema):
    state = fields.String(
        required=True,
        validate=validate.OneOf(["queued", "running", "ready", "failed"]),
        metadata={"description": "ready: posterUrl and storyboardUrl are set; failed: see error"},
    )
    error = fields.String(required=True, allow_none=True, metadata={"description": "Why they failed"})


class FileInfoSchema(Schema):
    id = fields.UUID(required=True)
    filename = fields.String(
        required=True, metadata={"description": "The uploaded file's name (display only)"}
    )
    processing = fields.Boolean(required=True, metadata={"description": "A resize is queued or running"})
    processingSuccess = fields.Boolean(
        required=True,
        allow_none=True,
        metadata={
            "description": "Outcome of the newest resize: null before the first one and while one is queued"
            " or running (its outcome is not known yet), then true or false"
        },
    )
    processingError = fields.String(
        allow_none=True, metadata={"description": "Why the newest resize failed; null unless it did"}
    )
    progress = fields.Integer(
        allow_none=True,
        metadata={
            "minimum": 0,
            "maximum": 99,
            "description": "0-99 while a resize runs (from ffmpeg's reports); null otherwise. It never shows"
            " 100: a job is done when processing turns false",
        },
    )
    size = fields.Integer(metadata={"description": "Stored size in bytes"})
    width = fields.Integer(metadata={"description": "Display width in pixels"})
    height = fields.Integer(metadata={"description": "Display height in pixels"})
    duration = fields.Float(allow_none=True, metadata={"description": "Duration in seconds"})
    createdAt = fields.String(metadata={"description": "Upload time, ISO 8601 UTC"})
    updatedAt = fields.String(metadata={"description": "Last change of the stored video, ISO 8601 UTC"})
    originalWidth = fields.Integer(allow_none=True, metadata={"description": "The upload's display width"})
    originalHeight = fields.Integer(allow_none=True, metadata={"description": "The upload's display height"})
    originalSize = fields.Integer(allow_none=True, metadata={"description": "The upload's size in bytes"})
    contentUrl = fields.String(
        metadata={
            "description": "Where to GET the video's bytes. When API keys are set it carries an expiring"
            " signature, so a browser's <video src> can use it without the key"
        }
    )
    eventsUrl = fields.String(
        metadata={"description": "Live changes of this video (server-sent events); signed like contentUrl"}
    )
    playbackUrl = fields.String(
        allow_none=True,
        metadata={
            "description": "The HLS master playlist (adaptive streaming), once a rendition is ready; else"
            " null. With API keys, the signature sits in its path, so every URI in the playlists carries it"
        },
    )
    posterUrl = fields.String(
        allow_none=True,
        metadata={
            "description": "A representative frame (JPEG), once the pictures are ready; else null. Signed"
            " like contentUrl when API keys are set (one signature opens the poster, storyboard and"
            " thumbnails of this video)"
        },
    )
    storyboardUrl = fields.String(
        allow_none=True,
        metadata={
            "description": "A WebVTT file of seek-bar previews (`storyboard.jpg#xywh=x,y,w,h` per time"
            " range), once the pictures are ready; else null"
        },
    )
    pictures = fields.Nested(
        PicturesSchema,
        allow_none=True,
        metadata={"description": "How the poster and storyboard are coming; null when pictures are off"},
    )
    renditions = fields.List(
        fields.Nested(RenditionSchema),
        metadata={"description": "The HLS package's renditions, largest first; empty when HLS is off"},
    )
    job = fields.Nested(
        JobSchema, allow_none=True, metadata={"description": "The newest resize; null before the first"}
    )


class FileListSchema(Schema):
    items = fields.List(fields.Nested(FileInfoSchema), required=True)
    next = fields.String(
        required=True, allow_none=True, metadata={"description": "Cursor of the next page; null on the last"}
    )


class ListQuerySchema(Schema):
    limit = fields.Integer(
        load_default=20,
        validate=validate.Range(min=1, max=100, error="must be between 1 and 100, got {input}"),
        metadata={"description": "Videos per page, 1-100"},
    )
    cursor = fields.String(metadata={"description": "The `next` of the previous page (opaque)"})
    processing = fields.Boolean(
        metadata={"description": "Only videos with (true) or without (false) an active job"}
    )


class ContentQuerySchema(Schema):
    variant = fields.String(
        load_default="current",
        validate=validate.OneOf(["current", "original"], error="must be 'current' or 'original'"),
        metadata={
            "description": "current: the stored (maybe resized) video; original: the upload as it came"
        },
    )
    download = fields.Boolean(
        load_default=False, metadata={"description": "true: Content-Disposition attachment (save, not play)"}
    )
    expires = fields.String(metadata={"description": "From a signed contentUrl"})
    signature = fields.String(metadata={"description": "From a signed contentUrl"})


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"description": "What was wrong, and what is allowed"})


class HealthSchema(Schema):
    status = fields.String(
        required=True,
        metadata={
            "example": "ok",
            "description": "ok; or degraded: the service answers, but needs an operator (see problems)",
        },
    )
    problems = fields.List(
        fields.String(), required=True, metadata={"description": "What is wrong, when degraded (a full disk)"}
    )
    activeJobs = fields.Integer(required=True, metadata={"description": "Jobs queued or running"})
