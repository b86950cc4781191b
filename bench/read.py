"""The read side: downloads against `cp` of the same file, and the catalogue with 10,000 videos.

Downloads go to a file with curl (as a user saves a video) and are compared
with `cp` of the same file to the same disk, measured in the same run; the
server's memory is sampled meanwhile (sendfile: it should not grow). The
catalogue's data dir is filled directly (rows and hard links of one clip),
then the real service is started on it and asked for pages of 100.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from videosvc.store.database import migration_scripts

from .load import LoadResult
from .media import run_checked
from .report import Row, median, percentile
from .rss import RssSampler
from .servers import ServiceClient

MIN_DOWNLOAD_VS_CP = 0.8
MAX_DOWNLOAD_RSS_GROWTH_MB = 20.0
MAX_PAGE_MS = 20.0
CATALOGUE_VIDEOS = 10_000
PAGE_REQUESTS = 200
CURL_TIMEOUT_S = 900.0


@dataclass
class DownloadResults:
    size_bytes: int
    #: curl -o FILE from the service, and cp of the same file: what a user saving the video waits for.
    to_file_s: list[float] = field(default_factory=list)
    cp_s: list[float] = field(default_factory=list)
    #: curl -o /dev/null from the service and from aiohttp's own FileResponse: the server's cost alone.
    to_null_s: list[float] = field(default_factory=list)
    file_response_s: list[float] = field(default_factory=list)
    rss_growth_mb: list[float] = field(default_factory=list)


async def measure_downloads(
    client: ServiceClient, server_pid: int, trivial_url: str, path: Path, work: Path, runs: int
) -> DownloadResults:
    """`path` must be in the folder the trivial app serves under /static/."""
    video_id = await client.upload(path)
    results = DownloadResults((await asyncio.to_thread(path.stat)).st_size)
    url = f"{client.base_url}/file/{video_id}/content"
    target = work / "download.mp4"
    try:
        for _ in range(runs):  # interleaved, so a noisy moment hurts each side alike
            results.cp_s.append((await run_checked(["cp", str(path), str(target)], CURL_TIMEOUT_S)).elapsed_s)
            await asyncio.to_thread(target.unlink)
            with RssSampler(server_pid) as rss:
                results.to_file_s.append(await _curl(url, str(target)))
                results.to_null_s.append(await _curl(url, "/dev/null"))
            results.rss_growth_mb.append(rss.growth_mb)
            if (await asyncio.to_thread(os.path.getsize, target)) != results.size_bytes:
                raise RuntimeError("the download is not the whole file")
            await asyncio.to_thread(target.unlink)
            results.file_response_s.append(await _curl(f"{trivial_url}/static/{path.name}", "/dev/null"))
    finally:
        await client.delete(video_id)
    return results


async def _curl(url: str, output: str) -> float:
    return (
        await run_checked(["curl", "--silent", "--show-error", "--fail", "-o", output, url], CURL_TIMEOUT_S)
    ).elapsed_s


def download_rows(results: DownloadResults) -> list[Row]:
    mb = results.size_bytes / 1e6
    to_file = mb / median(results.to_file_s)
    cp = mb / median(results.cp_s)
    to_null = mb / median(results.to_null_s)
    file_response = mb / median(results.file_response_s)
    growth = max(results.rss_growth_mb)
    return [
        Row(
            f"Download {mb:.0f} MB, saved to a file by curl (MB/s)",
            f"{to_file:.0f} MB/s",
            f"cp of the same file: {cp:.0f} MB/s",
            f"{to_file / cp:.2f}x",
            f"≥ {MIN_DOWNLOAD_VS_CP}x",
            to_file / cp >= MIN_DOWNLOAD_VS_CP,
        ),
        Row(
            f"Download {mb:.0f} MB to /dev/null: the server's cost (MB/s)",
            f"{to_null:.0f} MB/s",
            f"aiohttp FileResponse, same file: {file_response:.0f} MB/s",
            f"{to_null / file_response:.2f}x",
            f"≥ {MIN_DOWNLOAD_VS_CP}x",
            to_null / file_response >= MIN_DOWNLOAD_VS_CP,
        ),
        Row(
            f"Server peak RSS growth during {mb:.0f} MB downloads (worst run)",
            f"{growth:.1f} MB",
            target=f"< {MAX_DOWNLOAD_RSS_GROWTH_MB:.0f} MB",
            met=growth < MAX_DOWNLOAD_RSS_GROWTH_MB,
        ),
    ]


def fill_catalogue(data_dir: Path, clip: Path, count: int) -> None:
    """A data dir holding `count` videos, as the service would have stored them (hard links of one clip)."""
    for folder in ("videos", "originals"):
        (data_dir / folder).mkdir(parents=True, exist_ok=True)
    size = clip.stat().st_size
    rows = []
    for i in range(count):
        video_id = str(uuid.uuid4())
        for folder in ("videos", "originals"):
            os.link(clip, data_dir / folder / f"{video_id}.mp4")
        created = f"2026-01-01T00:00:{i // 1000:02d}.{i % 1000:03d}Z"
        rows.append((video_id, f"clip-{i}.mp4", size, created, created, size))
    with sqlite3.connect(data_dir / "videosvc.sqlite3") as db:
        db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, script in migration_scripts():
            db.executescript(script)
            db.execute("INSERT INTO schema_migrations VALUES (?, '2026-01-01T00:00:00.000Z')", (name,))
        db.executemany(
            "INSERT INTO videos (id, filename, size_bytes, width, height, duration_s, created_at, updated_at,"
            " audio_codecs, frame_count, original_width, original_height, original_size_bytes,"
            " original_audio_codecs) VALUES (?, ?, ?, 1280, 720, 3.0, ?, ?, 'aac', 90, 1280, 720, ?, 'aac')",
            rows,
        )


@dataclass(frozen=True)
class CatalogueResults:
    first_page: LoadResult
    deep_pages: LoadResult
    one_video: LoadResult


async def measure_catalogue(base_url: str, count: int) -> CatalogueResults:
    """Sequential requests on one connection: the latency of one page, not a throughput under load."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/file/", params={"limit": "100"}) as response:
            body = await response.json()
        video_id = body["items"][0]["id"]
        # A deep page: follow the cursor to the middle of the catalogue, then time the next one.
        cursor = body["next"]
        for _ in range(count // 200 - 1):
            async with session.get(
                f"{base_url}/file/", params={"limit": "100", "cursor": cursor}
            ) as response:
                cursor = (await response.json())["next"]
        first = await _timed(session, f"{base_url}/file/?limit=100")
        deep = await _timed(session, f"{base_url}/file/?limit=100&cursor={cursor}")
        single = await _timed(session, f"{base_url}/file/{video_id}/")
    return CatalogueResults(first, deep, single)


async def _timed(session: aiohttp.ClientSession, url: str) -> LoadResult:
    latencies = []
    started = time.perf_counter()
    for _ in range(PAGE_REQUESTS):
        sent = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {url} -> {response.status}")
        latencies.append((time.perf_counter() - sent) * 1000)
    return LoadResult(
        ok=len(latencies),
        errors=Counter(),
        elapsed_s=time.perf_counter() - started,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
    )


def catalogue_rows(results: CatalogueResults, count: int) -> list[Row]:
    single = results.one_video
    rows = []
    middle = f"page {count // 200 + 1} (by cursor)"
    for label, result in (("first page", results.first_page), (middle, results.deep_pages)):
        rows.append(
            Row(
                f"GET /file/?limit=100 with {count} videos, {label}: p50 (p99 {result.p99_ms:.1f} ms)",
                f"{result.p50_ms:.1f} ms",
                f"GET /file/{{id}}/: p50 {single.p50_ms:.1f} ms",
                f"{result.p50_ms / single.p50_ms:.1f}x",
                f"< {MAX_PAGE_MS:g} ms",
                result.p50_ms < MAX_PAGE_MS,
            )
        )
    return rows


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
