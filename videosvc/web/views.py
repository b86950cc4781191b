"""HTTP handlers: parse, call the service, shape the response. Nothing more."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apigami import docs, json_schema, response_schema

from ..service import VideoView
from ..store.db import JobState
from .errortable import documented
from .keys import API_KEY, JOB_RUNNER, SERVICE, SETTINGS, VIDEO_ID
from .schemas import (
    FileInfoSchema,
    HealthSchema,
    ResizeRequestSchema,
    SuccessSchema,
    UploadResponseSchema,
)
from .uploads import read_upload

ID_PARAMETER = {
    "in": "path",
    "name": "id",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": "The video's id, as returned by POST /file/",
}


@docs(
    tags=["files"],
    summary="Upload an MP4 video",
    description=(
        "Send the video as multipart/form-data (a file part, named `file`) or as the raw body "
        "(`Content-Type: video/mp4`), with the name in `Content-Disposition: attachment; filename=...` "
        "or `?filename=`. The body is streamed to disk and checked (ISO-BMFF `ftyp` header, then a probe: "
        "the mp4/mov family with a video stream) before it is stored."
    ),
    parameters=[
        {
            "in": "query",
            "name": "filename",
            "required": False,
            "schema": {"type": "string"},
            "description": "The file's name, for raw uploads without Content-Disposition",
        }
    ],
    requestBody={
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "video/mp4": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    responses=documented(400, 408, 413, 415, 503, 507),
)
@response_schema(UploadResponseSchema, 200, description="Stored")
async def upload_file(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    upload = await read_upload(request, settings.http)
    video = await request.app[SERVICE].store(upload)
    return web.json_response({"id": video.id})


@docs(
    tags=["files"],
    summary="Start resizing a video",
    description=(
        "Queues a resize to exactly width x height (H.264, audio kept, `+faststart`) and answers at once. "
        "GET shows `processing: true` until the job ends, then `processingSuccess`. "
        "Each dimension must be a JSON integer, even, greater than 20 and at most max_dimension."
    ),
    parameters=[ID_PARAMETER],
    responses=documented(400, 404, 408, 409, 413, 415, 429, 503),
)
@json_schema(ResizeRequestSchema, required=True)
@response_schema(SuccessSchema, 200, description="The job was accepted")
async def resize_file(request: web.Request) -> web.Response:
    video_id = request[VIDEO_ID]
    body = request["json"]
    await request.app[SERVICE].start_resize(video_id, body["width"], body["height"], request.get(API_KEY))
    return web.json_response({"success": True})


@docs(
    tags=["files"],
    summary="Describe a video and its processing status",
    parameters=[ID_PARAMETER],
    responses=documented(404),
)
@response_schema(FileInfoSchema, 200, description="The video")
async def get_file(request: web.Request) -> web.Response:
    view = await request.app[SERVICE].describe(request[VIDEO_ID])
    return web.json_response(file_info(view))


@docs(
    tags=["files"],
    summary="Delete a video",
    description="Drops a queued resize, stops a running one, and removes every stored byte before answering.",
    parameters=[ID_PARAMETER],
    responses=documented(404),
)
@response_schema(SuccessSchema, 200, description="Deleted")
async def delete_file(request: web.Request) -> web.Response:
    await request.app[SERVICE].delete(request[VIDEO_ID])
    return web.json_response({"success": True})


@docs(tags=["service"], summary="Liveness: the service is up and its job runner takes jobs")
@response_schema(HealthSchema, 200, description="Up")
async def health(request: web.Request) -> web.Response:
    runner = request.app[JOB_RUNNER]
    return web.json_response({"status": "ok", "activeJobs": len(runner.active_job_ids)})


def file_info(view: VideoView) -> dict[str, Any]:
    video, last = view.status.video, view.status.last_job
    return {
        "id": video.id,
        "filename": video.filename,
        "processing": view.status.active_job is not None,
        "processingSuccess": None if last is None else last.state is JobState.SUCCEEDED,
        "processingError": last.error if last is not None else None,
        "progress": view.progress,
        "size": video.size_bytes,
        "width": video.width,
        "height": video.height,
        "duration": video.duration_s,
        "createdAt": video.created_at,
        "updatedAt": video.updated_at,
    }
