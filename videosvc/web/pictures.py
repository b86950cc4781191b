"""Pictures of a video over HTTP: its poster, its storyboard, thumbnails at any time (SPEC §14).

With API keys, one signature of the `pictures` family (GET's `posterUrl`,
`storyboardUrl`) opens this video's poster, storyboard and thumbnails, and
nothing else. The storyboard's VTT names its sprite by a relative URI; answered
through a signed link, that URI carries the same signature, so a player loads
the sprite with no header.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from aiohttp import web
from aiohttp_apigami import docs

from ..errors import InvalidRequest, PictureNotReady, VideoNotFound
from ..media.pictures import FORMATS, MAX_WIDTH, MIN_WIDTH, POSTER, SPRITE, BadThumbnail, thumbnail_ask
from ..signing import LinkFamily
from ..store.records import RenditionState
from .content import Presentation, send_file
from .errortable import documented
from .keys import SERVICE, SIGNED_UNTIL, THUMBNAILS, VIDEO_ID
from .requests import client_of

#: A video's pictures never change once made: a new video is a new id.
PICTURE = Presentation("image/jpeg", "max-age=31536000, immutable", public=True)
#: The storyboard's VTT: small, rewritten per signed link.
VTT_TYPE = "text/vtt"

ID = {"in": "path", "name": "id", "required": True, "schema": {"type": "string", "format": "uuid"}}
SIGNED = [
    {"in": "query", "name": "expires", "required": False, "schema": {"type": "string"}},
    {"in": "query", "name": "signature", "required": False, "schema": {"type": "string"}},
]
IMAGE = {"schema": {"type": "string", "format": "binary"}}


async def _ready_pictures(request: web.Request) -> tuple[str, float]:
    """The video's id and the poster's time; 404 unless its pictures are ready."""
    video_id = request[VIDEO_ID]
    video = (await request.app[SERVICE].state(video_id)).video
    if video.pictures is None or video.pictures.state is not RenditionState.READY:
        raise PictureNotReady
    return video_id, video.pictures.poster_time or 0.0


@docs(
    tags=["pictures"],
    summary="The video's poster",
    description=(
        "A representative frame from the first seconds (black frames passed over), JPEG, at most 1280"
        " pixels on its long side. 404 until the pictures are ready (GET's `posterUrl` is null until then)."
        " With API keys, use `posterUrl`: signed, it works without the key."
    ),
    operation_id="getPoster",
    parameters=[ID, *SIGNED],
    responses={
        200: {"description": "The poster", "content": {"image/jpeg": IMAGE}},
        **documented(403, 404, 416),
    },
)
async def get_poster(request: web.Request) -> web.StreamResponse:
    return await _send_picture(request, POSTER)


@docs(
    tags=["pictures"],
    summary="The video's storyboard sprite (the tiles the storyboard's VTT points into)",
    operation_id="getStoryboardSprite",
    parameters=[ID, *SIGNED],
    responses={
        200: {"description": "The sprite", "content": {"image/jpeg": IMAGE}},
        **documented(403, 404, 416),
    },
)
async def get_sprite(request: web.Request) -> web.StreamResponse:
    return await _send_picture(request, SPRITE)


async def _send_picture(request: web.Request, name: str) -> web.StreamResponse:
    """One of the video's pictures, once they are ready."""
    video_id, _ = await _ready_pictures(request)
    path = request.app[SERVICE].pictures_dir(video_id) / name
    return await send_file(request, path, PICTURE, SIGNED_UNTIL in request, PictureNotReady())


@docs(
    tags=["pictures"],
    summary="The video's storyboard: seek-bar previews as WebVTT",
    description=(
        "A WebVTT file whose cues cover the video, each naming a tile of the sprite beside it"
        " (`storyboard.jpg#xywh=x,y,w,h`, a relative URI; through a signed link it carries the same"
        " signature). One tile every few seconds, at most 100."
    ),
    operation_id="getStoryboard",
    parameters=[ID, *SIGNED],
    responses={
        200: {"description": "The storyboard", "content": {"text/vtt": {"schema": {"type": "string"}}}},
        **documented(403, 404),
    },
)
async def get_storyboard(request: web.Request) -> web.StreamResponse:
    video_id, _ = await _ready_pictures(request)
    path = request.app[SERVICE].pictures_dir(video_id) / "storyboard.vtt"
    try:
        text = path.read_text(encoding="utf-8")  # small: at most 100 cues
    except FileNotFoundError:
        raise PictureNotReady from None
    given = request.query
    if "expires" in given and "signature" in given:
        # The sprite's URI carries the signature the VTT came with (the sprite's route checks it
        # again: a caller with a key who sent a bad one gets a 403 there, never more than its key).
        query = urlencode({"expires": given["expires"], "signature": given["signature"]})
        text = text.replace(f"{SPRITE}#", f"{SPRITE}?{query}#")
        cache = "private, max-age=60"
    else:
        cache = "public, max-age=3600"
    return web.Response(text=text, content_type=VTT_TYPE, charset="utf-8", headers={"Cache-Control": cache})


@docs(
    tags=["pictures"],
    summary="A thumbnail: the frame at a time, at a width",
    description=(
        f"`time` in seconds (default: the poster's), rounded to 0.1 s, from 0 to the duration; `width`"
        f" {MIN_WIDTH}-{MAX_WIDTH} (default 320), rounded to a multiple of 16, the height by the aspect."
        " Made on the first request (a seek in a decoder that keeps videos open, a few at a time: 429"
        " past your share), then answered from a cache on disk. `.jpg` or `.webp` (406 when this"
        " server's FFmpeg, PyAV's, has no libwebp)."
    ),
    operation_id="getThumbnail",
    parameters=[
        ID,
        {
            "in": "path",
            "name": "format",
            "required": True,
            "schema": {"type": "string", "enum": list(FORMATS)},
        },
        {"in": "query", "name": "time", "required": False, "schema": {"type": "number", "minimum": 0}},
        {
            "in": "query",
            "name": "width",
            "required": False,
            "schema": {"type": "integer", "minimum": MIN_WIDTH, "maximum": MAX_WIDTH},
        },
        *SIGNED,
    ],
    responses={
        200: {"description": "The thumbnail", "content": {"image/jpeg": IMAGE, "image/webp": IMAGE}},
        **documented(400, 403, 404, 406, 416, 429, 507),
    },
)
async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    video_id = request[VIDEO_ID]
    service = request.app[SERVICE]
    video = (await service.state(video_id)).video
    pictures = video.pictures
    default_s = (pictures.poster_time or 0.0) if pictures is not None else 0.0
    fmt = request.match_info["format"]
    try:
        ask = thumbnail_ask(
            fmt, request.query.get("time"), request.query.get("width"), video.duration_s, default_s
        )
    except BadThumbnail as e:
        raise InvalidRequest(str(e)) from None
    path = await request.app[THUMBNAILS].get(
        video_id, service.source_path(video_id), ask, video.duration_s or 0.0, client_of(request)
    )
    try:
        await service.state(video_id)
    except VideoNotFound:  # deleted while the thumbnail was made: what it wrote goes too
        await asyncio.to_thread(request.app[THUMBNAILS].discard, video_id)
        raise
    shown = Presentation(FORMATS[fmt][1], "max-age=31536000, immutable", public=True)
    return await send_file(request, path, shown, SIGNED_UNTIL in request, PictureNotReady())


#: One signature of the pictures family opens each of these routes.
for _handler in (get_poster, get_sprite, get_storyboard, get_thumbnail):
    _handler.signed_family = LinkFamily.PICTURES  # type: ignore[attr-defined]
