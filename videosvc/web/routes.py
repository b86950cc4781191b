"""The route table. Each route also answers without its trailing slash."""

from __future__ import annotations

from aiohttp import web

from . import views

ROUTES = [
    ("POST", "/file/", views.upload_file),
    ("GET", "/file/{id}/", views.get_file),
    ("PATCH", "/file/{id}/", views.resize_file),
    ("DELETE", "/file/{id}/", views.delete_file),
]
#: Not under /file, so API keys do not apply: container health checks need no secret.
HEALTH_PATH = "/health"


def add_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get(HEALTH_PATH, views.health, allow_head=False)


def add_slashless_aliases(app: web.Application) -> None:
    """`/file` as well as `/file/`, answered directly: a redirect would lose PATCH bodies in some clients.

    Added after the OpenAPI document is built, so each route is documented once.
    """
    for method, path, handler in ROUTES:
        app.router.add_route(method, path.rstrip("/"), handler)
