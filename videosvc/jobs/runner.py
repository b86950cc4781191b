"""Running resize jobs on a backend, and recording how they end.

Each accepted job gets one tracked asyncio task. The task waits for a slot,
hands the job to the backend (a process pool here, or a Dask cluster: see
jobs.backends), awaits its result on the event loop, and writes the outcome to
the database under `asyncio.shield`, so a cancellation cannot lose it. Jobs are
plain data, and cancellation goes through a file in the job's folder (and, on a
cluster, an event of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..config import Settings, usable_cpus
from ..errors import JobQueueUnavailable, TooManyJobs
from ..media.probe import ProbeError, Toolchain, probe
from ..store.db import Database, JobRecord, VideoRecord
from ..store.disk import DiskBudget, Reservation
from ..store.storage import Storage, remove
from .backends import Backend, BackendClosed, WorkerLost
from .contract import JobFiles, Outcome, ResizeJob, ResizeResult
from .outcomes import JobOutcomes

log = logging.getLogger(__name__)

#: What a 429 tells the client to wait before asking again.
RETRY_AFTER_S = 5
#: The longest wait before handing a job again after a loss that was not its fault.
MAX_RETRY_DELAY_S = 10.0
#: At shutdown, how long running jobs get to notice their cancel file (they look every 0.1 s).
STOP_TIMEOUT_S = 5.0


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        disk: DiskBudget,
        tools: Toolchain,
        backend: Backend,
        outcomes: JobOutcomes,
    ) -> None:
        self._settings = settings
        self._db = db
        self._outcomes = outcomes
        self._storage = storage
        self._disk = disk
        #: The disk each job on a worker holds for its output, so uploads cannot take it meanwhile.
        self._reservations: dict[int, Reservation] = {}
        self._tools = tools
        self._backend = backend
        self._started = False
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: The spec each job was handed to the backend with, to ask that very run to stop.
        self._specs: dict[int, ResizeJob] = {}
        self._deleted: set[int] = set()
        self._waiting: set[int] = set()
        self._slots = asyncio.Semaphore(backend.slots) if backend.slots else None
        #: Which client (API key name) each active job belongs to, for its share of the queue.
        self._clients: dict[int, str | None] = {}
        #: Admissions granted whose job is not yet submitted (a PATCH between check and submit).
        self._admitted: Counter[str | None] = Counter()
        # Test-only: widen the window between replacing a video and recording it, so a
        # crash test can kill the server inside it. Never set in production.
        self._pause_before_record_s = float(os.environ.get("VIDEOSVC_TEST_PAUSE_BEFORE_RECORD_S", "0"))
        self._closing = False
        self._cpus = usable_cpus()

    @property
    def active_job_ids(self) -> set[int]:
        return set(self._tasks)

    def running_count(self) -> int:
        """Jobs handed to a worker (for the metrics)."""
        return len(self._specs)

    def queued_count(self) -> int:
        """Jobs accepted and not yet on a worker (for the metrics)."""
        return max(0, len(self._tasks) - len(self._specs))

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

    @contextlib.contextmanager
    def admission(self, client: str | None) -> Iterator[None]:
        """Hold a place in the queue while a job is being created; raises TooManyJobs when full.

        Counted synchronously, so PATCHes racing through their awaits cannot overfill it.
        """
        limits = self._settings.jobs
        if len(self._tasks) + self._admitted.total() >= limits.max_queued_jobs:
            raise TooManyJobs(
                f"{limits.max_queued_jobs} jobs are queued or running (max_queued_jobs); retry later",
                RETRY_AFTER_S,
            )
        if client is not None:
            mine = sum(1 for owner in self._clients.values() if owner == client) + self._admitted[client]
            if mine >= limits.max_queued_jobs_per_key:
                raise TooManyJobs(
                    f"this API key has {mine} jobs queued or running (max_queued_jobs_per_key); retry later",
                    RETRY_AFTER_S,
                )
        self._admitted[client] += 1
        try:
            yield
        finally:
            self._admitted[client] -= 1

    def submit(self, job: JobRecord, client: str | None = None) -> None:
        """Queue a job; returns at once. Raises JobQueueUnavailable when closing."""
        if self._closing or not self._started:
            raise JobQueueUnavailable("the service is shutting down and takes no new jobs")
        self._storage.job_dir(job.id).mkdir(parents=True, exist_ok=True)
        task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._tasks[job.id] = task
        self._clients[job.id] = client

        def forget(_: object) -> None:
            self._tasks.pop(job.id, None)
            self._clients.pop(job.id, None)

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

    def progress_file(self, job_id: int) -> JobFiles:
        return JobFiles(self._storage.job_dir(job_id))

    def _is_closing(self) -> bool:
        return self._closing

    async def _stop(self, job_id: int) -> None:
        """A job still waiting for a worker is cancelled where it waits; past that, it is
        told through its cancel file (and the backend), so no write or hand-over is cut in half."""
        task = self._tasks.get(job_id)
        if job_id in self._waiting and task is not None:
            task.cancel()
            return
        # FileNotFoundError: the job is finishing and already removed its directory.
        with contextlib.suppress(FileNotFoundError):
            JobFiles(self._storage.job_dir(job_id)).cancel.touch()
        spec = self._specs.get(job_id)
        if spec is not None:
            with contextlib.suppress(Exception):  # best effort: the file is the contract
                await self._backend.request_stop(spec)

    async def resume_interrupted(self) -> None:
        """Jobs the last run accepted but did not finish: record, run again, or give up."""
        limit = self._settings.jobs.job_max_attempts
        for job in await self._db.active_jobs():
            if await self._finished_before_the_crash(job):
                continue
            if job.attempts >= limit:
                error = (
                    f"interrupted {job.attempts} time(s) by a crash or restart;"
                    f" gave up (job_max_attempts={limit})"
                )
                await self._outcomes.failed(job, error)
                log.warning("job failed", extra={"job_id": job.id, "video_id": job.video_id, "error": error})
            else:
                log.info("resuming interrupted job", extra={"job_id": job.id, "video_id": job.video_id})
                self.submit(job)

    async def _finished_before_the_crash(self, job: JobRecord) -> bool:
        """A crash between replacing the video and recording it leaves the new video with
        an active row: record it as done instead of encoding it again (or failing it)."""
        path = self._storage.video_path(job.video_id)
        try:
            info = await asyncio.to_thread(probe, str(path), self._tools)
        except (ProbeError, OSError):
            return False
        status = await self._db.get_status(job.video_id)
        recorded = (status.video.width, status.video.height)
        if (info.width, info.height) != (job.width, job.height) or recorded == (job.width, job.height):
            return False
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        await self._outcomes.succeeded(job, size, info)
        log.info("job had finished before the restart; recorded it", extra={"job_id": job.id})
        return True

    async def _run(self, job: JobRecord) -> None:
        files = JobFiles(self._storage.job_dir(job.id))
        try:
            result = await self._run_when_a_worker_is_free(job, files)
        except asyncio.CancelledError:
            if job.id not in self._deleted and not self._closing:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            result = ResizeResult(Outcome.CANCELLED)
        except Exception as e:  # a bug or a database failure: fail the job, never leave it active
            log.exception("job crashed", extra={"job_id": job.id})
            result = ResizeResult(Outcome.FAILED, error=f"internal error: {type(e).__name__}")
        finally:
            self._specs.pop(job.id, None)
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
            if self._closing:
                return ResizeResult(Outcome.CANCELLED)
            if files.cancel.exists():  # deleted or stopped before it reached a worker
                return ResizeResult(Outcome.CANCELLED)
            starting = time.monotonic()
            attempt = await self._db.mark_running(job)
            spec = await self._spec(job, files)
            self._specs[job.id] = spec
            log.info("job started", extra={"job_id": job.id, "video_id": job.video_id, "attempt": attempt})
            try:
                handing_over = time.monotonic()
                result = await self._backend.run(spec)
                # What the worker did not measure itself: getting the job there and the result back.
                handover = time.monotonic() - handing_over - result.elapsed_s
                steps = (("start", handing_over - starting), ("handover", max(0.0, handover)))
                return dataclasses.replace(result, steps=(*steps, *result.steps))
            except BackendClosed:
                return ResizeResult(Outcome.CANCELLED)
            except WorkerLost as lost:
                if self._is_closing():  # a call, not the attribute: it changed during the await
                    return ResizeResult(Outcome.CANCELLED)
                if not lost.blamed:
                    await self._db.requeue(job)
                    unblamed += 1
                    # Not the job's fault (a restarting scheduler, another job's crash): wait a
                    # little longer each time, rather than hammer a cluster that is coming back.
                    delay = min(MAX_RETRY_DELAY_S, 0.5 * 2 ** (unblamed - 1)) if unblamed > 1 else 0.0
                    log.warning(f"{lost}; retrying", extra={"job_id": job.id, "in_s": delay})
                    await asyncio.sleep(delay)
                elif attempt < limit:
                    log.warning(f"{lost}; retrying", extra={"job_id": job.id, "attempt": attempt})
                else:
                    return ResizeResult(Outcome.FAILED, error=f"{lost} ({attempt} attempt(s))")

    async def _spec(self, job: JobRecord, files: JobFiles) -> ResizeJob:
        video = (await self._db.get_status(job.video_id)).video
        if job.id not in self._reservations:  # held until the job ends; a job runs whatever uploads hold
            self._reservations[job.id] = self._disk.reserve(expected_output_bytes(video, job), force=True)
        # From the original when it is kept: repeated resizes never compound their losses.
        original = video.original if self._settings.storage.keep_original else None
        storage = self._storage
        source = storage.original_path(job.video_id) if original else storage.video_path(job.video_id)
        return ResizeJob(
            source=str(source),
            source_audio_codecs=original.audio_codecs if original else video.audio_codecs,
            directory=str(files.directory),
            width=job.width,
            height=job.height,
            tools=self._tools,
            x264_preset=self._settings.ffmpeg.x264_preset,
            x264_crf=self._settings.ffmpeg.x264_crf,
            timeout_s=self._settings.jobs.job_timeout_s,
            max_memory_bytes=self._settings.ffmpeg.ffmpeg_max_memory_bytes,
            min_free_bytes=self._settings.storage.min_free_bytes,
            # A cluster reruns the task of a worker that died: the job counts those itself.
            max_attempts=self._settings.jobs.job_max_attempts if self._backend.slots is None else 0,
            threads=self._threads_per_job(),
        )

    def _threads_per_job(self) -> int:
        """The CPUs shared among the jobs that will run side by side; a lone job gets them all.

        ffmpeg's own choice (threads for every CPU in each process) oversubscribes a busy
        pool: two 2-thread encodes on 2 CPUs finish a batch ~4% later than two of 1 thread.
        """
        slots = self._backend.slots
        if slots is None:
            return 0  # a cluster's workers run on CPUs of their own
        side_by_side = max(1, min(slots, len(self._tasks)))  # accepted jobs, this one included
        return max(1, self._cpus // side_by_side)

    async def _finish(self, job: JobRecord, files: JobFiles, result: ResizeResult) -> None:
        fields = {"job_id": job.id, "video_id": job.video_id, "elapsed_s": round(result.elapsed_s, 3)}
        try:
            if job.id in self._deleted:
                self._outcomes.dropped(job, result.elapsed_s)
                log.info("job dropped: its video was deleted", extra=fields)
            elif result.outcome is Outcome.CANCELLED:
                if self._closing:
                    await self._db.requeue(job)
                    log.info("job interrupted by shutdown; it will resume at next start", extra=fields)
                else:
                    await self._outcomes.cancelled(job, result.elapsed_s)
            elif result.outcome is Outcome.SUCCEEDED and result.output and result.info:
                # Replace first, then record. A crash in between leaves the new video
                # with an active row, which the next start recognises and records.
                replacing = time.monotonic()
                size = await asyncio.to_thread(
                    self._storage.move_into_place, Path(result.output), job.video_id
                )
                steps = (*result.steps, ("replace", time.monotonic() - replacing))
                if self._pause_before_record_s:
                    await asyncio.sleep(self._pause_before_record_s)
                await self._outcomes.succeeded(job, size, result.info, result.elapsed_s, steps)
                log.info("job finished", extra={**fields, **{f"{name}_s": round(s, 3) for name, s in steps}})
            else:
                error = result.error or "the job failed"
                await self._outcomes.failed(job, error, result.elapsed_s)
                log.warning("job failed", extra={**fields, "error": error})
        except Exception as e:
            log.exception("recording the job's outcome failed", extra=fields)
            with contextlib.suppress(Exception):
                await self._outcomes.failed(job, f"internal error while finishing: {type(e).__name__}")
        finally:
            await asyncio.to_thread(remove, files.directory)


def expected_output_bytes(video: VideoRecord, job: JobRecord) -> int:
    """What a resize may write, for its disk reservation: the source's bytes per pixel at the new
    size (never less than the source), with half again for a worse guess."""
    source = video.original or video
    scale = job.width * job.height / max(1, source.width * source.height)
    return int(source.size_bytes * max(1.0, scale) * 1.5)
