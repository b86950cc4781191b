"""ffmpeg for the benchmark: making inputs, running timed commands, measuring SSIM.

The "same arguments" baseline is built by the service's own
`videosvc.jobs.worker.build_resize_args`, so it cannot drift from what a job runs.
"""

from __future__ import annotations

import asyncio
import math
import re
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from videosvc.jobs.contract import JobFiles, ResizeJob
from videosvc.jobs.worker import MP4_AUDIO_CODECS, build_resize_args
from videosvc.media.probe import Toolchain, probe

#: Flags for every command we run ourselves: no banner, no stdin, no chatter.
QUIET = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
_SSIM_ALL = re.compile(r"All:([0-9.]+)")


class CommandFailed(Exception):
    pass


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float
    #: User + system CPU seconds of the command (and of its children it waited for).
    cpu_s: float


async def run(args: Sequence[str], timeout_s: float) -> Completed:
    """Run a command to its end (killed after `timeout_s`), timing it.

    CPU time is the growth of RUSAGE_CHILDREN, which is exact because the
    benchmark runs one command at a time (servers are not reaped until the end).
    """
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return Completed(
        process.returncode or 0,
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
        time.perf_counter() - started,
        _children_cpu_s() - cpu_before,
    )


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run_checked(args: Sequence[str], timeout_s: float) -> Completed:
    completed = await run(args, timeout_s)
    if completed.returncode != 0:
        tail = " | ".join(completed.stderr.strip().splitlines()[-3:])
        raise CommandFailed(f"{Path(args[0]).name} exited with {completed.returncode}: {tail}")
    return completed


async def make_clip(ffmpeg: str, path: Path, seconds: float, timeout_s: float) -> None:
    """A 1280x720 H.264 + AAC test clip: moving test pattern and a tone."""
    await run_checked(
        [ffmpeg, *QUIET,
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "fast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-shortest", "-movflags", "+faststart", str(path)],
        timeout_s,
    )  # fmt: skip


async def make_looped(ffmpeg: str, clip: Path, path: Path, target_bytes: int, timeout_s: float) -> None:
    """A big file cheaply: the clip repeated by stream copy, no encoding."""
    clip_bytes = (await asyncio.to_thread(clip.stat)).st_size
    loops = max(0, math.ceil(target_bytes / clip_bytes) - 1)
    await run_checked(
        [ffmpeg, *QUIET, "-stream_loop", str(loops), "-i", str(clip), "-c", "copy", str(path)], timeout_s
    )


async def ssim(ffmpeg: str, output: Path, source: Path, width: int, height: int, timeout_s: float) -> float:
    """SSIM (All) of `output` against the source scaled to the same size."""
    completed = await run_checked(
        [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-i", str(output), "-i", str(source),
         "-lavfi", f"[1:v]scale={width}:{height},setsar=1[ref];[0:v][ref]ssim", "-f", "null", "-"],
        timeout_s,
    )  # fmt: skip
    found = _SSIM_ALL.findall(completed.stderr)
    if not found:
        raise CommandFailed(f"no SSIM in ffmpeg's output for {output.name}")
    return float(found[-1])


def service_audio_codec(source: Path, tools: Toolchain) -> str | None:
    """The first audio choice `run_resize` makes: copy what MP4 takes, else AAC."""
    codecs = probe(str(source), tools).audio_codecs
    if not codecs:
        return None
    return "copy" if all(codec in MP4_AUDIO_CODECS for codec in codecs) else "aac"


@dataclass(frozen=True)
class Encoder:
    """The x264 settings a resize job runs with."""

    preset: str
    crf: int

    def __str__(self) -> str:
        return f"{self.preset} crf {self.crf}"


def service_args(
    tools: Toolchain,
    source: Path,
    job_dir: Path,
    size: tuple[int, int],
    encoder: Encoder,
    audio_codec: str | None,
    threads: int = 0,
) -> tuple[list[str], Path]:
    """The exact command a service job runs; returns it and the output it writes.

    `threads`: what the service gives the job (all the CPUs when it runs alone).
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    files = JobFiles(job_dir)
    job = ResizeJob(
        source=str(source),
        source_audio_codecs=None,
        directory=str(job_dir),
        width=size[0],
        height=size[1],
        tools=tools,
        x264_preset=encoder.preset,
        x264_crf=encoder.crf,
        timeout_s=0,  # unused by build_resize_args
        max_memory_bytes=0,  # likewise
        threads=threads,
    )
    output = files.output(1)
    return build_resize_args(job, files, output, audio_codec), output


def defaults_args(ffmpeg: str, source: Path, output: Path, size: tuple[int, int]) -> list[str]:
    """ffmpeg left to its defaults: libx264 medium, CRF 23, audio re-encoded to AAC."""
    return [ffmpeg, *QUIET, "-i", str(source), "-vf", _scale(size), str(output)]


def floor_args(ffmpeg: str, source: Path, size: tuple[int, int]) -> list[str]:
    """Decode and scale only: no resize can be faster than this."""
    return [ffmpeg, *QUIET, "-i", str(source), "-vf", _scale(size), "-f", "null", "-"]


def _scale(size: tuple[int, int]) -> str:
    return f"scale={size[0]}:{size[1]},setsar=1"
