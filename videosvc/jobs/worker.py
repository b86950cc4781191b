"""The resize job: what runs inside a worker, on this machine or on a cluster's.

Plain data in (`ResizeJob`), plain data out (`ResizeResult`), no aiohttp and no
database, so any executor can run it. The job talks to the server only through
files in its own directory (`JobFiles`): the server asks it to stop by
creating `cancel`, and ffmpeg reports its progress in `progress`. An executor
may add a stop check of its own (a cluster's cancel event and server lease).
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
from pathlib import Path

import ffmpeg

from ..media.isobmff import BoxError, read_tracks
from ..media.probe import MediaInfo, ProbeError, limit_memory, probe, ran_out_of_memory
from ..store.records import JobState
from .contract import JobFiles, ResizeJob, ResizeResult

#: How often a running job looks at its cancel file and its deadline.
POLL_INTERVAL_S = 0.1
#: How many of ffmpeg's last stderr lines a failure keeps.
STDERR_TAIL_LINES = 5

NO_DISK_ERROR = "not enough free disk space for the resized video (min_free_bytes); ffmpeg was stopped"

#: Audio codecs the MP4 muxer takes as they are; anything else is re-encoded.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})


#: A check the executor adds to the job's own (cancel file, deadline, disk, memory): it returns
#: why the job must stop, or None. A cluster passes one that watches its own signals.
StopCheck = Callable[[], "str | None"]


def run_resize(job: ResizeJob, should_stop: StopCheck | None = None, worker: str = "") -> ResizeResult:
    """The job: resize `job.source` into an output of its own attempt, checked and flushed."""
    files = JobFiles(Path(job.directory))
    files.directory.mkdir(parents=True, exist_ok=True)
    attempt = files.claim_attempt(worker or f"pid {os.getpid()}")
    if job.max_attempts and attempt > job.max_attempts:
        # A cluster reran the task of a worker that died under it, once too often.
        return ResizeResult(
            JobState.FAILED,
            error=f"the worker running this job died {attempt - 1} time(s)"
            f" (job_max_attempts={job.max_attempts})",
            attempt=attempt,
        )
    result = _resize(job, files, attempt, should_stop)
    return dataclasses.replace(result, attempt=attempt)


def _resize(job: ResizeJob, files: JobFiles, attempt: int, should_stop: StopCheck | None) -> ResizeResult:
    started = time.monotonic()
    output = files.output(attempt)
    source_audio = job.source_audio_codecs
    if source_audio is None:
        # A probe costs a process start (~0.1 s): only when the upload did not record it.
        try:
            source_audio = probe(job.source, job.tools).audio_codecs
        except ProbeError as e:
            return ResizeResult(JobState.FAILED, error=f"cannot read the stored video: {e}")

    # Copy the audio when the MP4 muxer takes it; if copying still fails, re-encode.
    audio_choices: list[str | None] = [None]
    if source_audio:
        copyable = all(codec in MP4_AUDIO_CODECS for codec in source_audio)
        audio_choices = ["copy", "aac"] if copyable else ["aac"]

    result = ResizeResult(JobState.FAILED, error="not run")
    audio_codec = None
    encode_started = time.monotonic()
    for audio_codec in audio_choices:
        result = _encode(job, files, output, audio_codec, started, should_stop)
        if result.outcome is not JobState.FAILED or audio_codec != "copy":
            break
    if result.outcome is not JobState.SUCCEEDED:
        output.unlink(missing_ok=True)
        return result
    encoded = time.monotonic() - encode_started
    spawn = dict(result.steps).get("spawn", 0.0)  # fork and exec; the rest is ffmpeg's own run
    # The output's audio: the source's, copied, or as many tracks re-encoded to AAC.
    audio_out = tuple(source_audio) if audio_codec == "copy" else ("aac",) * len(source_audio)
    result = verify_output(job, output, audio_out, started)
    return dataclasses.replace(result, steps=(("spawn", spawn), ("ffmpeg", encoded - spawn), *result.steps))


def _encode(
    job: ResizeJob,
    files: JobFiles,
    output: Path,
    audio_codec: str | None,
    started: float,
    should_stop: StopCheck | None,
) -> ResizeResult:
    output.unlink(missing_ok=True)
    if files.cancel.exists():
        return ResizeResult(JobState.CANCELLED, elapsed_s=time.monotonic() - started)
    if _free_bytes(files.directory) < job.min_free_bytes:
        return ResizeResult(JobState.FAILED, error=NO_DISK_ERROR, elapsed_s=time.monotonic() - started)
    args = build_resize_args(job, files, output, audio_codec)
    spawning = time.monotonic()
    with open(files.ffmpeg_log, "wb") as log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=lambda: _child_limits(job.max_memory_bytes),
        )
    spawned = time.monotonic()
    returncode, stopped = _watch(process, job, files, started, should_stop)
    if stopped is not None:
        return stopped
    if returncode != 0:
        return _failure(returncode, job, files, started)
    return ResizeResult(
        JobState.SUCCEEDED,
        output=str(output),
        elapsed_s=time.monotonic() - started,
        steps=(("spawn", spawned - spawning),),
    )


def _watch(
    process: subprocess.Popen[bytes],
    job: ResizeJob,
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
                    f"timed out after {job.timeout_s:g} s (job_timeout_s); ffmpeg was stopped",
                )
            if _free_bytes(files.directory) < job.min_free_bytes:
                return stopped(JobState.FAILED, NO_DISK_ERROR)
            if ran_out_of_memory(_log_head(files.ffmpeg_log)):
                # Some of ffmpeg's threads wait forever once an allocation failed: do not wait with them.
                _stop(process)
                return -1, None
        return returncode, None
    finally:
        exit_watch.close()


def _failure(returncode: int, job: ResizeJob, files: JobFiles, started: float) -> ResizeResult:
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


def build_resize_args(job: ResizeJob, files: JobFiles, output: Path, audio_codec: str | None) -> list[str]:
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
    if job.threads:
        options["threads"] = job.threads
    if audio_codec is not None:
        streams.append(source.audio)
        options["acodec"] = audio_codec
    command = ffmpeg.output(*streams, str(output), **options)
    command = command.global_args(
        "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", str(files.progress), "-nostats"
    )
    return list(ffmpeg.compile(command, cmd=job.tools.ffmpeg, overwrite_output=True))


#: What ffprobe calls the format ffmpeg's mp4 muxer writes.
OUTPUT_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")
#: Sample entries of H.264 video (parameter sets in the entry, or in the stream).
H264_ENTRIES = ("avc1", "avc3")


def verify_output(job: ResizeJob, output: Path, audio: tuple[str, ...], started: float) -> ResizeResult:
    """A zero exit code is not enough: the file must hold what was asked for.

    Read from the output's own index (`moov`) in Python: whole (its boxes tile
    the file), one video track of exactly the asked size, every audio track
    kept. No ffprobe process: that was a tenth of a second of every job.
    """
    problem, info = "", None
    checked = time.monotonic()
    try:
        tracks = read_tracks(str(output))
    except (BoxError, OSError) as e:
        problem = f"the output cannot be read: {e}"
    else:
        video = next((track for track in tracks if track.kind == "vide"), None)
        sound = [track for track in tracks if track.kind == "soun"]
        if video is None:
            problem = "the output has no video track"
        elif video.codec not in H264_ENTRIES:
            problem = f"the output's video is {video.codec or 'unknown'}, not H.264"
        elif (video.width, video.height) != (job.width, job.height):
            problem = f"the output is {video.width}x{video.height}, not {job.width}x{job.height}"
        elif len(sound) < len(audio):
            problem = "the output lost the audio track"
        else:
            info = MediaInfo(
                format_names=OUTPUT_FORMATS,
                width=video.width,
                height=video.height,
                duration_s=video.duration_s,
                video_codec="h264",
                audio_codecs=audio,
                frame_count=video.sample_count or None,
            )
    if info is None:
        output.unlink(missing_ok=True)
        return ResizeResult(JobState.FAILED, error=problem, elapsed_s=time.monotonic() - started)
    verified = time.monotonic()
    # Durable before the server renames it over the original.
    with open(output, "rb") as f:
        os.fsync(f.fileno())
    ended = time.monotonic()
    return ResizeResult(
        JobState.SUCCEEDED,
        output=str(output),
        info=info,
        elapsed_s=ended - started,
        steps=(("verify", verified - checked), ("fsync", ended - verified)),
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
