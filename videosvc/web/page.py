"""The page at / and its static files: a person's way to use the API (no build step, no CDN)."""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path

from aiohttp import web

from .. import __version__
from ..config import Settings
from .keys import SETTINGS

PAGE_DIR = Path(__file__).resolve().parent / "page"

#: The page loads only its own files and talks only to its own server.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        # hls.js plays through Media Source Extensions: the <video> plays a blob: URL of it.
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@cache
def _template() -> str:
    return (PAGE_DIR / "index.html").read_text(encoding="utf-8")


def render_page(settings: Settings) -> str:
    """index.html with what the page must know before its first call: whether a key is needed, the limits."""
    config = {
        "apiKeys": bool(settings.http.api_keys),
        "maxDimension": settings.jobs.max_dimension,
        "maxOutputPixels": settings.jobs.max_output_pixels,
        "maxUploadBytes": settings.uploads.max_upload_bytes,
    }
    # Inside <script type="application/json">: only "</" could end it early.
    data = json.dumps(config).replace("</", "<\\/")
    return _template().replace("{{CONFIG}}", data).replace("{{VERSION}}", html.escape(__version__))


async def index(request: web.Request) -> web.Response:
    response = web.Response(text=render_page(request.app[SETTINGS]), content_type="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


async def static_file(request: web.Request) -> web.FileResponse:
    """One of the page's own files; a JSON 404 for anything else (no listing, no way out of the folder)."""
    path = (PAGE_DIR / request.match_info["name"]).resolve()
    if not path.is_relative_to(PAGE_DIR) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path)


def add_page(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/static/{name:.+}", static_file)
