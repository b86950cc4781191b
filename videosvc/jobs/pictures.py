"""The pictures job: a video's poster and storyboard (SPEC §14).

Like the resize and the ladder: plain data in (`PicturesJob`), plain data out
(`ResizeResult`), under the same rules (`supervise`), on any backend. Two short
ffmpeg runs read the source cheaply: its first seconds for the poster (black
frames dropped, then ffmpeg's `thumbnail` filter picks the most representative),
and the whole video for the storyboard, one frame per tile, tiled into the
sprite; both from keyframes alone where they are close enough. What it wrote: `poster.jpg`,
`storyboard.jpg`, `storyboard.vtt` (written here, from the tiles ffmpeg made),
and `pictures.json` (the poster's time) for the server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import ffmpeg

from ..media.pictures import (
    BLACK_PERCENT,
    POSTER,
    POSTER_SAMPLES_PER_S,
    POSTER_WINDOW_S,
    SPRITE,
    STORYBOARD,
    Storyboard,
    storyboard_vtt,
)
from ..store.records import JobState
from .contract import JobFiles, PicturesJob, ResizeResult
from .supervise import Rules, StopCheck, run_ffmpeg

NO_DISK_ERROR = "not enough free disk space for the pictures (min_free_bytes); ffmpeg was stopped"
#: What the server reads of the job's result: {"poster_time": seconds}.
RESULT = "pictures.json"
POSTER_FRAMES = "poster.frames"
TILE_FRAMES = "tiles.frames"
#: JPEG quality (ffmpeg's qscale, 2 best ... 31): the poster is looked at, the tiles glanced at.
POSTER_QUALITY, SPRITE_QUALITY = 3, 5


def run_pictures(job: PicturesJob, should_stop: StopCheck | None = None, worker: str = "") -> ResizeResult:
    """Make the job's pictures in `job.output` (emptied first: a rerun starts over)."""
    files = JobFiles(Path(job.directory))
    files.directory.mkdir(parents=True, exist_ok=True)
    attempt, refused = files.claim_within(worker or f"pid {os.getpid()}", job.max_attempts)
    if refused is not None:
        return refused
    started = time.monotonic()
    output = Path(job.output)
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    rules = Rules(
        job.timeout_s, job.max_memory_bytes, job.min_free_bytes, NO_DISK_ERROR, "derived_timeout_factor"
    )
    spawn, ended = run_ffmpeg(build_poster_args(job, files), files, rules, started, should_stop)
    if ended is None and not _nonempty(output / POSTER):
        # Every frame of the first seconds was black: the first frame, then.
        _, ended = run_ffmpeg(build_first_frame_args(job, files), files, rules, started, should_stop)
    if ended is None:
        _, ended = run_ffmpeg(build_storyboard_args(job, files), files, rules, started, should_stop)
    if ended is None:
        ended = _finished(job, output, started)
    if ended.outcome is not JobState.SUCCEEDED:
        shutil.rmtree(output, ignore_errors=True)
    return dataclasses.replace(ended, attempt=attempt, steps=(("spawn", spawn), *ended.steps))


def _finished(job: PicturesJob, output: Path, started: float) -> ResizeResult:
    """The VTT from the tiles ffmpeg made, and the poster's time; a missing picture fails the job."""
    if not _nonempty(output / POSTER) or not _nonempty(output / SPRITE):
        return ResizeResult(JobState.FAILED, error="ffmpeg made no poster or no storyboard")
    tiles = len(_frame_times(output / TILE_FRAMES))
    board = Storyboard(job.interval_s, job.count, job.tile_width, job.tile_height, job.columns)
    (output / STORYBOARD).write_text(storyboard_vtt(board, job.duration_s, tiles), encoding="utf-8")
    poster_times = _frame_times(output / POSTER_FRAMES)
    result = {"poster_time": round(poster_times[0], 3) if poster_times else 0.0}
    (output / RESULT).write_text(json.dumps(result), encoding="utf-8")
    for name in (POSTER_FRAMES, TILE_FRAMES):
        (output / name).unlink(missing_ok=True)
    return ResizeResult(JobState.SUCCEEDED, output=str(output), elapsed_s=time.monotonic() - started)


def _read(job: PicturesJob, **options: object) -> ffmpeg.nodes.FilterableStream:
    """The source, read whole; or, when its keyframes serve (`keyframes_only`), its keyframes alone,
    dropped at the demuxer (`-discard nokey`: the decoder sees keyframes only, several at once on
    its threads; `-skip_frame` would hand it every frame to skip one after another, 2.6x slower)."""
    if job.keyframes_only:
        options |= {"discard": "nokey"}
    return ffmpeg.input(job.source, **options).video


def build_poster_args(job: PicturesJob, files: JobFiles) -> list[str]:
    """The most representative frame of the first seconds that is not black (`thumbnail` among the
    candidates: each keyframe there, or two frames a second when keyframes are far apart)."""
    output = Path(job.output)
    candidates = _read(job, t=f"{POSTER_WINDOW_S:g}")
    if not job.keyframes_only:
        candidates = candidates.filter("fps", f"{POSTER_SAMPLES_PER_S:g}")
    poster = (
        candidates.filter("blackframe", amount=0, threshold=32)
        .filter(
            "metadata", mode="select", key="lavfi.blackframe.pblack", value=BLACK_PERCENT, function="less"
        )
        .filter("thumbnail", n=int(POSTER_WINDOW_S * POSTER_SAMPLES_PER_S))
        .filter("metadata", mode="print", file=str(output / POSTER_FRAMES))
        .filter("scale", job.poster_width, job.poster_height)
        .filter("setsar", 1)
    )
    return _compiled(ffmpeg.output(poster, str(output / POSTER), vframes=1, **{"q:v": POSTER_QUALITY}), job)


def build_storyboard_args(job: PicturesJob, files: JobFiles) -> list[str]:
    """One frame every `interval_s`, scaled to a tile, tiled into the sprite (a second ffmpeg: two
    inputs of one process read the file less well than two processes, measured)."""
    output = Path(job.output)
    rows = -(-job.count // job.columns)
    # Deblocking skipped: invisible at a tile's size, a tenth of the decode.
    tiles = (
        _read(job, skip_loop_filter="all")
        # eof_action=pass: the last keyframe is a tile too (rounding would drop it).
        .filter("fps", f"1/{job.interval_s:g}", eof_action="pass")
        .filter("scale", job.tile_width, job.tile_height)
        .filter("setsar", 1)
        .filter("metadata", mode="add", key="videosvc.tile", value=1)  # print writes frames with metadata
        .filter("metadata", mode="print", file=str(output / TILE_FRAMES))
        .filter("tile", f"{job.columns}x{rows}")
    )
    return _compiled(ffmpeg.output(tiles, str(output / SPRITE), vframes=1, **{"q:v": SPRITE_QUALITY}), job)


def build_first_frame_args(job: PicturesJob, files: JobFiles) -> list[str]:
    poster = (
        ffmpeg.input(job.source)
        .video.filter("scale", job.poster_width, job.poster_height)
        .filter("setsar", 1)
    )
    return _compiled(
        ffmpeg.output(poster, str(Path(job.output) / POSTER), vframes=1, **{"q:v": POSTER_QUALITY}), job
    )


def _compiled(command: ffmpeg.nodes.OutputStream, job: PicturesJob) -> list[str]:
    command = command.global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-nostats")
    return list(ffmpeg.compile(command, cmd=job.tools.ffmpeg, overwrite_output=True))


def _frame_times(path: Path) -> list[float]:
    """The `pts_time` of each frame the `metadata=print` filter wrote."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    times = []
    for line in text.splitlines():
        if line.startswith("frame:"):
            _, _, value = line.partition("pts_time:")
            try:
                times.append(float(value.split()[0]))
            except (ValueError, IndexError):
                continue
    return times


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
