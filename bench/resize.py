"""Resize speed and quality: the service's job against bare ffmpeg, and the preset/CRF sweep."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from videosvc.media.probe import Toolchain
from videosvc.store.storage import Storage

from .media import (
    Completed,
    Encoder,
    defaults_args,
    floor_args,
    run_checked,
    service_args,
    service_audio_codec,
    ssim,
)
from .report import Row, markdown_table, median
from .servers import ServiceClient, ServiceError

TARGET_SIZE = (640, 360)
FFMPEG_TIMEOUT_S = 600.0
#: What `videosvc.jobs.worker.init_worker` sets for the workers, and so for their ffmpeg.
WORKER_NICENESS = 10

MAX_SERVICE_OVER_BARE = 1.10
MIN_SPEEDUP_VS_DEFAULTS = 2.0
MAX_SERVICE_OVER_FLOOR = 2.0
MAX_SSIM_DELTA = 0.002


SWEEP_CANDIDATES = (
    Encoder("veryfast", 20),
    Encoder("veryfast", 21),
    Encoder("veryfast", 22),
    Encoder("faster", 21),
    Encoder("faster", 22),
    Encoder("superfast", 20),
    # superfast and ultrafast reach a given SSIM at a higher CRF than the slower presets.
    Encoder("superfast", 24),
    Encoder("superfast", 26),
    Encoder("ultrafast", 26),
    Encoder("ultrafast", 28),
)


@dataclass
class Timings:
    """Wall and CPU seconds of one command over the runs."""

    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def add(self, completed: Completed) -> None:
        self.wall_s.append(completed.elapsed_s)
        self.cpu_s.append(completed.cpu_s)

    @property
    def wall(self) -> float:
        return median(self.wall_s)

    @property
    def cpu(self) -> float:
        return median(self.cpu_s)


@dataclass(frozen=True)
class ResizeResults:
    service_s: list[float]
    bare: Timings
    #: The same, at the niceness the service's workers give their ffmpeg.
    bare_niced: Timings
    defaults: Timings
    floor: Timings
    ssim_service: float
    ssim_bare: float
    ssim_defaults: float
    service_bytes: int
    defaults_bytes: int


async def measure_resize(
    client: ServiceClient,
    storage: Storage,
    tools: Toolchain,
    encoder: Encoder,
    clip: Path,
    work: Path,
    runs: int,
) -> ResizeResults:
    audio = await asyncio.to_thread(service_audio_codec, clip, tools)
    bare_cmd, bare_out = service_args(tools, clip, work / "bare", TARGET_SIZE, encoder, audio)
    defaults_out, service_out = work / "defaults.mp4", work / "service.mp4"
    commands = {
        "bare": bare_cmd,
        "bare_niced": ["nice", "-n", str(WORKER_NICENESS), *bare_cmd],
        "defaults": defaults_args(tools.ffmpeg, clip, defaults_out, TARGET_SIZE),
        "floor": floor_args(tools.ffmpeg, clip, TARGET_SIZE),
    }
    timings = {name: Timings() for name in commands}
    service_s: list[float] = []
    # Interleaved, so a noisy neighbour slows every variant alike.
    for _ in range(runs):
        service_s.append(await _timed_service_resize(client, clip, storage, service_out))
        for name, args in commands.items():
            timings[name].add(await run_checked(args, FFMPEG_TIMEOUT_S))

    return ResizeResults(
        service_s=service_s,
        bare=timings["bare"],
        bare_niced=timings["bare_niced"],
        defaults=timings["defaults"],
        floor=timings["floor"],
        ssim_service=await ssim(tools.ffmpeg, service_out, clip, *TARGET_SIZE, FFMPEG_TIMEOUT_S),
        ssim_bare=await ssim(tools.ffmpeg, bare_out, clip, *TARGET_SIZE, FFMPEG_TIMEOUT_S),
        ssim_defaults=await ssim(tools.ffmpeg, defaults_out, clip, *TARGET_SIZE, FFMPEG_TIMEOUT_S),
        service_bytes=service_out.stat().st_size,
        defaults_bytes=defaults_out.stat().st_size,
    )


async def _timed_service_resize(client: ServiceClient, clip: Path, storage: Storage, keep: Path) -> float:
    """PATCH -> GET shows processing false, on a fresh upload (a resize replaces the video)."""
    video_id = await client.upload(clip)
    try:
        started = time.perf_counter()
        await client.resize(video_id, *TARGET_SIZE)
        info = await client.wait_until_done(video_id, FFMPEG_TIMEOUT_S)
        elapsed = time.perf_counter() - started
        if not info["processingSuccess"] or (info["width"], info["height"]) != TARGET_SIZE:
            raise ServiceError(f"the resize failed: {info['processingError']}")
        # There is no download route; the stored file is the job's output.
        await asyncio.to_thread(shutil.copyfile, storage.video_path(video_id), keep)
    finally:
        await client.delete(video_id)
    return elapsed


def resize_rows(r: ResizeResults, encoder: Encoder) -> list[Row]:
    service, bare, defaults, floor = median(r.service_s), r.bare.wall, r.defaults.wall, r.floor.wall
    ssim_delta = r.ssim_service - r.ssim_defaults
    size = f"{TARGET_SIZE[0]}x{TARGET_SIZE[1]}"
    return [
        Row(
            f"Resize to {size}: service job, PATCH → done ({encoder})",
            f"{service:.2f} s",
            f"bare ffmpeg, same args: {bare:.2f} s",
            f"{service / bare:.2f}x",
            f"≤ {MAX_SERVICE_OVER_BARE:.2f}x",
            service / bare <= MAX_SERVICE_OVER_BARE,
        ),
        Row(
            f"Resize: bare ffmpeg, same args, at nice {WORKER_NICENESS} like the workers",
            f"{r.bare_niced.wall:.2f} s",
            f"not niced: {bare:.2f} s",
            f"{r.bare_niced.wall / bare:.2f}x",
        ),
        Row(
            "Resize speedup of the service over ffmpeg defaults",
            f"{service:.2f} s",
            f"defaults (medium, CRF 23): {defaults:.2f} s",
            f"{defaults / service:.2f}x",
            f"≥ {MIN_SPEEDUP_VS_DEFAULTS:.1f}x",
            defaults / service >= MIN_SPEEDUP_VS_DEFAULTS,
        ),
        Row(
            "Resize CPU time (user+sys): bare, same args",
            f"{r.bare.cpu:.2f} s",
            f"defaults: {r.defaults.cpu:.2f} s, floor: {r.floor.cpu:.2f} s",
            f"{r.defaults.cpu / r.bare.cpu:.2f}x less than defaults",
        ),
        Row(
            "Resize: service against the decode+scale floor",
            f"{service:.2f} s",
            f"decode+scale to null: {floor:.2f} s",
            f"{service / floor:.2f}x",
            f"≤ {MAX_SERVICE_OVER_FLOOR:.1f}x",
            service / floor <= MAX_SERVICE_OVER_FLOOR,
        ),
        Row(
            "Resize SSIM vs source scaled (service)",
            f"{r.ssim_service:.4f}",
            f"defaults: {r.ssim_defaults:.4f}",
            f"Δ {ssim_delta:+.4f}",
            f"\\|Δ\\| ≤ {MAX_SSIM_DELTA}",
            abs(ssim_delta) <= MAX_SSIM_DELTA,
        ),
        Row(
            "Resize output size (service)",
            f"{r.service_bytes / 1e6:.2f} MB",
            f"defaults: {r.defaults_bytes / 1e6:.2f} MB",
            f"{r.service_bytes / r.defaults_bytes:.2f}x",
        ),
        Row("Resize SSIM, bare ffmpeg with the service's args (sanity)", f"{r.ssim_bare:.4f}"),
    ]


@dataclass(frozen=True)
class SweepPoint:
    encoder: Encoder | None  # None: ffmpeg's defaults
    seconds: float
    cpu_s: float
    ssim: float
    size_bytes: int


async def run_sweep(
    tools: Toolchain, clip: Path, work: Path, runs: int, current: Encoder
) -> list[SweepPoint]:
    """Bare ffmpeg per candidate (with the service's args), defaults first in the list."""
    audio = await asyncio.to_thread(service_audio_codec, clip, tools)
    candidates: list[Encoder | None] = [None, *SWEEP_CANDIDATES]
    if current not in SWEEP_CANDIDATES:
        candidates.append(current)
    commands: list[tuple[list[str], Path]] = []
    for encoder in candidates:
        if encoder is None:
            output = work / "defaults.mp4"
            commands.append((defaults_args(tools.ffmpeg, clip, output, TARGET_SIZE), output))
        else:
            job_dir = work / f"{encoder.preset}-{encoder.crf}"
            commands.append(service_args(tools, clip, job_dir, TARGET_SIZE, encoder, audio))

    timings = [Timings() for _ in commands]
    for _ in range(runs):
        for timing, (args, _) in zip(timings, commands, strict=True):
            timing.add(await run_checked(args, FFMPEG_TIMEOUT_S))

    points = []
    for encoder, timing, (_, output) in zip(candidates, timings, commands, strict=True):
        quality = await ssim(tools.ffmpeg, output, clip, *TARGET_SIZE, FFMPEG_TIMEOUT_S)
        points.append(SweepPoint(encoder, timing.wall, timing.cpu, quality, output.stat().st_size))
    return points


def sweep_table(points: list[SweepPoint], current: Encoder) -> str:
    defaults = points[0]
    rows = []
    for p in points:
        speedup, cpu_speedup = defaults.seconds / p.seconds, defaults.cpu_s / p.cpu_s
        delta = p.ssim - defaults.ssim
        if p.encoder is None:
            name, verdict = "ffmpeg defaults (medium crf 23)", "—"
        else:
            name = f"{p.encoder}" + (" (current)" if p.encoder == current else "")
            good = speedup >= MIN_SPEEDUP_VS_DEFAULTS and abs(delta) <= MAX_SSIM_DELTA
            verdict = "yes" if good else "no"
        rows.append(
            (name, f"{p.seconds:.2f}", f"{speedup:.2f}x", f"{p.cpu_s:.2f}", f"{cpu_speedup:.2f}x",
             f"{p.ssim:.4f}", f"{delta:+.4f}", f"{p.size_bytes / 1e6:.2f}", verdict)
        )  # fmt: skip
    header = ("encoder", "wall s", "wall speedup", "CPU s", "CPU speedup", "SSIM", "Δ SSIM vs defaults",
              "size MB", "wall ≥2x and \\|Δ\\|≤0.002")  # fmt: skip
    return markdown_table(header, rows)
