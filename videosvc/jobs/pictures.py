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

import json
import time
from pathlib import Path

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
from .supervise import DerivedRun, StopCheck, run_derived, run_ffmpeg

NO_DISK_ERROR = "not enough free disk space for the pictures (min_free_bytes); ffmpeg was stopped"
#: What the server reads of the job's result: {"poster_time": seconds}.
RESULT = "pictures.json"
POSTER_FRAMES = "poster.frames"
TILE_FRAMES = "tiles.frames"
#: JPEG quality (ffmpeg's qscale, 2 best ... 31): the poster is looked at, the tiles glanced at.
POSTER_QUALITY, SPRITE_QUALITY = 3, 5


def run_pictures(job: PicturesJob, should_stop: StopCheck | None = None, worker: str = "") -> ResizeResult:
    """Make the job's pictures in `job.output` (emptied first: a rerun starts over)."""

    def make(run: DerivedRun) -> tuple[float, ResizeResult]:
        def ffmpeg(args: list[str]) -> tuple[float, ResizeResult | None]:
            return run_ffmpeg(args, run.files, run.rules, run.started, should_stop)

        spawn, ended = ffmpeg(build_poster_args(job, run.files))
        if ended is None and not _nonempty(run.output / POSTER):
            # Every frame of the first seconds was black: the first frame, then.
            _, ended = ffmpeg(build_first_frame_args(job, run.files))
        if ended is None:
            _, ended = ffmpeg(build_storyboard_args(job, run.files))
        return spawn, ended or _finished(job, run.output, run.started)

    return run_derived(job, worker, NO_DISK_ERROR, make)


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


def build_poster_args(job: PicturesJob, files: JobFiles) -> list[str]:
    """The most representative frame of the first seconds that is not black (`thumbnail` among the
    candidates: each keyframe there, or two frames a second when keyframes are far apart)."""
    output = Path(job.output)
    chain = [] if job.keyframes_only else [f"fps={POSTER_SAMPLES_PER_S:g}"]
    chain += [
        "blackframe=amount=0:threshold=32",
        f"metadata=mode=select:key=lavfi.blackframe.pblack:value={BLACK_PERCENT}:function=less",
        f"thumbnail=n={int(POSTER_WINDOW_S * POSTER_SAMPLES_PER_S)}",
        f"metadata=mode=print:file={_filter_value(str(output / POSTER_FRAMES))}",
        f"scale={job.poster_width}:{job.poster_height}",
        "setsar=1",
    ]
    return _one_picture(job, ["-t", f"{POSTER_WINDOW_S:g}"], chain, output / POSTER, POSTER_QUALITY)


def build_storyboard_args(job: PicturesJob, files: JobFiles) -> list[str]:
    """One frame every `interval_s`, scaled to a tile, tiled into the sprite."""
    output = Path(job.output)
    rows = -(-job.count // job.columns)
    chain = [
        # eof_action=pass: the last keyframe is a tile too (rounding would drop it).
        f"fps=1/{job.interval_s:g}:eof_action=pass",
        f"scale={job.tile_width}:{job.tile_height}",
        "setsar=1",
        "metadata=mode=add:key=videosvc.tile:value=1",  # print writes only frames with metadata
        f"metadata=mode=print:file={_filter_value(str(output / TILE_FRAMES))}",
        f"tile={job.columns}x{rows}",
    ]
    # Deblocking skipped: invisible at a tile's size, a tenth of the decode.
    return _one_picture(job, ["-skip_loop_filter", "all"], chain, output / SPRITE, SPRITE_QUALITY)


def _one_picture(
    job: PicturesJob, reading: list[str], chain: list[str], picture: Path, quality: int
) -> list[str]:
    """One picture from one filter chain, given as `-vf`, not `-filter_complex` (which ffmpeg-python
    writes): ffmpeg 5.1 resets an input's `-discard` when a complex filtergraph takes it, and
    decodes every frame (measured: 61 s against 2.6 s for 10 minutes of 720p). With keyframes
    serving (`keyframes_only`) the demuxer drops every other frame (`-discard nokey`), so the
    decoder sees keyframes alone, several at once on its threads (`-skip_frame` would hand it
    every frame to skip one after another: 2.6x slower)."""
    discard = ["-discard", "nokey"] if job.keyframes_only else []
    return [
        job.tools.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats",
        *reading, *discard, "-i", job.source, "-map", "0:v:0", "-vf", ",".join(chain),
        "-frames:v", "1", "-q:v", str(quality), "-update", "1", "-y", str(picture),
    ]  # fmt: skip


def build_first_frame_args(job: PicturesJob, files: JobFiles) -> list[str]:
    """The first frame, when every candidate for the poster was black."""
    chain = [f"scale={job.poster_width}:{job.poster_height}", "setsar=1"]
    return _one_picture(job, [], chain, Path(job.output) / POSTER, POSTER_QUALITY)


def _filter_value(text: str) -> str:
    """`text` as a filter option's value inside a filtergraph: escaped for the option (\\ ' :),
    then for the graph (\\ ' [ ] , ;), as ffmpeg's filtergraph syntax reads it."""
    for level in ("\\':", "\\'[],;"):
        for char in level:
            text = text.replace(char, "\\" + char)
    return text


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
