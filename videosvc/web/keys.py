"""Typed application keys: everything the app holds, declared in one place."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from ..jobs.runner import JobRunner
from ..media.probe import Toolchain
from ..resumable import ResumableUploads
from ..service import VideoService
from ..signing import Signer
from ..store.db import Database
from ..store.storage import Storage
from .inflight import InFlightRequests

SETTINGS = web.AppKey("settings", Settings)
TOOLCHAIN = web.AppKey("toolchain", Toolchain)
STORAGE = web.AppKey("storage", Storage)
DATABASE = web.AppKey("database", Database)
JOB_RUNNER = web.AppKey("job_runner", JobRunner)
SERVICE = web.AppKey("service", VideoService)
IN_FLIGHT = web.AppKey("in_flight", InFlightRequests)
SIGNER = web.AppKey("signer", Signer)
UPLOADS = web.AppKey("uploads", ResumableUploads)

#: The canonical (lowercase) id of the video a request names, set by `video_id_middleware`.
VIDEO_ID = web.RequestKey("video_id", str)
#: Which configured API key the request carried ("key-0", ...), set when keys are configured.
API_KEY = web.RequestKey("api_key", str)
