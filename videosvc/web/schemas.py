"""Marshmallow schemas: they validate requests and document the API."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields

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


def document_limits(spec: dict[str, Any], max_dimension: int) -> None:
    """Put the configured max_dimension into the generated OpenAPI document."""
    properties = spec["components"]["schemas"]["ResizeRequest"]["properties"]
    for name in ("width", "height"):
        properties[name]["maximum"] = max_dimension


class UploadResponseSchema(Schema):
    id = fields.UUID(required=True, metadata={"description": "The new video's id"})


class SuccessSchema(Schema):
    success = fields.Boolean(required=True)


class FileInfoSchema(Schema):
    id = fields.UUID(required=True)
    filename = fields.String(
        required=True, metadata={"description": "The uploaded file's name (display only)"}
    )
    processing = fields.Boolean(required=True, metadata={"description": "A resize is queued or running"})
    processingSuccess = fields.Boolean(
        required=True,
        allow_none=True,
        metadata={"description": "Outcome of the last finished resize; null until one finishes"},
    )
    processingError = fields.String(
        allow_none=True, metadata={"description": "Why the last resize failed; null unless it did"}
    )
    progress = fields.Integer(
        allow_none=True, metadata={"description": "0-100 while a resize runs (from ffmpeg), else null"}
    )
    size = fields.Integer(metadata={"description": "Stored size in bytes"})
    width = fields.Integer(metadata={"description": "Display width in pixels"})
    height = fields.Integer(metadata={"description": "Display height in pixels"})
    duration = fields.Float(allow_none=True, metadata={"description": "Duration in seconds"})
    createdAt = fields.String(metadata={"description": "Upload time, ISO 8601 UTC"})
    updatedAt = fields.String(metadata={"description": "Last change of the stored video, ISO 8601 UTC"})


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"description": "What was wrong, and what is allowed"})


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})
    activeJobs = fields.Integer(required=True, metadata={"description": "Jobs queued or running"})
