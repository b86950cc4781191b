"""GET /file/{id}/ under load: against a trivial aiohttp handler, then with every worker resizing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .load import LoadResult, LoadSpec, get_load
from .report import Row, median
from .servers import ServiceClient, ServiceError

#: An upscale keeps a worker busy far longer than one that shrinks.
BUSY_SIZE = (1920, 1080)
BUSY_START_TIMEOUT_S = 120.0

MIN_RPS_VS_TRIVIAL = 0.5
MAX_BUSY_P99_MS = 50.0


@dataclass(frozen=True)
class ApiResults:
    trivial: list[LoadResult]
    idle: list[LoadResult]
    busy: list[LoadResult]
    #: False if a busy job ended before the last busy load run did.
    busy_throughout: bool


async def measure_api(
    client: ServiceClient,
    trivial_base_url: str,
    video_id: str,
    busy_source: Path,
    workers: int,
    spec: LoadSpec,
    runs: int,
) -> ApiResults:
    """Trivial app and idle service interleaved, then the service with every worker busy."""
    trivial: list[LoadResult] = []
    idle: list[LoadResult] = []
    for _ in range(runs):
        trivial.append(await get_load(f"{trivial_base_url}/file/{video_id}/", spec))
        idle.append(await get_load(client.file_url(video_id), spec))
    busy, throughout = await _measure_busy(client, busy_source, workers, spec, runs)
    return ApiResults(trivial, idle, busy, throughout)


async def _measure_busy(
    client: ServiceClient, source: Path, workers: int, spec: LoadSpec, runs: int
) -> tuple[list[LoadResult], bool]:
    """One long upscale per worker; GET the first of those videos (its progress is read too)."""
    video_ids = [await client.upload(source) for _ in range(workers)]
    try:
        for video_id in video_ids:
            await client.resize(video_id, *BUSY_SIZE)
        await _wait_all_encoding(client, video_ids)
        results = [await get_load(client.file_url(video_ids[0]), spec) for _ in range(runs)]
        throughout = all([(await client.info(video_id))["processing"] for video_id in video_ids])
    finally:
        # Deleting stops the running ffmpeg at once.
        for video_id in video_ids:
            await client.delete(video_id)
    return results, throughout


async def _wait_all_encoding(client: ServiceClient, video_ids: list[str]) -> None:
    """Until ffmpeg has reported progress for every job, i.e. every worker is encoding."""
    deadline = time.monotonic() + BUSY_START_TIMEOUT_S
    while time.monotonic() < deadline:
        infos = [await client.info(video_id) for video_id in video_ids]
        if all(info["processing"] and info["progress"] is not None for info in infos):
            return
        if not all(info["processing"] for info in infos):
            raise ServiceError(f"a busy job ended before it was measured: {infos}")
        await asyncio.sleep(0.2)
    raise ServiceError(f"the busy jobs did not start encoding within {BUSY_START_TIMEOUT_S:g} s")


def api_rows(r: ApiResults, spec: LoadSpec) -> list[Row]:
    trivial, idle, busy = (median([x.rps for x in runs]) for runs in (r.trivial, r.idle, r.busy))
    p50 = {name: median([x.p50_ms for x in runs]) for name, runs in _named(r)}
    p99 = {name: median([x.p99_ms for x in runs]) for name, runs in _named(r)}
    errors = sum((x.errors for _, runs in _named(r) for x in runs), Counter[str]())
    load = f"{spec.concurrency} conns, {spec.duration_s:g} s"
    busy_note = "" if r.busy_throughout else " (a job ended early!)"
    rows = [
        Row(
            f"GET /file/{{id}}/ throughput, idle ({load})",
            f"{idle:.0f} req/s",
            f"trivial aiohttp handler: {trivial:.0f} req/s",
            f"{idle / trivial:.2f}x",
            f"≥ {MIN_RPS_VS_TRIVIAL}x",
            idle / trivial >= MIN_RPS_VS_TRIVIAL,
        ),
        Row(
            "GET latency p50 / p99, idle",
            f"{p50['idle']:.1f} / {p99['idle']:.1f} ms",
            f"trivial: {p50['trivial']:.1f} / {p99['trivial']:.1f} ms",
        ),
        Row(
            f"GET throughput, every worker resizing{busy_note}",
            f"{busy:.0f} req/s",
            f"idle: {idle:.0f} req/s",
            f"{busy / idle:.2f}x",
        ),
        Row(
            f"GET latency p99, every worker resizing{busy_note}",
            f"{p99['busy']:.1f} ms (p50 {p50['busy']:.1f})",
            f"idle: {p99['idle']:.1f} ms",
            f"{p99['busy'] / p99['idle']:.2f}x",
            f"< {MAX_BUSY_P99_MS:.0f} ms",
            p99["busy"] < MAX_BUSY_P99_MS and r.busy_throughout,
        ),
    ]
    if errors:
        described = ", ".join(f"{count}x {kind}" for kind, count in errors.most_common())
        rows.append(Row("GET errors (all runs)", described, target="none", met=False))
    return rows


def _named(r: ApiResults) -> list[tuple[str, list[LoadResult]]]:
    return [("trivial", r.trivial), ("idle", r.idle), ("busy", r.busy)]
