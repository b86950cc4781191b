"""Typed application keys: everything the app holds, declared in one place."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from ..events import EventBus, Outbox
from ..jobs.outcomes import JobOutcomes
from ..jobs.runner import JobRunner
from ..logs import API_KEY_NAME
from ..media.probe import Toolchain
from ..representation import GetBodies, Representation
from ..service import VideoService
from ..signing import Signer
from ..store.db import Database
from ..store.disk import DiskBudget
from ..store.storage import Storage
from ..uploads.resumable import ResumableUploads
from ..webhooks import WebhookDispatcher
from .inflight import InFlightRequests
from .live import LiveStreams
from .metrics import Metrics
from .origins import HostPolicy

SETTINGS = web.AppKey("settings", Settings)
TOOLCHAIN = web.AppKey("toolchain", Toolchain)
STORAGE = web.AppKey("storage", Storage)
DISK = web.AppKey("disk", DiskBudget)
HOSTS = web.AppKey("hosts", HostPolicy)
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
#: Which configured API key the request carried (a short fingerprint), set when keys are configured
#: (the access log's own key: one object, so the log shows it).
API_KEY = API_KEY_NAME
#: Until when the signed link the request came by is valid (Unix seconds), when it came by one.
SIGNED_UNTIL = web.RequestKey("signed_until", int)
