"""Upload throughput against `cp` on the same disk, and the server's memory while it receives."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from videosvc.media.probe import FFPROBE_ARGS

from .media import run_checked
from .report import Row, median
from .rss import RssSampler, read_status_kb
from .servers import ServiceClient, curl_upload

MODES = ("raw", "multipart")
CP_TIMEOUT_S = 600.0

MIN_THROUGHPUT_VS_CP = 0.5

MAX_RSS_GROWTH_MB = 50.0


@dataclass
class UploadResults:
    """All runs for one file."""

    size_bytes: int
    cp_s: list[float] = field(default_factory=list)
    #: cp, then fsync of the copy: the service fsyncs every upload before answering.
    cp_fsync_s: list[float] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    #: The check every upload gets before it is answered (ffprobe), run by hand on the file.
    probe_s: list[float] = field(default_factory=list)
    #: ffprobe's start alone (`-version`): loading its shared libraries.
    probe_start_s: list[float] = field(default_factory=list)
    rss_growth_mb: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})

    def mb_per_s(self, seconds: list[float]) -> float:
        return self.size_bytes / 1e6 / median(seconds)


@dataclass(frozen=True)
class UploadPhase:
    files: list[UploadResults]
    #: The server's RSS before the first measured upload and after the last: a leak shows here.
    rss_before_mb: float
    rss_after_mb: float


async def measure_uploads(
    client: ServiceClient,
    server_pid: int,
    files: list[Path],
    warmup: Path,
    work: Path,
    runs: int,
    ffprobe: str | None,
) -> UploadPhase:
    # First uploads allocate once-only things (imports, buffers); they are not growth per upload.
    for mode in MODES:
        await client.delete(await client.upload(warmup, multipart=mode == "multipart"))
    rss_before_kb = read_status_kb(server_pid)["VmRSS"]

    results = [UploadResults(path.stat().st_size) for path in files]
    for _ in range(runs):
        for path, result in zip(files, results, strict=True):
            cp_s, sync_s = await _timed_cp(path, work / "copy")
            result.cp_s.append(cp_s)
            result.cp_fsync_s.append(cp_s + sync_s)
            if ffprobe is not None:
                probe = await run_checked([ffprobe, *FFPROBE_ARGS, str(path)], CP_TIMEOUT_S)
                result.probe_s.append(probe.elapsed_s)
                started = await run_checked([ffprobe, "-version"], CP_TIMEOUT_S)
                result.probe_start_s.append(started.elapsed_s)
            for mode in MODES:
                seconds, growth_mb = await _timed_upload(client, server_pid, path, mode)
                result.seconds[mode].append(seconds)
                result.rss_growth_mb[mode].append(growth_mb)
    return UploadPhase(results, rss_before_kb / 1024, read_status_kb(server_pid)["VmRSS"] / 1024)


async def _timed_cp(source: Path, target: Path) -> tuple[float, float]:
    try:
        cp = await run_checked(["cp", str(source), str(target)], CP_TIMEOUT_S)
        sync = await run_checked(["sync", str(target)], CP_TIMEOUT_S)
    finally:
        await asyncio.to_thread(target.unlink, missing_ok=True)
    return cp.elapsed_s, sync.elapsed_s


async def _timed_upload(client: ServiceClient, server_pid: int, path: Path, mode: str) -> tuple[float, float]:
    """Seconds until the service answered (stored, probed, fsynced), and its peak RSS growth."""
    with RssSampler(server_pid) as rss:
        seconds, video_id = await curl_upload(client.base_url, path, multipart=mode == "multipart")
    await client.delete(video_id)
    return seconds, rss.growth_mb


def upload_rows(phase: UploadPhase) -> list[Row]:
    results = phase.files
    rows = []
    for r in results:
        label = f"{r.size_bytes / 1e6:.0f} MB"
        cp_sync, cp = r.mb_per_s(r.cp_fsync_s), r.mb_per_s(r.cp_s)
        for mode in MODES:
            speed = r.mb_per_s(r.seconds[mode])
            rows.append(
                Row(
                    f"Upload {label}, {mode} (MB/s)",
                    f"{speed:.0f} MB/s",
                    f"cp+fsync {cp_sync:.0f} MB/s (cp alone {cp:.0f})",
                    f"{speed / cp_sync:.2f}x ({speed / cp:.2f}x of cp alone)",
                    f"≥ {MIN_THROUGHPUT_VS_CP}x of cp+fsync",
                    speed / cp_sync >= MIN_THROUGHPUT_VS_CP,
                )
            )
        if not r.probe_s:
            continue
        probe_ms, start_ms = 1000 * median(r.probe_s), 1000 * median(r.probe_start_s)
        cp_sync_ms = 1000 * median(r.cp_fsync_s)
        rows.append(
            Row(
                f"Upload {label}: the ffprobe check every upload gets, run by hand",
                f"{probe_ms:.0f} ms",
                f"its start alone (ffprobe -version): {start_ms:.0f} ms; cp+fsync: {cp_sync_ms:.0f} ms",
                f"{probe_ms / cp_sync_ms:.2f}x of cp+fsync",
            )
        )
    smallest = results[0]
    for r in results:
        for mode in MODES:
            growth = max(r.rss_growth_mb[mode])  # the worst run, not the median: a bound
            baseline = "—"
            if r is not smallest:
                baseline = f"{smallest.size_bytes / 1e6:.0f} MB: {max(smallest.rss_growth_mb[mode]):.1f} MB"
            rows.append(
                Row(
                    f"Server peak RSS growth, {mode} upload of {r.size_bytes / 1e6:.0f} MB (worst run)",
                    f"{growth:.1f} MB",
                    baseline,
                    target=f"< {MAX_RSS_GROWTH_MB:.0f} MB",
                    met=growth < MAX_RSS_GROWTH_MB,
                )
            )
    uploads = sum(len(seconds) for r in results for seconds in r.seconds.values())
    rows.append(
        Row(
            f"Server RSS after all {uploads} measured uploads (leak check)",
            f"{phase.rss_after_mb:.1f} MB",
            f"before them: {phase.rss_before_mb:.1f} MB",
            f"{phase.rss_after_mb - phase.rss_before_mb:+.1f} MB",
        )
    )
    return rows
