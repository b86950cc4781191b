"""The route table. Each route also answers without its trailing slash, and each GET answers HEAD."""

from __future__ import annotations

from aiohttp import web

from . import pictures, playback, views
from .keys import METRICS
from .middlewares import expect_continue
from .page import add_page
from .tus import UploadsView, UploadView

ROUTES = [
    ("GET", "/file/", views.list_files),
    ("POST", "/file/", views.upload_file),
    ("GET", "/file/{id}/", views.get_file),
    ("PATCH", "/file/{id}/", views.resize_file),
    ("DELETE", "/file/{id}/", views.delete_file),
    ("GET", "/file/{id}/content", views.get_content),
    ("GET", "/file/{id}/events", views.get_events),
    ("GET", "/file/{id}/poster.jpg", pictures.get_poster),
    ("GET", "/file/{id}/storyboard.vtt", pictures.get_storyboard),
    ("GET", "/file/{id}/storyboard.jpg", pictures.get_sprite),
    ("GET", "/file/{id}/thumbnail.{format:[a-z0-9]{1,10}}", pictures.get_thumbnail),
    #: Not under /file, so API keys do not apply: container health checks need no secret.
    ("GET", "/health", views.health),
]


#: The HLS package: the signed form first (its path would match the other's too).
PLAYBACK_ROUTES = [
    (
        r"/file/{id}/hls/s/{expires:[0-9]{1,12}}.{signature:[A-Za-z0-9_-]{1,64}}/{path:.+}",
        playback.get_signed_playback,
    ),
    ("/file/{id}/hls/{path:.+}", playback.get_playback),
]

#: tus: class-based views, so that aiohttp-cors can tell tus's OPTIONS from a CORS preflight.
TUS_ROUTES = [("/uploads/", UploadsView), ("/uploads/{id}", UploadView)]


def add_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler, expect_handler=expect_continue)
    for path, view in TUS_ROUTES:
        app.router.add_route("*", path, view, expect_handler=expect_continue)
    for path, handler in PLAYBACK_ROUTES:
        app.router.add_get(path, handler, allow_head=False)  # HEAD: in add_aliases, undocumented
    if METRICS in app:  # metrics_enabled
        app.router.add_get("/metrics", views.metrics, allow_head=False)
    add_page(app)  # the page at /, for people
    app.router.add_get("/swagger/", _to_docs)


async def _to_docs(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/swagger")


def add_aliases(app: web.Application) -> None:
    """Each path with and without its trailing slash (answered directly: a redirect would lose
    PATCH bodies in some clients), and HEAD for every GET (aiohttp drops the body).

    Added after the OpenAPI document is built, so each operation is documented once.
    """
    for path, view in TUS_ROUTES:
        other = path.rstrip("/") if path.endswith("/") else path + "/"
        app.router.add_route("*", other, view, expect_handler=expect_continue)
    for path, handler in PLAYBACK_ROUTES:
        app.router.add_route("HEAD", path, handler)
    for method, path, handler in ROUTES:
        other = path.rstrip("/") if path.endswith("/") else path + "/"
        app.router.add_route(method, other, handler, expect_handler=expect_continue)
        if method == "GET":
            for alias in (path, other):
                app.router.add_route("HEAD", alias, handler, expect_handler=expect_continue)
