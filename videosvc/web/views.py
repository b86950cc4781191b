"""HTTP handlers: parse, call the service, shape the response. Nothing more."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import hdrs, web
from aiohttp_apigami import docs, json_schema, querystring_schema, response_schema

from ..signing import LinkFamily
from ..videos.view import Variant, VideoInfo
from .content import send_video
from .errortable import documented
from .keys import (
    API_KEY,
    DISK,
    GET_BODIES,
    JOB_RUNNER,
    METRICS,
    REPLICATOR,
    REPRESENTATION,
    SERVICE,
    SETTINGS,
    SIGNED_UNTIL,
    VIDEO_ID,
)
from .live import stream_video
from .metrics import serve_metrics
from .schemas import (
    ContentQuerySchema,
    FileInfoSchema,
    FileListSchema,
    HealthSchema,
    ListQuerySchema,
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
    operation_id="uploadFile",
    responses=documented(400, 408, 413, 415, 503, 507),
)
@response_schema(UploadResponseSchema, 200, description="Stored")
async def upload_file(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    upload = await read_upload(request, settings)
    video = await request.app[SERVICE].upload(upload)
    return web.json_response({"id": video.id})


@docs(
    tags=["files"],
    summary="Start resizing a video",
    description=(
        "Queues a resize to exactly width x height (H.264, audio kept, `+faststart`) and answers at once. "
        "GET shows `processing: true` until the job ends, then `processingSuccess`. Each dimension must be"
        " a JSON integer, even, greater than 20 and at most max_dimension; width x height at most"
        " max_output_pixels, and width x height x the video's frames at most max_job_pixel_frames (400"
        " naming the limit). The original's own size restores it, and the current size succeeds, both"
        " without encoding. 429 with Retry-After when the queue (or this API key's share of it) is full."
    ),
    operation_id="resizeFile",
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
    summary="List videos, newest first",
    description=(
        "Pages through the catalogue with an opaque cursor: pass the `next` of one page as `cursor` to get"
        ' the following one (also in the `Link: <...>; rel="next"` header). Paging while videos are added or'
        " deleted never repeats an item, and never skips one that existed throughout."
    ),
    operation_id="listFiles",
    responses=documented(400),
)
@querystring_schema(ListQuerySchema)
@response_schema(FileListSchema, 200, description="A page of videos")
async def list_files(request: web.Request) -> web.Response:
    query = request["querystring"]
    page = await request.app[SERVICE].catalogue(query["limit"], query.get("cursor"), query.get("processing"))
    body = {"items": [file_info(request, video) for video in page.videos], "next": page.next_cursor}
    headers = {}
    if page.next_cursor is not None:
        params = {k: v for k, v in request.query.items() if k != "cursor"} | {"cursor": page.next_cursor}
        next_url = request.rel_url.with_query(params)
        headers[hdrs.LINK] = f'<{next_url}>; rel="next"'
    return web.json_response(body, headers=headers)


@docs(
    tags=["files"],
    summary="Describe a video and its processing status",
    operation_id="getFile",
    parameters=[ID_PARAMETER],
    responses=documented(404),
)
@response_schema(FileInfoSchema, 200, description="The video")
async def get_file(request: web.Request) -> web.Response:
    body = await request.app[GET_BODIES].body(request[VIDEO_ID])
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@docs(
    tags=["files"],
    summary="Download or play the video's bytes",
    description=(
        "The stored video (or, with `variant=original`, the upload as it came), sent from disk with"
        " `Accept-Ranges: bytes`: one range gives 206 (`bytes=0-99`, `bytes=100-`, `bytes=-500`), several"
        " the whole file. A strong `ETag` changes with each rendition: `If-None-Match` gives 304, a stale"
        " `If-Range` the whole new file. When API keys are set, the signed `contentUrl` of GET works"
        " without the key (403 once it expired or if it was altered)."
    ),
    operation_id="getFileContent",
    parameters=[ID_PARAMETER],
    responses={
        200: {
            "description": "The whole video",
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
        },
        206: {
            "description": "One byte range",
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
        },
        304: {"description": "Not modified (If-None-Match, If-Modified-Since)"},
        **documented(400, 403, 404, 416),
    },
)
@querystring_schema(ContentQuerySchema)
async def get_content(request: web.Request) -> web.StreamResponse:
    query = request["querystring"]
    path, info = await request.app[SERVICE].content_path(request[VIDEO_ID], Variant(query["variant"]))
    return await send_video(request, path, info.filename, query["download"], private=SIGNED_UNTIL in request)


#: Links signed for the content are accepted on this route (a browser's <video src> cannot send a key).
get_content.signed_family = LinkFamily.CONTENT  # type: ignore[attr-defined]


@docs(
    tags=["files"],
    summary="Follow a video live (server-sent events)",
    description=(
        "A `text/event-stream`: at once, an event `video` with the GET shape; then one more each time"
        " the shape changes (a job queued, started, its progress at most twice a second, its end). Each"
        " event's `id` fingerprints the snapshot: a client reconnecting with `Last-Event-ID` is not sent"
        " the one it has. A comment line every `stream_heartbeat_s` keeps proxies from closing an idle"
        " stream. Deleting the video sends a last event `deleted` and ends the stream. When API keys are"
        " set, the signed `eventsUrl` of GET works without the key (EventSource sends no headers)."
    ),
    operation_id="getFileEvents",
    parameters=[ID_PARAMETER],
    responses={
        200: {
            "description": "The stream: events `video` (data: the GET shape) and a final `deleted`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **documented(403, 404, 429, 503),
    },
)
async def get_events(request: web.Request) -> web.StreamResponse:
    if request.method == hdrs.METH_HEAD:  # says the stream exists, without opening one
        await request.app[SERVICE].get(request[VIDEO_ID])
        return web.Response(content_type="text/event-stream")
    return await stream_video(request, request[VIDEO_ID])


#: EventSource cannot send a bearer key either.
get_events.signed_family = LinkFamily.EVENTS  # type: ignore[attr-defined]


@docs(
    tags=["service"],
    summary="Metrics in the Prometheus text format",
    description=(
        "Requests by route template, method and status, with a latency histogram; video bytes in and"
        " out; jobs by outcome with a duration histogram; jobs queued and running; webhook deliveries"
        " and their backlog; open live streams. Needs a key when API keys are set (Prometheus:"
        " `authorization: {credentials: <key>}`). Only served when `metrics_enabled`."
    ),
    operation_id="metrics",
    responses={
        200: {"description": "The metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
async def metrics(request: web.Request) -> web.Response:
    return await serve_metrics(request, request.app[METRICS])


@docs(
    tags=["files"],
    summary="Delete a video",
    description="Drops a queued resize, stops a running one, and removes every stored byte before answering.",
    operation_id="deleteFile",
    parameters=[ID_PARAMETER],
    responses=documented(404),
)
@response_schema(SuccessSchema, 200, description="Deleted")
async def delete_file(request: web.Request) -> web.Response:
    await request.app[SERVICE].delete(request[VIDEO_ID])
    return web.json_response({"success": True})


@docs(
    tags=["service"],
    summary="Liveness: the service is up and its job runner takes jobs",
    operation_id="health",
    security=[],  # never needs a key: container health checks have none
)
@response_schema(HealthSchema, 200, description="Up")
async def health(request: web.Request) -> web.Response:
    runner = request.app[JOB_RUNNER]
    problems = await asyncio.to_thread(request.app[DISK].problems)
    replicator = request.app.get(REPLICATOR)
    if replicator is not None and not replicator.running:
        problems.append("the database backup (litestream) is not running; it is being started again")
    return web.json_response(
        {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "activeJobs": len(runner.active_job_ids),
        }
    )


def file_info(request: web.Request, info: VideoInfo) -> dict[str, Any]:
    return request.app[REPRESENTATION].video(info)
