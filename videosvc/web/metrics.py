"""GET /metrics, and the middleware that times each request for it (the metrics are `events.metrics`)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST

from ..events.metrics import Metrics


def _route_template(request: web.Request) -> str:
    """/file/{id}/ for /file/0e8f...; one label however many ids there are."""
    resource = getattr(request.match_info.route, "resource", None)
    if resource is None:
        return "unmatched"  # 404 and 405: the raw path would be a label per scanner's guess
    template = resource.canonical
    return template.rstrip("/") or "/"


#: When the request's handling began (perf_counter), for the latency observed when it is answered.
STARTED = web.RequestKey("metrics_started", float)


def metrics_middleware(metrics: Metrics) -> Any:
    """Times each request from here to the moment its answer's head is sent (see `observe_prepared`).

    The status is read when the response is prepared, not when the handler returns: a file
    response only then finds out that it is a 404, a 304 or a 416.
    """

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = request[STARTED] = time.perf_counter()
        try:
            return await handler(request)
        except web.HTTPException as e:
            metrics.observe(_route_template(request), request.method, e.status, time.perf_counter() - started)
            raise
        except BaseException:
            metrics.observe(_route_template(request), request.method, 500, time.perf_counter() - started)
            raise

    return measure


def observe_prepared(metrics: Metrics) -> Any:
    """on_response_prepare: count the answer with its final status, once."""

    async def observe(request: web.Request, response: web.StreamResponse) -> None:
        started = request.get(STARTED)
        if started is not None:
            del request[STARTED]
            metrics.observe(
                _route_template(request), request.method, response.status, time.perf_counter() - started
            )

    return observe


async def serve_metrics(request: web.Request, metrics: Metrics) -> web.Response:
    response = web.Response(body=metrics.exposition())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response
