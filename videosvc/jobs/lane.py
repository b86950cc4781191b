"""The derived lane: ladder and pictures jobs on a backend of their own, so a resize never waits for one.

A lane has its own workers (`derived_workers`, at a lower CPU priority than the
resize pool) behind the same backend seam (a process pool here, or the Dask
cluster), its own queue, and the same rules for a worker lost under a job: not
its fault, tried again free; its fault, an attempt counted, up to
`job_max_attempts`. A job is stopped through its cancel file, as a resize is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..config import Settings
from ..store.records import JobState
from .backends import Backend, BackendClosed, WorkerLost
from .contract import JobFiles, LadderJob, PicturesJob, ResizeResult

#: What the derived lane runs.
DerivedJob = LadderJob | PicturesJob

log = logging.getLogger(__name__)

#: The longest wait before handing a job again after a loss that was not its fault.
MAX_RETRY_DELAY_S = 10.0


class DerivedLane:
    def __init__(self, settings: Settings, backend: Backend) -> None:
        self._backend = backend
        self._max_attempts = settings.jobs.job_max_attempts
        self._max_queued = settings.jobs.max_queued_jobs
        self._slots = asyncio.Semaphore(backend.slots) if backend.slots else None
        self._queued = 0
        self._closing = False
        #: The folders of the jobs a worker holds (past them, only the cancel file stops a job).
        self._handed: set[str] = set()

    @property
    def cluster(self) -> bool:
        return self._backend.slots is None

    def has_room(self) -> bool:
        """Whether one more job may wait (`max_queued_jobs`, counted in this lane alone)."""
        return self._queued < self._max_queued

    def refusal_for_queue(self) -> str | None:
        """Why one more job may not wait, or None."""
        if self.has_room():
            return None
        return f"too many derived jobs are queued (max_queued_jobs={self._max_queued}); try again later"

    async def stop_or_cancel(self, job: DerivedJob | None, task: asyncio.Task[None]) -> None:
        """Stop a job: through its cancel file once a worker holds it; before, its build task
        (`task`) is cancelled where it waits for one. None: there is nothing to stop."""
        if job is not None and self.handed(job):
            await self.stop(job)
        elif job is not None:
            task.cancel()

    def is_closing(self) -> bool:
        return self._closing

    async def start(self) -> None:
        await self._backend.start()

    async def close(self) -> None:
        self._closing = True
        await self._backend.close()

    def handed(self, job: DerivedJob) -> bool:
        """Whether a worker holds the job: then `stop` it; before that, cancelling its task drops it."""
        return job.directory in self._handed

    async def run(self, job: DerivedJob, on_start: Callable[[], Awaitable[None]]) -> ResizeResult:
        """Wait for a worker of the lane, tell `on_start`, then run the job to its end."""
        self._queued += 1
        try:
            if self._slots is None:
                return await self._handed_over(job, on_start)
            async with self._slots:
                return await self._handed_over(job, on_start)
        finally:
            self._queued -= 1

    async def _handed_over(self, job: DerivedJob, on_start: Callable[[], Awaitable[None]]) -> ResizeResult:
        await on_start()
        self._handed.add(job.directory)
        try:
            return await self._attempt_until_done(job)
        finally:
            self._handed.discard(job.directory)

    async def stop(self, job: DerivedJob) -> None:
        with contextlib.suppress(FileNotFoundError):
            JobFiles(Path(job.directory)).cancel.touch()
        with contextlib.suppress(Exception):  # best effort: the file is the contract
            await self._backend.request_stop(job)

    async def _attempt_until_done(self, job: DerivedJob) -> ResizeResult:
        files = JobFiles(Path(job.directory))
        attempts = unblamed = 0
        while True:
            if self._closing or files.cancel.exists():
                return ResizeResult(JobState.CANCELLED)
            attempts += 1
            try:
                return await self._backend.run(job)
            except BackendClosed:
                return ResizeResult(JobState.CANCELLED)
            except WorkerLost as lost:
                if self.is_closing():  # a call: it changed during the await
                    return ResizeResult(JobState.CANCELLED)
                if not lost.blamed:
                    attempts -= 1
                    unblamed += 1
                    await asyncio.sleep(min(MAX_RETRY_DELAY_S, 0.5 * 2 ** (unblamed - 1)))
                elif attempts >= self._max_attempts:
                    return ResizeResult(JobState.FAILED, error=f"{lost} ({attempts} attempt(s))")
                log.warning(f"{lost}; retrying", extra={"job": Path(job.directory).name})
