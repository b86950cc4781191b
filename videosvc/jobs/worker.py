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
import time
from pathlib import Path

import ffmpeg

from ..media.isobmff import BoxError, read_tracks
from ..media.probe import MediaInfo, ProbeError, probe
from ..store.records import JobState
from .contract import Job, JobFiles, LadderJob, PicturesJob, ResizeJob, ResizeResult
from .supervise import Rules, StopCheck, run_ffmpeg

NO_DISK_ERROR = "not enough free disk space for the resized video (min_free_bytes); ffmpeg was stopped"

#: Audio codecs the MP4 muxer takes as they are; anything else is re-encoded.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})


def run_job(job: Job, should_stop: StopCheck | None = None, worker: str = "") -> ResizeResult:
    """What a backend's worker runs: a resize, an HLS ladder, or a video's pictures."""
    if isinstance(job, LadderJob):
        from .ladder import run_ladder

        return run_ladder(job, should_stop, worker)
    if isinstance(job, PicturesJob):
        from .pictures import run_pictures

        return run_pictures(job, should_stop, worker)
    return run_resize(job, should_stop, worker)


def run_resize(job: ResizeJob, should_stop: StopCheck | None = None, worker: str = "") -> ResizeResult:
    """The job: resize `job.source` into an output of its own attempt, checked and flushed."""
    files = JobFiles(Path(job.directory))
    files.directory.mkdir(parents=True, exist_ok=True)
    attempt, refused = files.claim_within(worker or f"pid {os.getpid()}", job.max_attempts)
    if refused is not None:
        return refused
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
    args = build_resize_args(job, files, output, audio_codec)
    rules = Rules(job.timeout_s, job.max_memory_bytes, job.min_free_bytes, NO_DISK_ERROR)
    spawn, ended = run_ffmpeg(args, files, rules, started, should_stop)
    if ended is not None:
        return ended
    return ResizeResult(
        JobState.SUCCEEDED,
        output=str(output),
        elapsed_s=time.monotonic() - started,
        steps=(("spawn", spawn),),
    )


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
