"""Running resize jobs on a backend: the queue, the runs, stopping them.

Each accepted job gets one tracked asyncio task. The task waits for a slot,
hands the job to the backend (a process pool here, or a Dask cluster: see
jobs.backends), awaits its result on the event loop, and has it recorded
(`jobs.outcomes`) under `asyncio.shield`, so a cancellation cannot lose it.
Jobs are plain data (`jobs.specs` makes them), and cancellation goes through
a file in the job's folder (and, on a cluster, an event of its own). How many
may be queued is `jobs.admission`; what the last run left is `jobs.recovery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from ..config import Settings
from ..errors import JobQueueUnavailable
from ..store.disk import DiskBudget, Reservation
from ..store.jobs import JobRepository
from ..store.records import JobRecord, JobState
from ..store.storage import Storage, remove
from ..store.videos import VideoRepository
from .admission import Admission
from .backends import Backend, BackendClosed, WorkerLost
from .contract import JobFiles, ResizeJob, ResizeResult
from .outcomes import JobOutcomes
from .specs import SpecBuilder, expected_output_bytes

log = logging.getLogger(__name__)

#: The longest wait before handing a job again after a loss that was not its fault.
MAX_RETRY_DELAY_S = 10.0
#: At shutdown, how long running jobs get to notice their cancel file (they look every 0.1 s).
STOP_TIMEOUT_S = 5.0


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        jobs: JobRepository,
        videos: VideoRepository,
        storage: Storage,
        disk: DiskBudget,
        specs: SpecBuilder,
        backend: Backend,
        outcomes: JobOutcomes,
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._videos = videos
        self._storage = storage
        self._disk = disk
        self._specs = specs
        self._backend = backend
        self._outcomes = outcomes
        self.admission = Admission(settings.jobs)
        self._started = False
        self._closing = False
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: The spec each job was handed to the backend with, to ask that very run to stop.
        self._handed: dict[int, ResizeJob] = {}
        self._deleted: set[int] = set()
        self._waiting: set[int] = set()
        self._slots = asyncio.Semaphore(backend.slots) if backend.slots else None
        #: The disk each job on a worker holds for its output, so uploads cannot take it meanwhile.
        self._reservations: dict[int, Reservation] = {}

    @property
    def active_job_ids(self) -> set[int]:
        return set(self._tasks)

    def running_count(self) -> int:
        """Jobs handed to a worker (for the metrics)."""
        return len(self._handed)

    def queued_count(self) -> int:
        """Jobs accepted and not yet on a worker (for the metrics)."""
        return max(0, len(self._tasks) - len(self._handed))

    def job_files(self, job_id: int) -> JobFiles:
        return JobFiles(self._storage.job_dir(job_id))

    async def start(self) -> None:
        await self._backend.start()
        self._started = True
        log.info("jobs run on the %s backend", self._backend.name)

    async def close(self) -> None:
        """Stop ffmpeg everywhere and the backend; cut-off jobs are requeued for the next start."""
        self._closing = True
        for job_id in list(self._tasks):
            await self._stop(job_id)
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks.values()), timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._backend.close()

    def submit(self, job: JobRecord, client: str | None = None) -> None:
        """Queue a job; returns at once. Raises JobQueueUnavailable when closing."""
        if self._closing or not self._started:
            raise JobQueueUnavailable("the service is shutting down and takes no new jobs")
        self._storage.job_dir(job.id).mkdir(parents=True, exist_ok=True)
        task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._tasks[job.id] = task
        self.admission.accepted(job.id, client)

        def forget(_: object) -> None:
            self._tasks.pop(job.id, None)
            self.admission.ended(job.id)

        task.add_done_callback(forget)
        log.info(
            "job queued",
            extra={"job_id": job.id, "video_id": job.video_id, "size": f"{job.width}x{job.height}"},
        )

    async def cancel_for_delete(self, job_id: int) -> None:
        """Stop a job whose video is being deleted; returns once its files are gone."""
        task = self._tasks.get(job_id)
        if task is None:
            return
        self._deleted.add(job_id)
        await self._stop(job_id)
        await asyncio.wait([task])
        self._deleted.discard(job_id)

    async def _stop(self, job_id: int) -> None:
        """A job still waiting for a worker is cancelled where it waits; past that, it is
        told through its cancel file (and the backend), so no write or hand-over is cut in half."""
        task = self._tasks.get(job_id)
        if job_id in self._waiting and task is not None:
            task.cancel()
            return
        # FileNotFoundError: the job is finishing and already removed its directory.
        with contextlib.suppress(FileNotFoundError):
            self.job_files(job_id).cancel.touch()
        spec = self._handed.get(job_id)
        if spec is not None:
            with contextlib.suppress(Exception):  # best effort: the file is the contract
                await self._backend.request_stop(spec)

    async def _run(self, job: JobRecord) -> None:
        files = self.job_files(job.id)
        try:
            result = await self._run_when_a_worker_is_free(job, files)
        except asyncio.CancelledError:
            if job.id not in self._deleted and not self._closing:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            result = ResizeResult(JobState.CANCELLED)
        except Exception as e:  # a bug or a database failure: fail the job, never leave it active
            log.exception("job crashed", extra={"job_id": job.id})
            result = ResizeResult(JobState.FAILED, error=f"internal error: {type(e).__name__}")
        finally:
            self._handed.pop(job.id, None)
        try:
            await asyncio.shield(self._finish(job, files, result))
        finally:
            reservation = self._reservations.pop(job.id, None)
            if reservation is not None:
                reservation.release()

    async def _run_when_a_worker_is_free(self, job: JobRecord, files: JobFiles) -> ResizeResult:
        if self._slots is None:  # the cluster queues and schedules jobs itself
            return await self._attempt_until_done(job, files)
        # Our own queue: a job waits here, where dropping it is instant, not in the pool's.
        self._waiting.add(job.id)
        queued = time.monotonic()
        try:
            await self._slots.acquire()
        finally:
            self._waiting.discard(job.id)
        waited = time.monotonic() - queued
        try:
            result = await self._attempt_until_done(job, files)
        finally:
            self._slots.release()
        return dataclasses.replace(result, steps=(("queue", waited), *result.steps))

    async def _attempt_until_done(self, job: JobRecord, files: JobFiles) -> ResizeResult:
        limit = self._settings.jobs.job_max_attempts
        unblamed = 0
        while True:
            if self._closing or files.cancel.exists():  # stopped before it reached a worker
                return ResizeResult(JobState.CANCELLED)
            starting = time.monotonic()
            attempt = await self._jobs.mark_running(job)
            spec = self._handed[job.id] = await self._spec(job, files)
            log.info("job started", extra={"job_id": job.id, "video_id": job.video_id, "attempt": attempt})
            try:
                handing_over = time.monotonic()
                result = await self._backend.run(spec)
                # What the worker did not measure itself: getting the job there and the result back.
                handover = time.monotonic() - handing_over - result.elapsed_s
                steps = (("start", handing_over - starting), ("handover", max(0.0, handover)))
                return dataclasses.replace(result, steps=(*steps, *result.steps))
            except BackendClosed:
                return ResizeResult(JobState.CANCELLED)
            except WorkerLost as lost:
                if self._is_closing():  # a call, not the attribute: it changed during the await
                    return ResizeResult(JobState.CANCELLED)
                if not lost.blamed:
                    unblamed += 1
                    await self._retry_unblamed(job, lost, unblamed)
                elif attempt < limit:
                    log.warning(f"{lost}; retrying", extra={"job_id": job.id, "attempt": attempt})
                else:
                    return ResizeResult(JobState.FAILED, error=f"{lost} ({attempt} attempt(s))")

    async def _retry_unblamed(self, job: JobRecord, lost: WorkerLost, times: int) -> None:
        """Not the job's fault (a restarting scheduler, another job's crash): not counted as an
        attempt, and tried again after a wait that grows each time, rather than hammer a cluster
        that is coming back."""
        await self._jobs.requeue(job)
        delay = min(MAX_RETRY_DELAY_S, 0.5 * 2 ** (times - 1)) if times > 1 else 0.0
        log.warning(f"{lost}; retrying", extra={"job_id": job.id, "in_s": delay})
        await asyncio.sleep(delay)

    def _is_closing(self) -> bool:
        return self._closing

    async def _spec(self, job: JobRecord, files: JobFiles) -> ResizeJob:
        video = (await self._videos.status(job.video_id)).video
        if job.id not in self._reservations:  # held until the job ends; a job runs whatever uploads hold
            self._reservations[job.id] = self._disk.reserve(expected_output_bytes(video, job), force=True)
        side_by_side = min(self._backend.slots or 1, len(self._tasks))  # accepted jobs, this one included
        return self._specs.spec(job, video, files, side_by_side)

    async def _finish(self, job: JobRecord, files: JobFiles, result: ResizeResult) -> None:
        try:
            await self._outcomes.end_run(
                job, result, deleted=job.id in self._deleted, shutting_down=self._closing
            )
        finally:
            await asyncio.to_thread(remove, files.directory)
