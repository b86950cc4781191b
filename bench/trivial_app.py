"""The yardsticks: aiohttp with handlers that do no work of their own.

Run as `python -m bench.trivial_app --port P [--files DIR]`. GET /file/{id}/
answers a JSON body shaped and sized like the service's, so only the service's
own work differs; /static/ serves DIR with aiohttp's own FileResponse
(sendfile), the yardstick for downloads.
"""

from __future__ import annotations

import argparse

from aiohttp import web

SAMPLE = {
    "filename": "clip.mp4",
    "processing": False,
    "processingSuccess": True,
    "processingError": None,
    "progress": None,
    "size": 3_000_000,
    "width": 1280,
    "height": 720,
    "duration": 10.0,
    "createdAt": "2024-01-01T00:00:00.000Z",
    "updatedAt": "2024-01-01T00:00:00.000Z",
    "originalWidth": 1920,
    "originalHeight": 1080,
    "originalSize": 9_000_000,
    "contentUrl": "/file/00000000-0000-4000-8000-000000000000/content",
    "job": {
        "state": "succeeded",
        "width": 1280,
        "height": 720,
        "progress": 100,
        "error": None,
        "queuedAt": "2024-01-01T00:00:00.000Z",
        "startedAt": "2024-01-01T00:00:00.000Z",
        "finishedAt": "2024-01-01T00:00:00.000Z",
    },
}


async def get_file(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["id"], **SAMPLE})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--files", help="a folder to serve under /static/")
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/file/{id}/", get_file)
    app.router.add_get("/health", health)
    if args.files:
        app.router.add_static("/static", args.files)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
