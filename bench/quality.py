"""Encoder settings per clip: speed against ffmpeg's defaults, at equal quality (SSIM).

Each clip is resized by bare ffmpeg with exactly the job's arguments (built by
the service's own `build_resize_args`) for every candidate, and with ffmpeg's
defaults (libx264 medium, CRF 23). Runs are interleaved, so a noisy neighbour
slows every variant alike; wall times are medians.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from videosvc.config import usable_cpus
from videosvc.media.probe import Toolchain

from .clips import Clip
from .media import Encoder, defaults_args, run_checked, service_args, service_audio_codec, ssim
from .report import Row, markdown_table, median

FFMPEG_TIMEOUT_S = 600.0
MIN_SPEEDUP = 2.0
MAX_SSIM_DELTA = 0.002

#: Candidates for the defaults: x264's faster presets around CRF 20.
CANDIDATES = (
    Encoder("veryfast", 20),
    Encoder("veryfast", 21),
    Encoder("superfast", 20),
    Encoder("superfast", 21),
    Encoder("superfast", 22),
    Encoder("ultrafast", 20),
)


@dataclass(frozen=True)
class Point:
    clip: Clip
    encoder: Encoder | None  # None: ffmpeg's defaults
    wall_s: float
    ssim: float
    size_bytes: int


async def measure_quality(
    tools: Toolchain, clips: list[Clip], encoders: list[Encoder], work: Path, runs: int
) -> list[Point]:
    """Defaults first, then each encoder, per clip."""
    points = []
    for clip in clips:
        audio = await asyncio.to_thread(service_audio_codec, clip.path, tools)
        defaults_out = work / f"{clip.name}-defaults.mp4"
        commands: list[tuple[Encoder | None, list[str], Path]] = [
            (None, defaults_args(tools.ffmpeg, clip.path, defaults_out, clip.size), defaults_out)
        ]
        for encoder in encoders:
            job_dir = work / f"{clip.name}-{encoder.preset}-{encoder.crf}"
            args, output = service_args(tools, clip.path, job_dir, clip.size, encoder, audio, usable_cpus())
            commands.append((encoder, args, output))
        walls: list[list[float]] = [[] for _ in commands]
        for _ in range(runs):
            for wall, (_, args, _) in zip(walls, commands, strict=True):
                wall.append((await run_checked(args, FFMPEG_TIMEOUT_S)).elapsed_s)
        for wall, (which, _, output) in zip(walls, commands, strict=True):
            quality = await ssim(tools.ffmpeg, output, clip.path, *clip.size, FFMPEG_TIMEOUT_S)
            points.append(Point(clip, which, median(wall), quality, output.stat().st_size))
    return points


def _defaults(points: list[Point], clip: Clip) -> Point:
    return next(p for p in points if p.clip == clip and p.encoder is None)


def holds(points: list[Point], encoder: Encoder) -> tuple[float, float]:
    """The encoder's median speedup over the clips, and its worst |ΔSSIM|."""
    speedups, deltas = [], []
    for p in points:
        if p.encoder == encoder:
            base = _defaults(points, p.clip)
            speedups.append(base.wall_s / p.wall_s)
            deltas.append(abs(p.ssim - base.ssim))
    return median(speedups), max(deltas)


def quality_table(points: list[Point], current: Encoder) -> str:
    """One row per clip and encoder, then one per encoder over all clips."""
    rows = []
    for p in points:
        base = _defaults(points, p.clip)
        name, speedup, delta = "ffmpeg defaults (medium crf 23)", "—", "—"
        if p.encoder is not None:
            name = f"{p.encoder}" + (" (current)" if p.encoder == current else "")
            speedup, delta = f"{base.wall_s / p.wall_s:.2f}x", f"{p.ssim - base.ssim:+.4f}"
        size = f"{p.clip.size[0]}x{p.clip.size[1]}"
        rows.append((f"{p.clip.name} ({p.clip.kind}) → {size}", name, f"{p.wall_s:.2f}", speedup,
                     f"{p.ssim:.4f}", delta, f"{p.size_bytes / 1e6:.2f}"))  # fmt: skip
    per_clip = markdown_table(("clip", "encoder", "wall s", "speedup", "SSIM", "Δ SSIM", "size MB"), rows)
    summary = []
    for candidate in dict.fromkeys(p.encoder for p in points if p.encoder is not None):
        median_speedup, worst = holds(points, candidate)
        good = median_speedup >= MIN_SPEEDUP and worst <= MAX_SSIM_DELTA
        summary.append((f"{candidate}" + (" (current)" if candidate == current else ""),
                        f"{median_speedup:.2f}x", f"{worst:.4f}", "yes" if good else "no"))  # fmt: skip
    over_clips = markdown_table(
        ("encoder", "median speedup over the clips", "worst \\|Δ SSIM\\|", "≥ 2x and ≤ 0.002?"), summary
    )
    return f"{per_clip}\n\n{over_clips}"


def quality_rows(points: list[Point], current: Encoder) -> list[Row]:
    """The current settings' figures for the one-table summary."""
    speedup, worst = holds(points, current)
    rows = [
        Row(
            f"Resize speed over ffmpeg's defaults, median of {_clip_count(points)} clips ({current})",
            f"{speedup:.2f}x",
            "defaults: medium, CRF 23",
            f"{speedup:.2f}x",
            f"≥ {MIN_SPEEDUP:.1f}x",
            speedup >= MIN_SPEEDUP,
        ),
        _ssim_row(f"worst of {_clip_count(points)} clips", worst),
    ]
    real = [p for p in points if p.clip.kind != "synthetic"]
    if real and len(real) < len(points):
        # Shown apart: a synthetic pattern can sit outside the band in the better direction.
        rows.append(_ssim_row(f"worst of the {_clip_count(real)} real clips", holds(real, current)[1]))
    return rows


def _clip_count(points: list[Point]) -> int:
    return len({p.clip for p in points})


def _ssim_row(which: str, worst: float) -> Row:
    return Row(
        f"Resize SSIM against ffmpeg's defaults, {which}",
        f"\\|Δ\\| {worst:.4f}",
        "per clip in the table below",
        "—",
        f"\\|Δ\\| ≤ {MAX_SSIM_DELTA}",
        worst <= MAX_SSIM_DELTA,
    )
