"""The resize job: what runs inside a worker process.

Plain data in (`ResizeJob`), plain data out (`ResizeResult`), no aiohttp and no
database, so any `concurrent.futures.Executor` can run it. The job talks to
the server only through files in its own directory (`JobFiles`): the server
asks it to stop by creating `cancel`, and ffmpeg reports its progress in
`progress`.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from ..media.probe import MediaInfo, ProbeError, Toolchain, limit_memory, probe, ran_out_of_memory

#: How often a running job looks at its cancel file and its deadline.
POLL_INTERVAL_S = 0.1
#: How many of ffmpeg's last stderr lines a failure keeps.
STDERR_TAIL_LINES = 5

NO_DISK_ERROR = "not enough free disk space for the resized video (min_free_bytes); ffmpeg was stopped"

#: Audio codecs the MP4 muxer takes as they are; anything else is re-encoded.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"  #: output written, probed and complete
    FAILED = "failed"  #: ffmpeg failed, timed out, or the output was wrong
    CANCELLED = "cancelled"  #: the cancel file appeared; nothing was kept


@dataclass(frozen=True)
class JobFiles:
    """The files one job shares with the server, all in one directory."""

    directory: Path

    @property
    def output(self) -> Path:
        return self.directory / "output.mp4"

    @property
    def cancel(self) -> Path:
        return self.directory / "cancel"

    @property
    def progress(self) -> Path:
        return self.directory / "progress"

    @property
    def ffmpeg_log(self) -> Path:
        return self.directory / "ffmpeg.log"

    @property
    def started(self) -> Path:
        """Written by the worker when it takes the job: the job reached a process."""
        return self.directory / "started"

    def worker_pid(self) -> int | None:
        try:
            return int(self.started.read_text())
        except (OSError, ValueError):
            return None

    @property
    def stopped_by_pool(self) -> Path:
        """Written when the pool terminates this worker because *another* worker died."""
        return self.directory / "stopped-by-pool"


@dataclass(frozen=True)
class ResizeJob:
    source: str
    #: The source's audio codecs as stored at upload; None: probe the source to find out.
    source_audio_codecs: tuple[str, ...] | None
    directory: str
    width: int
    height: int
    tools: Toolchain
    x264_preset: str
    x264_crf: int
    timeout_s: float
    #: RLIMIT_DATA of ffmpeg: past it an allocation fails, and so does the job.
    max_memory_bytes: int
    #: The job fails rather than leave less free disk than this where it writes.
    min_free_bytes: int = 0


@dataclass(frozen=True)
class ResizeResult:
    outcome: Outcome
    #: The finished video (inside the job directory) when it succeeded.
    output: str | None = None
    info: MediaInfo | None = None
    error: str | None = None
    elapsed_s: float = 0.0


#: The job this worker process is running, for the SIGTERM handler.
_current_job: JobFiles | None = None


def init_worker(server_pid: int) -> None:
    """Worker start-up: yield the CPU to the server, which must stay responsive."""
    with contextlib.suppress(OSError):
        os.nice(10)
    # The server handles Ctrl-C; a worker should not die of the same signal mid-job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # If the server dies (kill -9), the worker must not go on encoding for nobody. Its
    # parent is the forkserver, not the server, so it watches the server itself.
    threading.Thread(target=_exit_when_gone, args=(server_pid,), name="server-watch", daemon=True).start()


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


def warm_up() -> int:
    """A no-op job: makes the pool start its processes before the first real job."""
    return os.getpid()


def run_resize(job: ResizeJob) -> ResizeResult:
    global _current_job
    files = JobFiles(Path(job.directory))
    files.directory.mkdir(parents=True, exist_ok=True)
    files.started.write_text(str(os.getpid()))
    _current_job = files
    try:
        return _resize(job, files)
    finally:
        _current_job = None


def _resize(job: ResizeJob, files: JobFiles) -> ResizeResult:
    started = time.monotonic()
    source_audio = job.source_audio_codecs
    if source_audio is None:
        # A probe costs a process start (~0.1 s): only when the upload did not record it.
        try:
            source_audio = probe(job.source, job.tools).audio_codecs
        except ProbeError as e:
            return ResizeResult(Outcome.FAILED, error=f"cannot read the stored video: {e}")

    # Copy the audio when the MP4 muxer takes it; if copying still fails, re-encode.
    audio_choices: list[str | None] = [None]
    if source_audio:
        copyable = all(codec in MP4_AUDIO_CODECS for codec in source_audio)
        audio_choices = ["copy", "aac"] if copyable else ["aac"]

    result = ResizeResult(Outcome.FAILED, error="not run")
    for audio_codec in audio_choices:
        result = _encode(job, files, audio_codec, started)
        if result.outcome is not Outcome.FAILED or audio_codec != "copy":
            break
    if result.outcome is not Outcome.SUCCEEDED:
        files.output.unlink(missing_ok=True)
        return result
    return _verify(job, files, len(source_audio), started)


def _encode(job: ResizeJob, files: JobFiles, audio_codec: str | None, started: float) -> ResizeResult:
    files.output.unlink(missing_ok=True)
    if files.cancel.exists():
        return ResizeResult(Outcome.CANCELLED, elapsed_s=time.monotonic() - started)
    if _free_bytes(files.directory) < job.min_free_bytes:
        return ResizeResult(Outcome.FAILED, error=NO_DISK_ERROR, elapsed_s=time.monotonic() - started)
    args = build_resize_args(job, files, audio_codec)
    with open(files.ffmpeg_log, "wb") as log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=lambda: _child_limits(job.max_memory_bytes),
        )
    deadline = started + job.timeout_s
    exit_watch = _ExitWatch(process)
    try:
        while (returncode := exit_watch.wait(POLL_INTERVAL_S)) is None:
            if files.cancel.exists():
                _stop(process)
                return ResizeResult(Outcome.CANCELLED, elapsed_s=time.monotonic() - started)
            if time.monotonic() > deadline:
                _stop(process)
                return ResizeResult(
                    Outcome.FAILED,
                    error=f"timed out after {job.timeout_s:g} s (job_timeout_s); ffmpeg was stopped",
                    elapsed_s=time.monotonic() - started,
                )
            if _free_bytes(files.directory) < job.min_free_bytes:
                _stop(process)
                return ResizeResult(Outcome.FAILED, error=NO_DISK_ERROR, elapsed_s=time.monotonic() - started)
            if ran_out_of_memory(_log_head(files.ffmpeg_log)):
                # Some of ffmpeg's threads wait forever once an allocation failed: do not wait with them.
                _stop(process)
                returncode = -1
                break
    finally:
        exit_watch.close()
    if returncode != 0:
        if ran_out_of_memory(_log_head(files.ffmpeg_log)):
            return ResizeResult(
                Outcome.FAILED,
                error=f"ffmpeg ran out of memory: a job may use at most {job.max_memory_bytes // 2**20} MiB"
                " (ffmpeg_max_memory_bytes); ask for a smaller size",
                elapsed_s=time.monotonic() - started,
            )
        tail = _stderr_tail(files.ffmpeg_log)
        return ResizeResult(
            Outcome.FAILED,
            error=f"ffmpeg exited with code {returncode}: {tail}"
            if tail
            else f"ffmpeg exited with code {returncode}",
            elapsed_s=time.monotonic() - started,
        )
    return ResizeResult(Outcome.SUCCEEDED, output=str(files.output), elapsed_s=time.monotonic() - started)


def build_resize_args(job: ResizeJob, files: JobFiles, audio_codec: str | None) -> list[str]:
    """The ffmpeg command line, built by ffmpeg-python: a list, never a shell string."""
    source = ffmpeg.input(job.source)
    # ffmpeg applies the source's rotation first (autorotate), so W:H is what players show.
    video = source.video.filter("scale", job.width, job.height).filter("setsar", 1)
    streams = [video]
    options: dict[str, object] = {
        "vcodec": "libx264",
        "preset": job.x264_preset,
        "crf": job.x264_crf,
        "pix_fmt": "yuv420p",
        "movflags": "+faststart",
        "f": "mp4",
    }
    if audio_codec is not None:
        streams.append(source.audio)
        options["acodec"] = audio_codec
    output = ffmpeg.output(*streams, str(files.output), **options)
    output = output.global_args(
        "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", str(files.progress), "-nostats"
    )
    return list(ffmpeg.compile(output, cmd=job.tools.ffmpeg, overwrite_output=True))


def _verify(job: ResizeJob, files: JobFiles, audio_streams: int, started: float) -> ResizeResult:
    """A zero exit code is not enough: the file must hold what was asked for."""
    try:
        info = probe(str(files.output), job.tools)
    except ProbeError as e:
        problem = f"the output cannot be read: {e}"
    else:
        problem = ""
        if (info.width, info.height) != (job.width, job.height):
            problem = f"the output is {info.width}x{info.height}, not {job.width}x{job.height}"
        elif len(info.audio_codecs) < audio_streams:
            problem = "the output lost the audio track"
    if problem:
        files.output.unlink(missing_ok=True)
        return ResizeResult(Outcome.FAILED, error=problem, elapsed_s=time.monotonic() - started)
    # Durable before the server renames it over the original.
    with open(files.output, "rb") as f:
        os.fsync(f.fileno())
    return ResizeResult(
        Outcome.SUCCEEDED, output=str(files.output), info=info, elapsed_s=time.monotonic() - started
    )


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


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _log_head(path: Path) -> bytes:
    """The first 64 KiB of ffmpeg's log (empty while all goes well, at -loglevel error)."""
    try:
        with open(path, "rb") as f:
            return f.read(65536)
    except OSError:
        return b""


def _child_limits(max_memory_bytes: int) -> None:
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


def read_progress(files: JobFiles, duration_s: float) -> int | None:
    """Percent done, from the last `out_time_us` ffmpeg wrote to the progress file.

    Capped at 99: 100 is reported as `processing: false`, once the output is in place.
    """
    try:
        with open(files.progress, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 2048))
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        key, _, value = line.partition("=")
        if key == "out_time_us" and value.strip().isdigit():
            return max(0, min(99, int(int(value) / 1e6 / duration_s * 100)))
    return None
