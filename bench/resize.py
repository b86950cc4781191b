"""Resize speed and quality: the service's job against bare ffmpeg, and the preset/CRF sweep."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from videosvc.media import Toolchain
from videosvc.storage import Storage

from .media import defaults_args, floor_args, run_checked, service_args, service_audio_codec, ssim
from .report import Row, markdown_table, median
from .servers import ServiceClient, ServiceError

TARGET_SIZE = (640, 360)
FFMPEG_TIMEOUT_S = 600.0

MAX_SERVICE_OVER_BARE = 1.10
MIN_SPEEDUP_VS_DEFAULTS = 2.0
MAX_SERVICE_OVER_FLOOR = 2.0
MAX_SSIM_DELTA = 0.002


@dataclass(frozen=True)
class Encoder:
    preset: str
    crf: int

    def __str__(self) -> str:
        return f"{self.preset} crf {self.crf}"


SWEEP_CANDIDATES = (
    Encoder("veryfast", 20),
    Encoder("veryfast", 21),
    Encoder("veryfast", 22),
    Encoder("faster", 21),
    Encoder("faster", 22),
    Encoder("superfast", 20),
)


@dataclass(frozen=True)
class ResizeResults:
    service_s: list[float]
    bare_s: list[float]
    defaults_s: list[float]
    floor_s: list[float]
    ssim_service: float
    ssim_bare: float
    ssim_defaults: float
    service_bytes: int
    defaults_bytes: int


async def measure_resize(
    client: ServiceClient, data_dir: Path, tools: Toolchain, encoder: Encoder, clip: Path, work: Path, runs: int
) -> ResizeResults:
    work.mkdir(parents=True, exist_ok=True)
    audio = await asyncio.to_thread(service_audio_codec, clip, tools)
    bare_cmd, bare_out = service_args(tools, clip, work / "bare", TARGET_SIZE, encoder.preset, encoder.crf, audio)
    defaults_out, service_out = work / "defaults.mp4", work / "service.mp4"
    defaults_cmd = defaults_args(tools.ffmpeg, clip, defaults_out, TARGET_SIZE)
    floor_cmd = floor_args(tools.ffmpeg, clip, TARGET_SIZE)

    service_s: list[float] = []
    bare_s: list[float] = []
    defaults_s: list[float] = []
    floor_s: list[float] = []
    # Interleaved, so a noisy neighbour slows every variant alike.
    for _ in range(runs):
        service_s.append(await _timed_service_resize(client, clip, Storage(data_dir, 0), service_out))
        bare_s.append((await run_checked(bare_cmd, FFMPEG_TIMEOUT_S)).elapsed_s)
        defaults_s.append((await run_checked(defaults_cmd, FFMPEG_TIMEOUT_S)).elapsed_s)
        floor_s.append((await run_checked(floor_cmd, FFMPEG_TIMEOUT_S)).elapsed_s)

    return ResizeResults(
        service_s=service_s,
        bare_s=bare_s,
        defaults_s=defaults_s,
        floor_s=floor_s,
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
    service, bare = median(r.service_s), median(r.bare_s)
    defaults, floor = median(r.defaults_s), median(r.floor_s)
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
            "Resize speedup of the service over ffmpeg defaults",
            f"{service:.2f} s",
            f"defaults (medium, CRF 23): {defaults:.2f} s",
            f"{defaults / service:.2f}x",
            f"≥ {MIN_SPEEDUP_VS_DEFAULTS:.1f}x",
            defaults / service >= MIN_SPEEDUP_VS_DEFAULTS,
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
    ssim: float
    size_bytes: int


async def run_sweep(tools: Toolchain, clip: Path, work: Path, runs: int, current: Encoder) -> list[SweepPoint]:
    """Bare ffmpeg per candidate (with the service's args), defaults first in the list."""
    work.mkdir(parents=True, exist_ok=True)
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
            commands.append(service_args(tools, clip, job_dir, TARGET_SIZE, encoder.preset, encoder.crf, audio))

    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for seconds, (args, _) in zip(times, commands, strict=True):
            seconds.append((await run_checked(args, FFMPEG_TIMEOUT_S)).elapsed_s)

    points = []
    for encoder, seconds, (_, output) in zip(candidates, times, commands, strict=True):
        quality = await ssim(tools.ffmpeg, output, clip, *TARGET_SIZE, FFMPEG_TIMEOUT_S)
        points.append(SweepPoint(encoder, median(seconds), quality, output.stat().st_size))
    return points


def sweep_table(points: list[SweepPoint], current: Encoder) -> str:
    defaults = points[0]
    rows = []
    for p in points:
        speedup = defaults.seconds / p.seconds
        delta = p.ssim - defaults.ssim
        if p.encoder is None:
            name, verdict = "ffmpeg defaults (medium crf 23)", "—"
        else:
            name = f"{p.encoder}" + (" (current)" if p.encoder == current else "")
            good = speedup >= MIN_SPEEDUP_VS_DEFAULTS and abs(delta) <= MAX_SSIM_DELTA
            verdict = "yes" if good else "no"
        rows.append(
            (name, f"{p.seconds:.2f}", f"{speedup:.2f}x", f"{p.ssim:.4f}", f"{delta:+.4f}",
             f"{p.size_bytes / 1e6:.2f}", verdict)
        )  # fmt: skip
    header = ("encoder", "median s", "speedup vs defaults", "SSIM", "Δ SSIM", "size MB", "≥2x and \\|Δ\\|≤0.002")
    return markdown_table(header, rows)
