"""The contract of a resize job, shared by the server (jobs.runner, the backends) and the workers.

Plain data in (`ResizeJob`), plain data out (`ResizeResult`), and the files a
job shares with the server in its own folder (`JobFiles`): any executor can
carry a job, a process pool on this machine or a Dask cluster, as long as the
workers see `data_dir` at the same path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..media.probe import MediaInfo, Toolchain
from ..store.records import JobState


@dataclass(frozen=True)
class JobFiles:
    """The files one job shares with the server, all in one directory."""

    directory: Path

    def output(self, attempt: int) -> Path:
        """Each attempt writes its own file: two attempts (a worker thought dead, and its
        replacement) can never write the same one."""
        return self.directory / f"output-{attempt}.mp4"

    def claim_attempt(self, worker: str) -> int:
        """The number of this execution of the job, counted in the job's folder, where every
        worker sees it: 1, 2, ... (a file created exclusively, so two workers never share one)."""
        attempt = 1
        while True:
            try:
                fd = os.open(self.directory / f"attempt-{attempt}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                attempt += 1
                continue
            with os.fdopen(fd, "w") as marker:
                marker.write(worker)
            return attempt

    def claim_within(self, worker: str, max_attempts: int) -> tuple[int, ResizeResult | None]:
        """This execution's number, and its end if a cluster reran the task of a worker that died
        under it once too often (`max_attempts`; 0: the runner counts attempts itself)."""
        attempt = self.claim_attempt(worker)
        if max_attempts and attempt > max_attempts:
            died = attempt - 1
            error = f"the worker running this job died {died} time(s) (job_max_attempts={max_attempts})"
            return attempt, ResizeResult(JobState.FAILED, error=error, attempt=attempt)
        return attempt, None

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


@dataclass(frozen=True, kw_only=True)
class JobRules:
    """What every job is given: its source, its folder, the tools, and the rules it runs under."""

    source: str
    #: The job's own folder: its claim, its cancel file, ffmpeg's log.
    directory: str
    tools: Toolchain
    timeout_s: float
    #: RLIMIT_DATA of ffmpeg: past it an allocation fails, and so does the job.
    max_memory_bytes: int
    #: The job fails rather than leave less free disk than this where it writes.
    min_free_bytes: int = 0
    #: Executions of the job after which it gives up (workers that died under it). 0: the runner
    #: counts them itself (the local pool); a cluster that reruns a dead worker's task needs this.
    max_attempts: int = 0


@dataclass(frozen=True, kw_only=True)
class EncodeJob(JobRules):
    """A job that encodes with libx264."""

    x264_preset: str
    x264_crf: int
    #: libx264's threads (`-threads`); 0: ffmpeg's own choice, for all the machine's CPUs.
    threads: int = 0


@dataclass(frozen=True, kw_only=True)
class ResizeJob(EncodeJob):
    #: The source's audio codecs as stored at upload; None: probe the source to find out.
    source_audio_codecs: tuple[str, ...] | None
    width: int
    height: int


@dataclass(frozen=True)
class LadderRung:
    """One video rendition a ladder job encodes: its folder name in the package, size and peak rate."""

    name: str
    width: int
    height: int
    maxrate: int


@dataclass(frozen=True, kw_only=True)
class LadderJob(EncodeJob):
    """An HLS package's renditions, encoded in one ffmpeg process from one decode of `source`.

    The server moves what it writes (`output`, one folder per rendition) into the package.
    """

    #: Where the renditions are written: `output/<rung name>/index.m3u8`, and `output/a/` for the audio.
    output: str
    rungs: tuple[LadderRung, ...]
    #: Encode the audio (once, as AAC) too; False when the source has none or it was copied already.
    audio: bool
    segment_s: float
    #: Keyframes at exactly these times (a copied rung's segment starts), so every rung switches at the
    #: same points; empty: one every `segment_s` seconds.
    keyframes_at: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class PicturesJob(JobRules):
    """A video's poster and storyboard, made by one ffmpeg process into `output` (SPEC §14).

    The poster is picked among the first seconds' frames; the storyboard's tiles come from
    keyframes only when they are close enough (`keyframes_only`), else from every frame.
    """

    output: str
    duration_s: float
    poster_width: int
    poster_height: int
    #: One tile every `interval_s` seconds, `tile_width` x `tile_height`, `columns` a row, `count` at most.
    interval_s: float
    count: int
    tile_width: int
    tile_height: int
    columns: int
    keyframes_only: bool


#: What a backend runs: a resize (the PATCH), a ladder or pictures (derived at store time).
Job = ResizeJob | LadderJob | PicturesJob


@dataclass(frozen=True)
class ResizeResult:
    #: How the job ended: SUCCEEDED (output written, probed and complete), FAILED (ffmpeg failed,
    #: timed out, or the output was wrong) or CANCELLED (the cancel file appeared; nothing was kept).
    outcome: JobState
    #: The finished video (inside the job directory) when it succeeded.
    output: str | None = None
    info: MediaInfo | None = None
    error: str | None = None
    elapsed_s: float = 0.0
    #: Which execution of the job this was (1 for the first).
    attempt: int = 1
    #: Seconds each step took on the worker, in order: ("ffmpeg", 4.1), ("verify", 0.001), ...
    steps: tuple[tuple[str, float], ...] = ()


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
