"""The Dask backend: jobs run on the workers of a Dask cluster (`distributed`).

The job function and its data are the local pool's; what a cluster adds:

- *Stopping.* A DELETE sets a Dask `Event` named after the job, which the job
  polls twice a second (a cancel file on shared storage may be seen late).
- *A lease.* The service bumps a Dask `Variable` every second; a job whose lease
  stood still for `lease_ttl_s` stops its ffmpeg: a dead service leaves no
  encode running for nobody (the pid watch of the local pool cannot cross
  machines). The job resumes when the service starts again.
- *Dead workers.* Dask reruns the task of a worker that died on another one;
  the job counts its own executions in its folder and gives up after
  `job_max_attempts`. Each execution writes its own output file.
- *A lost scheduler.* The client reconnects on its own for `dask_connect_timeout_s`,
  then gives up and closes; the lease keeper then makes a new client, for as long
  as it takes. Meanwhile jobs are handed to the cluster again (not counted as
  attempts) once it is back, and the log says when it went and came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from ...config import Settings
from ...media.probe import Toolchain
from ...store.records import JobState
from ..contract import Job, JobFiles, LadderJob, PicturesJob, ResizeResult
from ..worker import run_job
from . import BackendClosed, WorkerLost

log = logging.getLogger(__name__)

#: How often the service renews its lease.
LEASE_RENEW_S = 1.0
#: How often a job asks the scheduler whether to stop (its cancel event, the lease).
REMOTE_CHECK_S = 0.5


class DaskBackend:
    name = "dask"
    #: The cluster queues and schedules the jobs: every accepted job is handed to it.
    slots: int | None = None

    def __init__(self, settings: Settings, server_id: str) -> None:
        self._address = settings.jobs.dask_scheduler
        self._connect_timeout_s = settings.jobs.dask_connect_timeout_s
        self._lease_ttl_s = settings.jobs.lease_ttl_s
        self._lease_name = f"videosvc-lease-{server_id}"
        self._client: Any = None
        self._lease_task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        try:
            self._client = await self._connect()
        except (OSError, TimeoutError) as e:
            raise BackendUnreachable(f"cannot reach the Dask scheduler at {self._address}: {e}") from None
        await self._renew(1)
        self._lease_task = asyncio.create_task(self._keep_lease(), name="dask-lease")
        # Import the job's modules on every worker now, so the first PATCH does not pay for it.
        with contextlib.suppress(Exception):
            await self._client.run(warm_up)
        workers = len(await self._client.nthreads())
        log.info("connected to the Dask scheduler at %s (%d worker(s))", self._address, workers)

    async def _connect(self) -> Any:
        from distributed import Client

        return await Client(
            self._address, asynchronous=True, timeout=self._connect_timeout_s, name="videosvc"
        )

    async def run(self, job: Job) -> ResizeResult:
        from distributed import Event
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        if self._closing or self._client is None:
            raise BackendClosed
        client = self._client
        if client.status != "running":  # reconnecting, or gave up: the lease keeper makes a new one
            raise WorkerLost("the Dask scheduler is away", blamed=False)
        stop_name = _stop_event_name(job)
        kind = _kind(job)
        future = None
        try:
            # Inside the try: while the scheduler is away (a restart), these fail like the job's
            # future does, and the job is handed out again once the client has reconnected.
            await Event(stop_name, client=client).clear()
            future = client.submit(
                run_on_dask,
                job,
                stop_name,
                self._lease_name,
                self._lease_ttl_s,
                key=f"videosvc-{kind}-{Path(job.directory).name}-{uuid.uuid4().hex[:8]}",
                pure=False,
                # Derived jobs give way to resizes waiting on the same workers.
                priority=0 if kind == "resize" else -1,
            )
            result: ResizeResult = await future
            return result
        except KilledWorker as e:
            # Dask gave up on its own count of dead workers (allowed-failures) before ours.
            return ResizeResult(JobState.FAILED, error=f"the workers running this job kept dying ({e})")
        except (FutureCancelledError, asyncio.CancelledError) as e:
            if isinstance(e, asyncio.CancelledError) and _cancelling():
                if future is not None:
                    with contextlib.suppress(Exception):
                        await future.cancel()
                raise
            if self._closing:
                raise BackendClosed from None
            raise WorkerLost("the Dask cluster lost the job (scheduler restart?)", blamed=False) from None
        except (OSError, TimeoutError) as e:
            if self._closing:
                raise BackendClosed from None
            raise WorkerLost(f"lost the Dask scheduler ({type(e).__name__})", blamed=False) from None
        finally:
            if future is not None:
                with contextlib.suppress(Exception):
                    await future.release()

    async def request_stop(self, job: Job) -> None:
        from distributed import Event

        if self._client is not None:
            await Event(_stop_event_name(job), client=self._client).set()

    async def close(self) -> None:
        self._closing = True
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    async def _renew(self, counter: int) -> None:
        from distributed import Variable

        await Variable(self._lease_name, client=self._client).set(counter)

    async def _keep_lease(self) -> None:
        """Bump the lease every second; say so in the log when the scheduler goes and comes back.

        A client that gave up reconnecting (the scheduler was away longer than its timeout) has
        closed itself for good: a new one is made, tick after tick, until the scheduler answers.
        """
        counter, reachable = 1, True
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            counter += 1
            try:
                if self._client.status in ("closing", "closed"):
                    self._client = await self._connect()
                async with asyncio.timeout(LEASE_RENEW_S * 2):
                    await self._renew(counter)
            except Exception as e:
                if reachable:
                    log.warning("lost the Dask scheduler (%s); reconnecting", type(e).__name__)
                reachable = False
                continue
            if not reachable:
                log.info("reconnected to the Dask scheduler at %s", self._address)
            reachable = True


class BackendUnreachable(Exception):
    """The cluster cannot be reached at start-up."""


def _kind(job: Job) -> str:
    """What a job is, in its task's key (and its priority: only resizes go first)."""
    if isinstance(job, LadderJob):
        return "ladder"
    return "pictures" if isinstance(job, PicturesJob) else "resize"


def _stop_event_name(job: Job) -> str:
    """Named after the job's folder (unique across the services sharing a cluster)."""
    return f"videosvc-stop-{hashlib.sha256(job.directory.encode()).hexdigest()[:24]}"


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


# -- on the Dask workers -------------------------------------------------------------


def run_on_dask(job: Job, stop_event: str, lease: str, lease_ttl_s: float) -> ResizeResult:
    """The task a Dask worker runs: the job, with the cluster's stop signals added to its own."""
    from distributed import Event, Variable, get_client, get_worker

    client = get_client()
    event = Event(stop_event, client=client)
    variable = Variable(lease, client=client)
    seen: dict[str, Any] = {"value": None, "changed": time.monotonic(), "checked": 0.0}

    def should_stop() -> str | None:
        now = time.monotonic()
        if now - seen["checked"] < REMOTE_CHECK_S:
            return None
        seen["checked"] = now
        try:
            if event.is_set():
                return "the job was cancelled"
            value = variable.get(timeout=REMOTE_CHECK_S * 2)
        except Exception:
            value = seen["value"]  # the scheduler did not answer: the lease did not move either
        if value != seen["value"]:
            seen["value"], seen["changed"] = value, now
        elif now - seen["changed"] > lease_ttl_s:
            return f"the service stopped renewing its lease for {lease_ttl_s:g} s (lease_ttl_s); stopped"
        return None

    job = _with_local_tools(job)
    return run_job(job, should_stop=should_stop, worker=f"dask {get_worker().address}")


def warm_up() -> int:
    """Run on each worker at start: the job's imports (ffmpeg-python, the media code) are paid now."""
    from distributed import get_client

    from .. import worker  # noqa: F401

    get_client()  # a task's first call opens the worker's own client to the scheduler
    return os.getpid()


def _with_local_tools(job: Job) -> Job:
    """The service's ffmpeg path may not exist on this worker: then the worker's own, on PATH."""
    import dataclasses

    tools = job.tools
    if os.access(tools.ffmpeg, os.X_OK) and (tools.ffprobe is None or os.access(tools.ffprobe, os.X_OK)):
        return job
    ffmpeg = shutil.which("ffmpeg") or tools.ffmpeg
    ffprobe = shutil.which("ffprobe")
    return dataclasses.replace(job, tools=Toolchain(ffmpeg, ffprobe, tools.probe_ceiling))


def worker_report(data_dir: str) -> dict[str, Any]:
    """What `python -m videosvc check` asks each worker: its ffmpeg, libx264, and data_dir."""
    from ...config import FfmpegSettings
    from ...media.toolchain import ToolchainError, inspect_toolchain

    report: dict[str, Any] = {"host": socket.gethostname()}
    try:
        found = inspect_toolchain(FfmpegSettings())
        report.update(ffmpeg=found.tools.ffmpeg, version=found.ffmpeg_version, libx264=found.has_libx264)
    except ToolchainError as e:
        report.update(ffmpeg=None, version=str(e), libx264=False)
    probe_file = Path(data_dir) / "tmp" / f".check-{socket.gethostname()}-{os.getpid()}"
    try:
        probe_file.write_text("videosvc")
        report["data_dir"] = probe_file.read_text() == "videosvc"
    except OSError as e:
        report["data_dir"] = False
        report["data_dir_error"] = e.strerror
    finally:
        with contextlib.suppress(OSError):
            probe_file.unlink()
    return report


# The job's files are the local pool's: re-exported for the check and the tests.
__all__ = ["DaskBackend", "JobFiles", "run_on_dask", "worker_report"]
