"""Batch throughput: 8 jobs queued at once on the service's workers, against the best hand-run batch.

The hand-run batch runs the very commands the jobs run (the service's own
`build_resize_args`), N at a time with `-threads T`, for every N x T that fits
the CPUs this process may use, and for ffmpeg's own thread choice; the best
of them is the baseline.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from videosvc.config import usable_cpus
from videosvc.media.probe import Toolchain

from .clips import Clip
from .media import Encoder, run_checked, service_args, service_audio_codec
from .report import Row, median
from .servers import ServiceClient, ServiceError

JOBS = 8
POLL_S = 0.05
TIMEOUT_S = 1800.0
MIN_RATIO = 0.95


@dataclass(frozen=True)
class Layout:
    """N processes at a time, each with `-threads T` (0: ffmpeg chooses)."""

    parallel: int
    threads: int

    def __str__(self) -> str:
        return f"{self.parallel} at a time x {'auto' if self.threads == 0 else self.threads} thread(s)"


def layouts(cpus: int) -> list[Layout]:
    fitting = [Layout(n, cpus // n) for n in range(1, cpus + 1) if cpus % n == 0]
    return [*fitting, Layout(cpus, 0)]


@dataclass(frozen=True)
class BatchResults:
    clip: Clip
    workers: int
    service_s: list[float]
    hand: dict[Layout, list[float]]

    @property
    def best(self) -> tuple[Layout, float]:
        layout = min(self.hand, key=lambda each: median(self.hand[each]))
        return layout, median(self.hand[layout])


async def measure_batch(
    client: ServiceClient, tools: Toolchain, encoder: Encoder, clip: Clip, workers: int, work: Path, runs: int
) -> BatchResults:
    audio = await asyncio.to_thread(service_audio_codec, clip.path, tools)
    hand: dict[Layout, list[float]] = {layout: [] for layout in layouts(usable_cpus())}
    service_s: list[float] = []
    for _ in range(runs):  # interleaved
        service_s.append(await _service_batch(client, clip))
        for layout, seconds in hand.items():
            commands = []
            for index in range(JOBS):
                args, output = service_args(
                    tools, clip.path, work / f"batch-{index}", clip.size, encoder, audio
                )
                if layout.threads:
                    at = args.index(str(output))
                    args = [*args[:at], "-threads", str(layout.threads), *args[at:]]
                commands.append(args)
            seconds.append(await _hand_batch(commands, layout.parallel))
    return BatchResults(clip, workers, service_s, hand)


async def _service_batch(client: ServiceClient, clip: Clip) -> float:
    ids = [await client.upload(clip.path) for _ in range(JOBS)]
    try:
        started = time.perf_counter()
        for video_id in ids:
            await client.resize(video_id, *clip.size)
        # As a batch client would: one GET of the catalogue's busy videos every 50 ms.
        deadline = time.monotonic() + TIMEOUT_S
        while await client.processing_ids() & set(ids):
            if time.monotonic() > deadline:
                raise ServiceError(f"batch jobs still running after {TIMEOUT_S:g} s")
            await asyncio.sleep(POLL_S)
        elapsed = time.perf_counter() - started
        for video_id in ids:
            info = await client.info(video_id)
            if not info["processingSuccess"]:
                raise ServiceError(f"a batch job failed: {info['processingError']}")
        return elapsed
    finally:
        for video_id in ids:
            await client.delete(video_id)


async def _hand_batch(commands: list[list[str]], parallel: int) -> float:
    slots = asyncio.Semaphore(parallel)

    async def one(args: list[str]) -> None:
        async with slots:
            await run_checked(args, TIMEOUT_S)

    started = time.perf_counter()
    await asyncio.gather(*(one(args) for args in commands))
    return time.perf_counter() - started


def batch_rows(r: BatchResults) -> list[Row]:
    service = median(r.service_s)
    layout, best = r.best
    others = ", ".join(f"{each}: {median(s):.2f} s" for each, s in r.hand.items() if each != layout)
    return [
        Row(
            f"Batch: {JOBS} jobs of {r.clip.name} on {r.workers} workers, queued at once → all seen done",
            f"{service:.2f} s",
            f"best hand-run ffmpeg batch ({layout}): {best:.2f} s; {others}",
            f"{best / service:.2f}x",
            f"≥ {MIN_RATIO:.2f}x",
            best / service >= MIN_RATIO,
        )
    ]
