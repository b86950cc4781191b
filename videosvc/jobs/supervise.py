"""Running ffmpeg for a job: to its end, or stopped when the job must stop.

The rules every job's ffmpeg runs under, on any executor: the cancel file (and an
executor's own stop check), the time limit, free disk, and a memory ceiling; and
death with its parent. Used by the resize (`worker`), and by the derived jobs (the HLS
ladder, the pictures) through `run_derived`, their shared frame.
"""

from __future__ import annotations

import dataclasses
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..media.probe import limit_memory, ran_out_of_memory
from ..store.records import JobState
from .contract import JobFiles, LadderJob, PicturesJob, ResizeResult

#: How often a running job looks at its cancel file and its deadline.
POLL_INTERVAL_S = 0.1
#: How many of ffmpeg's last stderr lines a failure keeps.
STDERR_TAIL_LINES = 5

#: A check the executor adds to the job's own (cancel file, deadline, disk, memory): it returns
#: why the job must stop, or None. A cluster passes one that watches its own signals.
StopCheck = Callable[[], "str | None"]


@dataclass(frozen=True)
class Rules:
    """What one job's ffmpeg may take."""

    timeout_s: float
    #: RLIMIT_DATA of ffmpeg: past it an allocation fails, and so does the job.
    max_memory_bytes: int
    #: The job stops rather than leave less free disk than this where it writes.
    min_free_bytes: int
    #: What the job says when it stopped for the disk.
    no_disk_error: str
    #: The setting its time limit comes from, named when it is reached.
    timeout_setting: str = "job_timeout_s"


@dataclass(frozen=True)
class DerivedRun:
    """A derived job's run: its files, its rules, when it started, the folder it fills."""

    files: JobFiles
    rules: Rules
    started: float
    output: Path


def run_derived(
    job: LadderJob | PicturesJob,
    worker: str,
    no_disk_error: str,
    make: Callable[[DerivedRun], tuple[float, ResizeResult]],
) -> ResizeResult:
    """A derived job's frame: claimed (refused past `max_attempts`), its output emptied (a rerun
    starts over), `make` run under the derived time limit, and nothing left when it failed.
    `make` returns the time ffmpeg took to start and how the job ended."""
    files = JobFiles(Path(job.directory))
    files.directory.mkdir(parents=True, exist_ok=True)
    attempt, refused = files.claim_within(worker or f"pid {os.getpid()}", job.max_attempts)
    if refused is not None:
        return refused
    output = Path(job.output)
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    rules = Rules(
        job.timeout_s, job.max_memory_bytes, job.min_free_bytes, no_disk_error, "derived_timeout_factor"
    )
    spawn, ended = make(DerivedRun(files, rules, time.monotonic(), output))
    if ended.outcome is not JobState.SUCCEEDED:
        shutil.rmtree(output, ignore_errors=True)
    return dataclasses.replace(ended, attempt=attempt, steps=(("spawn", spawn), *ended.steps))


def run_ffmpeg(
    args: list[str], files: JobFiles, rules: Rules, started: float, should_stop: StopCheck | None
) -> tuple[float, ResizeResult | None]:
    """Run ffmpeg to its end: (the time it took to start, None) when it exited 0; or how the job
    ends (stopped, or failed with ffmpeg's last words)."""
    if files.cancel.exists():
        return 0.0, ResizeResult(JobState.CANCELLED, elapsed_s=time.monotonic() - started)
    if free_bytes(files.directory) < rules.min_free_bytes:
        elapsed = time.monotonic() - started
        return 0.0, ResizeResult(JobState.FAILED, error=rules.no_disk_error, elapsed_s=elapsed)
    spawning = time.monotonic()
    with open(files.ffmpeg_log, "wb") as log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=lambda: child_limits(rules.max_memory_bytes),
        )
    spawn = time.monotonic() - spawning
    returncode, stopped = _watch(process, rules, files, started, should_stop)
    if stopped is not None:
        return spawn, stopped
    if returncode != 0:
        return spawn, _failure(returncode, rules, files, started)
    return spawn, None


def _watch(
    process: subprocess.Popen[bytes],
    job: Rules,
    files: JobFiles,
    started: float,
    should_stop: StopCheck | None,
) -> tuple[int, ResizeResult | None]:
    """Wait for ffmpeg to end: (its exit code, None); or stop it, for a cancel, a stop check, the
    time limit, the disk or a failed allocation: (-1, why), the why None for memory (read later)."""
    deadline = started + job.timeout_s
    exit_watch = _ExitWatch(process)

    def stopped(state: JobState, error: str | None = None) -> tuple[int, ResizeResult | None]:
        _stop(process)
        return -1, ResizeResult(state, error=error, elapsed_s=time.monotonic() - started)

    try:
        while (returncode := exit_watch.wait(POLL_INTERVAL_S)) is None:
            if files.cancel.exists():
                return stopped(JobState.CANCELLED)
            if should_stop is not None and (reason := should_stop()) is not None:
                return stopped(JobState.CANCELLED, reason)
            if time.monotonic() > deadline:
                return stopped(
                    JobState.FAILED,
                    f"timed out after {job.timeout_s:g} s ({job.timeout_setting}); ffmpeg was stopped",
                )
            if free_bytes(files.directory) < job.min_free_bytes:
                return stopped(JobState.FAILED, job.no_disk_error)
            if ran_out_of_memory(_log_head(files.ffmpeg_log)):
                # Some of ffmpeg's threads wait forever once an allocation failed: do not wait with them.
                _stop(process)
                return -1, None
        return returncode, None
    finally:
        exit_watch.close()


def _failure(returncode: int, job: Rules, files: JobFiles, started: float) -> ResizeResult:
    """Why ffmpeg failed, from its log: out of memory, or its last words."""
    if ran_out_of_memory(_log_head(files.ffmpeg_log)):
        error = (
            f"ffmpeg ran out of memory: a job may use at most {job.max_memory_bytes // 2**20} MiB"
            " (ffmpeg_max_memory_bytes); ask for a smaller size"
        )
    else:
        tail = _stderr_tail(files.ffmpeg_log)
        error = (
            f"ffmpeg exited with code {returncode}: {tail}"
            if tail
            else f"ffmpeg exited with code {returncode}"
        )
    return ResizeResult(JobState.FAILED, error=error, elapsed_s=time.monotonic() - started)


class _ExitWatch:
    """Wait for a process with a timeout, waking the moment it exits.

    Popen.wait(timeout) sleeps in steps of up to 50 ms; a pidfd (Linux) wakes
    at once, which is measurable on short jobs.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self._pidfd: int | None
        try:
            self._pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if the process still runs after `timeout_s`."""
        if self._pidfd is None:
            try:
                return self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return None
        readable, _, _ = select.select([self._pidfd], [], [], timeout_s)
        if not readable:
            return None
        self.close()
        return self._process.wait()  # it has exited: this only reaps it

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def _stderr_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > STDERR_TAIL_LINES:
        # ffmpeg's first error is the cause; the last ones say how it ended.
        lines = [lines[0], "...", *lines[-(STDERR_TAIL_LINES - 1) :]]
    return " | ".join(lines)


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _log_head(path: Path) -> bytes:
    """The first 64 KiB of ffmpeg's log (empty while all goes well, at -loglevel error)."""
    try:
        with open(path, "rb") as f:
            return f.read(65536)
    except OSError:
        return b""


def child_limits(max_memory_bytes: int) -> None:
    """In the ffmpeg child before exec: a memory ceiling, and death with its parent."""
    limit_memory(max_memory_bytes)
    _die_with_parent()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies.

    Without it a killed worker would leave ffmpeg encoding into a directory nobody owns.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: best effort only
