"""The HLS ladder job, and the fast first play's stream copy: what runs ffmpeg for a package.

Like the resize (`worker`), plain data in (`LadderJob`), plain data out
(`ResizeResult`), run under the same rules (`supervise`), on any backend. One
ffmpeg process decodes the source once and encodes every rung from it
(`split`, a `scale` per rung, the audio once), into an HLS muxer per rendition
(`-var_stream_map`): CMAF segments, one media playlist each. Keyframes are
forced at the same times in every rung, and nowhere else (no scene-cut or
GOP-length keyframes), so a player may switch rungs at any segment.
"""

from __future__ import annotations

import time
from pathlib import Path

import ffmpeg

from ..media.hls import AUDIO, PLAYLIST, PackageError, measure
from ..media.probe import Toolchain
from ..store.records import JobState
from .contract import JobFiles, LadderJob, ResizeResult
from .supervise import DerivedRun, StopCheck, run_derived, run_ffmpeg

#: What the AAC rendition is encoded at.
AUDIO_BITRATE = "128k"
#: A GOP length no segment reaches: keyframes come from `-force_key_frames` only.
NO_GOP_KEYFRAMES = 100_000
NO_DISK_ERROR = "not enough free disk space for the HLS package (min_free_bytes); ffmpeg was stopped"


def run_ladder(job: LadderJob, should_stop: StopCheck | None = None, worker: str = "") -> ResizeResult:
    """Encode the job's rungs into `job.output` (emptied first: a rerun starts over)."""

    def make(run: DerivedRun) -> tuple[float, ResizeResult]:
        args = build_ladder_args(job, run.files)
        spawn, ended = run_ffmpeg(args, run.files, run.rules, run.started, should_stop)
        return spawn, ended or _checked(job, run.started)

    return run_derived(job, worker, NO_DISK_ERROR, make)


def _checked(job: LadderJob, started: float) -> ResizeResult:
    """A zero exit code is not enough: every rendition must have its playlist, segments and init."""
    names = [rung.name for rung in job.rungs] + ([AUDIO] if job.audio else [])
    try:
        for name in names:
            measure(Path(job.output) / name)
    except (PackageError, OSError) as e:
        return ResizeResult(JobState.FAILED, error=f"the package is incomplete: {e}")
    return ResizeResult(JobState.SUCCEEDED, output=job.output, elapsed_s=time.monotonic() - started)


def build_ladder_args(job: LadderJob, files: JobFiles) -> list[str]:
    """One decode, a scaled encode per rung (scaled in a cascade), the audio once: an ffmpeg-python
    graph, compiled to a list."""
    source = ffmpeg.input(job.source)
    streams = []
    options: dict[str, object] = {
        "c:v": "libx264",
        "preset": job.x264_preset,
        "crf": job.x264_crf,
        "pix_fmt": "yuv420p",
        "g": NO_GOP_KEYFRAMES,
        "sc_threshold": 0,
        "force_key_frames": keyframe_times(job.keyframes_at) or f"expr:gte(t,n_forced*{job.segment_s:g})",
    }
    stream_map = []
    # A cascade: each rung is scaled from the one above it (largest first), not from the source, so
    # the full-size picture is scaled once; the quality is the same (VMAF within 0.15, measured).
    above = source.video
    for index, rung in enumerate(job.rungs):
        scaled = above.filter("scale", rung.width, rung.height).filter("setsar", 1)
        if index < len(job.rungs) - 1:
            branches = scaled.filter_multi_output("split", 2)
            streams.append(branches[0])
            above = branches[1]
        else:
            streams.append(scaled)
        options[f"maxrate:v:{index}"] = rung.maxrate
        options[f"bufsize:v:{index}"] = rung.maxrate * 2
        stream_map.append(f"v:{index},name:{rung.name}")
    if job.audio:
        streams.append(source.audio)
        options |= {"c:a": "aac", "b:a": AUDIO_BITRATE}
        stream_map.append(f"a:0,name:{AUDIO}")
    if job.threads:
        options["threads"] = job.threads
    return _hls_command(streams, options, stream_map, job.output, job.segment_s, job.tools, files)


def build_copy_args(
    source: str, output: str, audio: bool, segment_s: float, tools: Toolchain, files: JobFiles
) -> list[str]:
    """Fast first play: the upload's own streams, cut into segments at its keyframes, not re-encoded."""
    media = ffmpeg.input(source)
    streams = [media.video]
    stream_map = [f"v:0,name:{copy_name()}"]
    if audio:
        streams.append(media.audio)
        stream_map.append(f"a:0,name:{AUDIO}")
    return _hls_command(streams, {"c": "copy"}, stream_map, output, segment_s, tools, files)


def copy_name() -> str:
    """The copied rendition is the package's first (and largest)."""
    return "v0"


def keyframe_times(times: tuple[float, ...]) -> str:
    return ",".join(f"{t:.6f}".rstrip("0").rstrip(".") for t in times)


def _hls_command(
    streams: list[object],
    options: dict[str, object],
    stream_map: list[str],
    output: str,
    segment_s: float,
    tools: Toolchain,
    files: JobFiles,
) -> list[str]:
    folder = Path(output)
    command = ffmpeg.output(
        *streams,
        str(folder / "%v" / PLAYLIST),
        **options,
        f="hls",
        hls_time=f"{segment_s:g}",
        hls_playlist_type="vod",
        hls_segment_type="fmp4",
        hls_fmp4_init_filename="init.mp4",
        hls_segment_filename=str(folder / "%v" / "seg%05d.m4s"),
        var_stream_map=" ".join(stream_map),
    )
    command = command.global_args(
        "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", str(files.progress), "-nostats"
    )
    return list(ffmpeg.compile(command, cmd=tools.ffmpeg, overwrite_output=True))
