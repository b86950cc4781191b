"""Serving a video's HLS package: its playlists, init segments and segments (SPEC §13).

Two routes to the same files: `/file/{id}/hls/{path}` (with the bearer key when
keys are set) and `/file/{id}/hls/s/{expires}.{signature}/{path}`, the signed
form GET hands out as `playbackUrl`: the signature sits in the path, so every
URI a playlist names, relative to it, carries it too, and hls.js plays with no
header. Only the files a package is made of are served (a strict pattern: no
other path under the package, no `..`), each from disk with Range and a strong
ETag; segments never change (immutable for a year), playlists may (a rendition
added to the master playlist): caches ask again after a few seconds.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp_apigami import docs

from ..errors import RenditionNotReady
from ..media.hls import MASTER
from ..signing import LinkFamily
from .content import Presentation, send_file
from .errortable import documented
from .keys import SERVICE, SIGNED_UNTIL, STORAGE, VIDEO_ID

#: The files of a package: the master playlist, and each rendition's playlist, init and segments.
PACKAGE_FILE = re.compile(
    r"master\.m3u8|(?:v[0-9]{1,2}|a)/(?:index\.m3u8|init(?:_[0-9]{1,2})?\.mp4|seg[0-9]{5,6}\.m4s)"
)
PLAYLIST = Presentation("application/vnd.apple.mpegurl", "max-age=2", public=True)
SEGMENT = Presentation("video/mp4", "max-age=31536000, immutable", public=True)

PATH_PARAMETERS = [
    {"in": "path", "name": "id", "required": True, "schema": {"type": "string", "format": "uuid"}},
    {
        "in": "path",
        "name": "path",
        "required": True,
        "schema": {"type": "string", "example": MASTER},
        "description": "master.m3u8, or a rendition's file: v0/index.m3u8, v0/init.mp4, v0/seg00000.m4s",
    },
]


@docs(
    tags=["files"],
    summary="Play the video with adaptive streaming (HLS)",
    description=(
        "The video's HLS package: `master.m3u8` lists each ready rendition (measured BANDWIDTH and"
        " AVERAGE-BANDWIDTH, exact CODECS, RESOLUTION) and the audio; each rendition has its media"
        " playlist, init segment and CMAF segments. Playlists are `application/vnd.apple.mpegurl`"
        " (cached 2 s); segments `video/mp4`, immutable. Range and ETag as for the content. A file not"
        " ready yet is a 404. When API keys are set, use GET's `playbackUrl`: the same files under"
        " `/file/{id}/hls/s/{expires}.{signature}/`, valid without the key until it expires."
    ),
    operation_id="getPlayback",
    parameters=PATH_PARAMETERS,
    responses={
        200: {
            "description": "The file",
            "content": {
                "application/vnd.apple.mpegurl": {"schema": {"type": "string"}},
                "video/mp4": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        206: {"description": "One byte range of it"},
        304: {"description": "Not modified (If-None-Match, If-Modified-Since)"},
        **documented(403, 404, 416),
    },
)
async def get_playback(request: web.Request) -> web.StreamResponse:
    path = request.match_info["path"]
    if not PACKAGE_FILE.fullmatch(path):
        raise RenditionNotReady(path)
    video_id = request[VIDEO_ID]
    await request.app[SERVICE].state(video_id)  # 404 for a video that is not (or no longer) there
    file = request.app[STORAGE].package_file(video_id, path)
    shown = PLAYLIST if path.endswith(".m3u8") else SEGMENT
    return await send_file(request, file, shown, SIGNED_UNTIL in request, RenditionNotReady(path))


@docs(
    tags=["files"],
    summary="Play the video with adaptive streaming (HLS), by its signed playbackUrl",
    description=(
        "The same files as `/file/{id}/hls/{path}`, with no key: the signature of GET's `playbackUrl`"
        " (when API keys are set) in the path. 403 once it expired or if it was altered."
    ),
    operation_id="getSignedPlayback",
    parameters=[
        *PATH_PARAMETERS,
        {"in": "path", "name": "expires", "required": True, "schema": {"type": "string"}},
        {"in": "path", "name": "signature", "required": True, "schema": {"type": "string"}},
    ],
    responses={200: {"description": "The file"}, **documented(403, 404, 416)},
)
async def get_signed_playback(request: web.Request) -> web.StreamResponse:
    return await get_playback(request)


#: The signature is in the path (`expires`, `signature`), checked by the guard before this runs.
get_signed_playback.signed_family = LinkFamily.PLAYBACK  # type: ignore[attr-defined]
