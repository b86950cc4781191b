"""The application factory: the one place where everything is wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp_cors
from aiohttp import web
from aiohttp_apigami import AiohttpApiSpec, validation_middleware
from aiohttp_apigami.constants import APISPEC_PARSER, SWAGGER_DICT

from . import __version__
from .config import Settings
from .events.bus import EventBus, OutboxDropped, OutboxQueued, VideosChanged
from .events.live import LiveStreams
from .events.metrics import Metrics
from .events.outbox import Outbox
from .events.webhooks import WebhookDispatcher
from .hooks import Hooks
from .jobs.backends import make_backend
from .jobs.grab import encoders_available
from .jobs.lane import DerivedLane
from .jobs.outcomes import JobOutcomes
from .jobs.recovery import Recovery
from .jobs.runner import JobRunner
from .jobs.specs import SpecBuilder
from .media.toolchain import inspect_toolchain
from .signing import Signer
from .store.backup import BackupSettings as BackupTarget
from .store.backup import Replicator
from .store.disk import BALLAST_BYTES, DiskBudget
from .store.records import Commit, VideoStatus
from .store.storage import Storage
from .store.tables import Tables
from .uploads.resumable import ResumableUploads
from .videos.service import VideoService
from .videos.streaming import Streaming
from .videos.thumbnails import Thumbnails
from .videos.view import view_of
from .web.inflight import InFlightRequests
from .web.keys import (
    BUS,
    DISK,
    GET_BODIES,
    HOOKS,
    HOSTS,
    IN_FLIGHT,
    JOB_RUNNER,
    LIVE,
    METRICS,
    OUTBOX,
    OUTCOMES,
    REPLICATOR,
    REPRESENTATION,
    SERVICE,
    SETTINGS,
    SIGNER,
    STORAGE,
    STREAMING,
    TABLES,
    THUMBNAILS,
    TOOLCHAIN,
    UPLOADS,
    WEBHOOKS,
)
from .web.metrics import metrics_middleware, observe_prepared
from .web.middlewares import (
    error_middleware,
    guard_middleware,
    in_flight_middleware,
    resource_id_middleware,
    set_server_header,
)
from .web.openapi import finish_document
from .web.origins import HostPolicy
from .web.representation import GetBodies, Representation
from .web.routes import add_aliases, add_routes
from .web.tus import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, tus_headers
from .web.validation import JsonBodyParser

log = logging.getLogger(__name__)


def create_app(settings: Settings, hooks: Hooks | None = None) -> web.Application:
    bus = EventBus()
    app = web.Application(
        # Caps JSON bodies only: uploads are streamed from request.content, not read whole.
        client_max_size=settings.http.max_json_bytes,
        middlewares=[
            in_flight_middleware,
            error_middleware,
            guard_middleware,
            resource_id_middleware,
            validation_middleware,
        ],
    )
    app[SETTINGS] = settings
    app[HOOKS] = hooks or Hooks()
    app[BUS] = bus
    app[HOSTS] = HostPolicy.of(settings.http)
    app[IN_FLIGHT] = InFlightRequests()
    app[SIGNER] = Signer(settings.links.url_signing_key)
    app[REPRESENTATION] = Representation(settings, app[SIGNER])
    if settings.events.metrics_enabled:
        app[METRICS] = metrics = make_metrics(app)
        app.middlewares.insert(0, metrics_middleware(metrics))
        app.on_response_prepare.append(observe_prepared(metrics))
    app.on_shutdown.append(end_live_streams)
    app.on_response_prepare.append(set_server_header)
    app.on_response_prepare.append(tus_headers)
    # Resources, in dependency order; torn down in reverse.
    app.cleanup_ctx.extend(
        [
            toolchain_ctx,
            storage_ctx,
            backup_ctx,
            database_ctx,
            job_runner_ctx,
            streaming_ctx,
            service_ctx,
            thumbnails_ctx,
            resumable_uploads_ctx,
            events_ctx,
        ]
    )
    add_routes(app)
    setup_docs(app, settings)
    add_aliases(app)
    setup_cors(app, settings)
    return app


def setup_cors(app: web.Application, settings: Settings) -> None:
    """Pages in the configured origins may call every route (tus-js-client and Uppy included)."""
    if not settings.http.cors_origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,  # keys travel in Authorization, never in cookies
        expose_headers=CORS_EXPOSE_HEADERS,
        allow_headers=CORS_ALLOW_HEADERS,
        allow_methods="*",
        max_age=3600,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in settings.http.cors_origins})
    for route in list(app.router.routes()):
        if route.method != "OPTIONS":
            cors.add(route)


def setup_docs(app: web.Application, settings: Settings) -> None:
    """OpenAPI 3 at /swagger.json and Swagger UI at /swagger, from the handlers' schemas."""
    options: dict[str, Any] = {"security": [{"bearerAuth": []}]} if settings.http.api_keys else {}
    docs = AiohttpApiSpec(
        url="/swagger.json",
        swagger_path="/swagger",
        static_path="/swagger/static",
        openapi_version="3.0.3",
        title="videosvc",
        version=__version__,
        info={"description": "Store MP4 videos and resize them with ffmpeg, in the background."},
        **options,
    )
    if settings.http.api_keys:
        docs.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    docs.register(app, in_place=True)
    finish_document(app[SWAGGER_DICT], settings)
    # Our parser reads any body as JSON and raises errors in the service's one shape.
    app[APISPEC_PARSER] = JsonBodyParser()


def make_metrics(app: web.Application) -> Metrics:
    """Its gauges read the runner, the webhooks and the live streams when scraped (once they exist)."""

    def read(key: web.AppKey[Any], attribute: str, default: Any) -> Callable[[], Any]:
        return lambda: getattr(app[key], attribute)() if key in app else default

    return Metrics(
        app[BUS],
        queued=read(JOB_RUNNER, "queued_count", 0),
        running=read(JOB_RUNNER, "running_count", 0),
        webhooks=lambda: app[WEBHOOKS].counts if WEBHOOKS in app else {},
        outbox=lambda: app[WEBHOOKS].backlog if WEBHOOKS in app else 0,
        streams=lambda: app[LIVE].open_streams if LIVE in app else 0,
    )


async def toolchain_ctx(app: web.Application) -> AsyncIterator[None]:
    report = await asyncio.to_thread(inspect_toolchain, app[SETTINGS].ffmpeg)
    log.info(
        "using %s (%s), ffprobe: %s",
        report.tools.ffmpeg,
        report.ffmpeg_version,
        report.tools.ffprobe or "none",
    )
    app[TOOLCHAIN] = report.tools
    yield


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].storage
    storage = Storage(settings.data_dir.resolve())
    await asyncio.to_thread(storage.prepare)
    disk = DiskBudget(storage.root, settings.min_free_bytes)
    if await asyncio.to_thread(disk.free_bytes) < BALLAST_BYTES:
        disk.give_up_ballast()  # full at start: the database needs a little room to open
    await asyncio.to_thread(disk.keep_ballast)
    app[STORAGE] = storage
    app[DISK] = disk
    yield


async def backup_ctx(app: web.Application) -> AsyncIterator[None]:
    """Litestream, when backup_url is set: before the database opens (it waits for it), and stopped
    after it closed, so that its last sync holds every write."""
    settings = app[SETTINGS].backup
    if not settings.backup_url:
        yield
        return
    replicator = Replicator(
        BackupTarget(settings.backup_url, settings.backup_sync_interval_s, settings.litestream_path),
        app[STORAGE].database_path,
    )
    await replicator.start()
    app[REPLICATOR] = replicator
    yield
    await replicator.stop()


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The tables, and the outbox messages and job endings that write to them."""
    settings, disk, bus = app[SETTINGS], app[DISK], app[BUS]
    tables = await Tables.open(
        app[STORAGE].database_path,
        on_full=disk.give_up_ballast,
        outbox_cap=settings.events.webhook_max_backlog,
    )
    tables.db.listen(lambda commit: announce(bus, commit))
    app[TABLES] = tables
    app[OUTBOX] = Outbox(settings.events.webhook_urls, lambda: disk.room() > 0, bus)
    app[OUTCOMES] = JobOutcomes(tables.jobs, app[STORAGE], app[OUTBOX], bus, app[HOOKS].before_record)
    yield
    await tables.close()


def announce(bus: EventBus, commit: Commit) -> None:
    """What a commit did, told on the bus: videos changed (live streams), the outbox grew or shrank."""
    if commit.video_ids:
        bus.emit(VideosChanged(commit.video_ids))
    if commit.queued:
        bus.emit(OutboxQueued(commit.queued))
    if commit.trimmed:
        reason = "the outbox is full (webhook_max_backlog): the oldest undelivered went"
        bus.emit(OutboxDropped(commit.trimmed, commit.trimmed, reason))


async def job_runner_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, tables = app[SETTINGS], app[TABLES]
    backend = make_backend(settings, server_id=uuid.uuid4().hex)
    specs = SpecBuilder(settings, app[STORAGE], app[TOOLCHAIN], cluster=backend.slots is None)
    runner = JobRunner(
        settings, tables.jobs, tables.videos, app[STORAGE], app[DISK], specs, backend, app[OUTCOMES]
    )
    app[JOB_RUNNER] = runner
    await runner.start()
    yield
    await runner.close()


async def streaming_ctx(app: web.Application) -> AsyncIterator[None]:
    """HLS packages and pictures, built in the derived lane: workers of their own, below the resizes'
    priority."""
    settings = app[SETTINGS]
    lane = DerivedLane(settings, make_backend(settings, server_id=uuid.uuid4().hex, derived=True))
    if settings.hls.hls_enabled or settings.pictures.pictures_enabled:
        await lane.start()
    streaming = Streaming(
        settings, app[TABLES].videos, app[STORAGE], app[TOOLCHAIN], lane, app[OUTBOX], app[BUS], app[HOOKS]
    )
    app[STREAMING] = streaming
    yield
    await streaming.close()
    await lane.close()


async def thumbnails_ctx(app: web.Application) -> AsyncIterator[None]:
    """Thumbnails on request: a lane of their own, and their cache on disk."""
    webp = "webp" in encoders_available()
    if not webp:
        log.warning("PyAV's FFmpeg has no libwebp encoder: thumbnail.webp answers 406 (thumbnail.jpg works)")
    thumbnails = Thumbnails(app[SETTINGS], app[STORAGE], app[DISK], webp)
    await asyncio.to_thread(thumbnails.cache.load)
    app[THUMBNAILS] = thumbnails
    app[SERVICE].on_delete(thumbnails.forget)
    yield
    await thumbnails.close()


async def service_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, tables = app[SETTINGS], app[TABLES]
    service = VideoService(
        settings, tables, app[STORAGE], app[DISK], app[JOB_RUNNER], app[TOOLCHAIN], app[SIGNER],
        app[OUTCOMES], app[OUTBOX], app[BUS], app[STREAMING],
    )  # fmt: skip
    # Rows and files must agree before interrupted jobs are run again.
    await service.reconciliation.run()
    recovery = Recovery(
        settings.jobs, tables.jobs, tables.videos, app[STORAGE], app[TOOLCHAIN], app[OUTCOMES]
    )
    await recovery.resume(app[JOB_RUNNER].submit)
    await app[STREAMING].resume()
    app[SERVICE] = service
    app[GET_BODIES] = GetBodies(service, app[REPRESENTATION])
    yield
    await service.close()


async def resumable_uploads_ctx(app: web.Application) -> AsyncIterator[None]:
    uploads = ResumableUploads(
        app[SETTINGS], app[TABLES].uploads, app[STORAGE], app[DISK], app[SERVICE].publish
    )
    # Partial uploads survive restarts; only the expired and the orphaned are dropped.
    await uploads.sweeper.reconcile()
    app[UPLOADS] = uploads
    sweeper = asyncio.create_task(uploads.sweeper.run(), name="sweep-uploads")
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper


async def end_live_streams(app: web.Application) -> None:
    """Open streams never end by themselves: a shutdown ends them (clients reconnect)."""
    if LIVE in app:
        app[LIVE].close()


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """Live streams and webhook deliveries: each a task of its own, off every request's path."""
    settings, bus, service, representation = app[SETTINGS], app[BUS], app[SERVICE], app[REPRESENTATION]
    keep_original = settings.storage.keep_original

    async def snapshot(video_id: str) -> dict[str, Any]:
        return representation.video(await service.get(video_id))

    def render(status: VideoStatus) -> dict[str, Any]:
        return representation.video(view_of(status, keep_original))

    live = app[LIVE] = LiveStreams(snapshot, bus, settings.events)
    webhooks = app[WEBHOOKS] = WebhookDispatcher(
        settings.events, app[TABLES].outbox, bus, app[OUTBOX], render
    )
    await webhooks.start()
    tasks = [
        asyncio.create_task(live.run(), name="live-streams"),
        asyncio.create_task(webhooks.run(), name="webhooks"),
    ]
    yield
    live.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
