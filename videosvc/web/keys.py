"""Typed application and request keys: everything the app holds, declared in one place."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from ..events.bus import EventBus
from ..events.live import LiveStreams
from ..events.metrics import Metrics
from ..events.outbox import Outbox
from ..events.webhooks import WebhookDispatcher
from ..hooks import Hooks
from ..jobs.outcomes import JobOutcomes
from ..jobs.runner import JobRunner
from ..logs import API_KEY_NAME
from ..media.probe import Toolchain
from ..signing import Signer
from ..store.backup import Replicator
from ..store.disk import DiskBudget
from ..store.storage import Storage
from ..store.tables import Tables
from ..uploads.resumable import ResumableUploads
from ..videos.service import VideoService
from ..videos.streaming import Streaming
from ..videos.thumbnails import Thumbnails
from .inflight import InFlightRequests
from .origins import HostPolicy
from .representation import GetBodies, Representation

SETTINGS = web.AppKey("settings", Settings)
HOOKS = web.AppKey("hooks", Hooks)
TOOLCHAIN = web.AppKey("toolchain", Toolchain)
STORAGE = web.AppKey("storage", Storage)
DISK = web.AppKey("disk", DiskBudget)
HOSTS = web.AppKey("hosts", HostPolicy)
TABLES = web.AppKey("tables", Tables)
JOB_RUNNER = web.AppKey("job_runner", JobRunner)
SERVICE = web.AppKey("service", VideoService)
IN_FLIGHT = web.AppKey("in_flight", InFlightRequests)
SIGNER = web.AppKey("signer", Signer)
REPRESENTATION = web.AppKey("representation", Representation)
GET_BODIES = web.AppKey("get_bodies", GetBodies)
BUS = web.AppKey("bus", EventBus)
OUTBOX = web.AppKey("outbox", Outbox)
OUTCOMES = web.AppKey("outcomes", JobOutcomes)
LIVE = web.AppKey("live_streams", LiveStreams)
METRICS = web.AppKey("metrics", Metrics)
WEBHOOKS = web.AppKey("webhooks", WebhookDispatcher)
UPLOADS = web.AppKey("uploads", ResumableUploads)
STREAMING = web.AppKey("streaming", Streaming)
#: Litestream, supervised (only when backup_url is set).
REPLICATOR = web.AppKey("replicator", Replicator)
THUMBNAILS = web.AppKey("thumbnails", Thumbnails)
#: Whether the ffmpeg in use can write WebP (libwebp).

#: The canonical (lowercase) id of the video a /file/{id} request names, set by `resource_id_middleware`.
VIDEO_ID = web.RequestKey("video_id", str)
#: The canonical id of the upload an /uploads/{id} request names (the video's, once it is stored).
UPLOAD_ID = web.RequestKey("upload_id", str)
#: Which configured API key the request carried (a short fingerprint), set when keys are configured
#: (the access log's own key: one object, so the log shows it).
API_KEY = API_KEY_NAME
#: Until when the signed link the request came by is valid (Unix seconds), when it came by one.
SIGNED_UNTIL = web.RequestKey("signed_until", int)
