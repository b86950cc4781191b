"""Typed application keys: everything the app holds, declared in one place."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from ..events import EventBus, Outbox
from ..jobs.outcomes import JobOutcomes
from ..jobs.runner import JobRunner
from ..media.probe import Toolchain
from ..representation import GetBodies, Representation
from ..resumable import ResumableUploads
from ..service import VideoService
from ..signing import Signer
from ..store.db import Database
from ..store.storage import Storage
from ..webhooks import WebhookDispatcher
from .inflight import InFlightRequests
from .live import LiveStreams
from .metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
TOOLCHAIN = web.AppKey("toolchain", Toolchain)
STORAGE = web.AppKey("storage", Storage)
DATABASE = web.AppKey("database", Database)
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

#: The canonical (lowercase) id of the video a request names, set by `video_id_middleware`.
VIDEO_ID = web.RequestKey("video_id", str)
#: Which configured API key the request carried ("key-0", ...), set when keys are configured.
API_KEY = web.RequestKey("api_key", str)
