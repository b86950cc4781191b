"""Running resize jobs in a process pool, and recording how they end.

Each accepted job gets one tracked asyncio task. The task hands the job to the
pool, awaits its future on the event loop (never in the executor's callback
thread), and writes the outcome to the database under `asyncio.shield`, so a
cancellation cannot lose it. The pool can be any `concurrent.futures`
executor: jobs are plain data, and cancellation goes through a file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..config import Settings
from ..errors import JobQueueUnavailable, TooManyJobs
from ..media.probe import ProbeError, Toolchain, probe
from ..store.db import Database, JobRecord, JobState
from ..store.storage import Storage, remove
from .worker import JobFiles, Outcome, ResizeJob, ResizeResult, init_worker, run_resize, warm_up

log = logging.getLogger(__name__)

#: What a 429 tells the client to wait before asking again.
RETRY_AFTER_S = 5
#: At shutdown, how long running jobs get to notice their cancel file (they look every 0.1 s).
STOP_TIMEOUT_S = 5.0


class JobRunner:
    def __init__(self, settings: Settings, db: Database, storage: Storage, tools: Toolchain) -> None:
        self._settings = settings
        self._db = db
        self._storage = storage
        self._tools = tools
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._futures: dict[int, concurrent.futures.Future[ResizeResult]] = {}
        self._deleted: set[int] = set()
        self._waiting: set[int] = set()
        self._slots = asyncio.Semaphore(settings.worker_count)
        #: Which client (API key name) each active job belongs to, for its share of the queue.
        self._clients: dict[int, str | None] = {}
        #: Admissions granted whose job is not yet submitted (a PATCH between check and submit).
        self._admitted: Counter[str | None] = Counter()
        # Test-only: widen the window between replacing a video and recording it, so a
        # crash test can kill the server inside it. Never set in production.
        self._pause_before_record_s = float(os.environ.get("VIDEOSVC_TEST_PAUSE_BEFORE_RECORD_S", "0"))
        self._closing = False

    @property
    def active_job_ids(self) -> set[int]:
        return set(self._tasks)

    async def start_pool(self) -> None:
        self._pool = self._new_pool()
        # Start every worker now, so the first PATCH does not pay for it.
        warmups = [
            asyncio.wrap_future(self._pool.submit(warm_up)) for _ in range(self._settings.worker_count)
        ]
        await asyncio.gather(*warmups)

    async def close(self) -> None:
        """Stop ffmpeg everywhere and the pool; cut-off jobs are requeued for the next start."""
        self._closing = True
        for job_id in list(self._tasks):
            self._stop(job_id)
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks.values()), timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
            self._pool = None

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
        if self._closing or self._pool is None:
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
        self._stop(job_id)
        await asyncio.wait([task])
        self._deleted.discard(job_id)

    def progress_file(self, job_id: int) -> JobFiles:
        return JobFiles(self._storage.job_dir(job_id))

    def _stop(self, job_id: int) -> None:
        """A job still waiting for a worker is cancelled where it waits; past that, it is
        told through its cancel file, so no database write or hand-over is cut in half."""
        task = self._tasks.get(job_id)
        if job_id in self._waiting and task is not None:
            task.cancel()
            return
        # FileNotFoundError: the job is finishing and already removed its directory.
        with contextlib.suppress(FileNotFoundError):
            JobFiles(self._storage.job_dir(job_id)).cancel.touch()

    def _is_closing(self) -> bool:
        return self._closing

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        # forkserver: workers do not inherit the server's threads and sockets.
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self._settings.worker_count,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=init_worker,
            initargs=(os.getpid(),),
        )

    def _replace_broken_pool(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        if self._pool is broken and not self._closing:
            log.error("a worker process died; starting a new pool")
            self._pool = self._new_pool()
            broken.shutdown(wait=False, cancel_futures=True)

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
                await self._db.fail_job(job, error)
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
        await self._db.succeed_job(job, size, info)
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
            self._futures.pop(job.id, None)
        await asyncio.shield(self._finish(job, files, result))

    async def _run_when_a_worker_is_free(self, job: JobRecord, files: JobFiles) -> ResizeResult:
        # Our own queue: a job waits here, where dropping it is instant, not in the pool's.
        self._waiting.add(job.id)
        try:
            await self._slots.acquire()
        finally:
            self._waiting.discard(job.id)
        try:
            return await self._attempt_until_done(job, files)
        finally:
            self._slots.release()

    async def _attempt_until_done(self, job: JobRecord, files: JobFiles) -> ResizeResult:
        limit = self._settings.jobs.job_max_attempts
        while True:
            pool = self._pool
            if pool is None or self._closing:
                return ResizeResult(Outcome.CANCELLED)
            if files.cancel.exists():  # deleted or stopped before it reached a worker
                return ResizeResult(Outcome.CANCELLED)
            attempt = await self._db.mark_running(job)
            video = (await self._db.get_status(job.video_id)).video
            # From the original when it is kept: repeated resizes never compound their losses.
            original = video.original if self._settings.storage.keep_original else None
            spec = ResizeJob(
                source=str(
                    self._storage.original_path(job.video_id)
                    if original
                    else self._storage.video_path(job.video_id)
                ),
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
            )
            log.info("job started", extra={"job_id": job.id, "video_id": job.video_id, "attempt": attempt})
            try:
                future = pool.submit(run_resize, spec)
                self._futures[job.id] = future
                return await asyncio.wrap_future(future)
            except BrokenProcessPool:
                self._replace_broken_pool(pool)
                if self._is_closing():  # a call, not the attribute: it changed during the await
                    return ResizeResult(Outcome.CANCELLED)
                # The pool fails the futures before it stops the surviving workers: let them finish
                # dying, so the note each leaves (or not) tells whose worker really crashed.
                await _wait_until_gone(files.worker_pid(), timeout_s=5.0)
                if not files.started.exists() or files.stopped_by_pool.exists():
                    # Another job's worker died and the pool took this one down with it.
                    await self._db.requeue(job)
                    log.warning("another job's crash took this worker; retrying", extra={"job_id": job.id})
                elif attempt < limit:
                    log.warning("job's worker died; retrying", extra={"job_id": job.id, "attempt": attempt})
                else:
                    return ResizeResult(
                        Outcome.FAILED,
                        error=f"the worker process died while running this job ({attempt} attempt(s))",
                    )
                files.started.unlink(missing_ok=True)
                files.stopped_by_pool.unlink(missing_ok=True)
                continue
            except RuntimeError:  # submit after shutdown
                return ResizeResult(Outcome.CANCELLED)

    async def _finish(self, job: JobRecord, files: JobFiles, result: ResizeResult) -> None:
        fields = {"job_id": job.id, "video_id": job.video_id, "elapsed_s": round(result.elapsed_s, 3)}
        try:
            if job.id in self._deleted:
                log.info("job dropped: its video was deleted", extra=fields)
            elif result.outcome is Outcome.CANCELLED:
                if self._closing:
                    await self._db.requeue(job)
                    log.info("job interrupted by shutdown; it will resume at next start", extra=fields)
                else:
                    await self._db.end_job(job, JobState.CANCELLED, "the job was cancelled")
            elif result.outcome is Outcome.SUCCEEDED and result.output and result.info:
                # Replace first, then record. A crash in between leaves the new video
                # with an active row, which the next start recognises and records.
                size = await asyncio.to_thread(
                    self._storage.move_into_place, Path(result.output), job.video_id
                )
                if self._pause_before_record_s:
                    await asyncio.sleep(self._pause_before_record_s)
                await self._db.succeed_job(job, size, result.info)
                log.info("job finished", extra=fields)
            else:
                error = result.error or "the job failed"
                await self._db.fail_job(job, error)
                log.warning("job failed", extra={**fields, "error": error})
        except Exception as e:
            log.exception("recording the job's outcome failed", extra=fields)
            with contextlib.suppress(Exception):
                await self._db.fail_job(job, f"internal error while finishing: {type(e).__name__}")
        finally:
            await asyncio.to_thread(remove, files.directory)


async def _wait_until_gone(pid: int | None, timeout_s: float) -> None:
    """Poll /proc: the worker is not our child, so there is nothing to wait on."""
    poll_s = 0.02
    for _ in range(int(timeout_s / poll_s)):
        if pid is None or not _is_alive(pid):
            return
        await asyncio.sleep(poll_s)


def _is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
