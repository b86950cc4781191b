"""The local backend: a `ProcessPoolExecutor` on this machine (forkserver workers at nice 10).

A worker that dies breaks the whole pool: every job in it fails at once. The
workers the pool stops on purpose leave a note (`stopped-by-pool`), so only the
job whose own worker crashed is blamed; the others are retried free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import select
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ...config import Settings
from ..contract import Job, JobFiles, ResizeResult
from ..worker import run_job
from . import BackendClosed, WorkerLost

log = logging.getLogger(__name__)


class LocalBackend:
    name = "local"

    def __init__(self, settings: Settings, workers: int = 0, niceness: int = 10) -> None:
        self._workers = workers or settings.worker_count
        self._niceness = niceness
        self.slots: int | None = self._workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._closing = False

    async def start(self) -> None:
        self._pool = self._new_pool()
        # Start every worker now, so the first PATCH does not pay for it.
        await asyncio.gather(*(asyncio.wrap_future(self._pool.submit(warm_up)) for _ in range(self._workers)))

    async def run(self, job: Job) -> ResizeResult:
        pool = self._pool
        if pool is None or self._closing:
            raise BackendClosed
        files = JobFiles(Path(job.directory))
        try:
            return await asyncio.wrap_future(pool.submit(run_in_pool, job))
        except BrokenProcessPool:
            self._replace_broken_pool(pool)
            if self._closing:
                raise BackendClosed from None
            # The pool fails the futures before it stops the surviving workers: let them finish
            # dying, so the note each leaves (or not) tells whose worker really crashed.
            await _wait_until_gone(files.worker_pid(), timeout_s=5.0)
            blamed = files.started.exists() and not files.stopped_by_pool.exists()
            files.started.unlink(missing_ok=True)
            files.stopped_by_pool.unlink(missing_ok=True)
            raise WorkerLost(
                "the worker process died while running this job"
                if blamed
                else "another job's crash took this worker down",
                blamed,
            ) from None
        except RuntimeError:  # submit after shutdown
            raise BackendClosed from None

    async def request_stop(self, job: Job) -> None:
        """The job looks at its cancel file ten times a second: nothing more to do."""

    async def close(self) -> None:
        self._closing = True
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
            self._pool = None

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        # forkserver: workers do not inherit the server's threads and sockets.
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=init_worker,
            initargs=(os.getpid(), self._niceness),
        )

    def _replace_broken_pool(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        if self._pool is broken and not self._closing:
            log.error("a worker process died; starting a new pool")
            self._pool = self._new_pool()
            broken.shutdown(wait=False, cancel_futures=True)


# -- in the worker processes ------------------------------------------------------

#: The job this worker process is running, for the SIGTERM handler.
_current_job: JobFiles | None = None


def init_worker(server_pid: int, niceness: int = 10) -> None:
    """Worker start-up: yield the CPU to the server, which must stay responsive."""
    with contextlib.suppress(OSError):
        os.nice(niceness)
    # The server handles Ctrl-C; a worker should not die of the same signal mid-job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # If the server dies (kill -9), the worker must not go on encoding for nobody. Its
    # parent is the forkserver, not the server, so it watches the server itself.
    threading.Thread(target=_exit_when_gone, args=(server_pid,), name="server-watch", daemon=True).start()


def warm_up() -> int:
    """A no-op job: makes the pool start its processes before the first real job."""
    return os.getpid()


def run_in_pool(job: Job) -> ResizeResult:
    global _current_job
    files = JobFiles(Path(job.directory))
    files.directory.mkdir(parents=True, exist_ok=True)
    files.started.write_text(str(os.getpid()))
    _current_job = files
    try:
        return run_job(job, worker=f"local pid {os.getpid()}")
    finally:
        _current_job = None


def _exit_when_gone(pid: int) -> None:
    """Block until process `pid` exits, then end this worker (and, by its death signal, ffmpeg)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while _exists(pid):  # no pidfd (not Linux, or an old kernel): poll
            time.sleep(1.0)
    else:
        select.select([pidfd], [], [])
    os._exit(1)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _on_sigterm(signum: int, frame: object) -> None:
    """When one worker dies, the pool SIGTERMs the others: say so, so their jobs are not blamed."""
    if _current_job is not None:
        with contextlib.suppress(OSError):
            _current_job.stopped_by_pool.touch()
    os._exit(128 + signum)  # ffmpeg follows through its parent-death signal


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
