"""Upload throughput against `cp` on the same disk, and the server's memory while it receives."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .media import run_checked
from .report import Row, median
from .rss import RssSampler
from .servers import ServiceClient, ServiceError

MODES = ("raw", "multipart")
CP_TIMEOUT_S = 600.0
CURL_TIMEOUT_S = 900.0

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
    rss_growth_mb: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})

    def mb_per_s(self, seconds: list[float]) -> float:
        return self.size_bytes / 1e6 / median(seconds)


async def measure_uploads(
    client: ServiceClient, server_pid: int, files: list[Path], warmup: Path, work: Path, runs: int
) -> list[UploadResults]:
    work.mkdir(parents=True, exist_ok=True)
    # First uploads allocate once-only things (imports, buffers); they are not growth per upload.
    for mode in MODES:
        await client.delete(await client.upload(warmup, multipart=mode == "multipart"))

    results = [UploadResults(path.stat().st_size) for path in files]
    for _ in range(runs):
        for path, result in zip(files, results, strict=True):
            cp_s, sync_s = await _timed_cp(path, work / "copy")
            result.cp_s.append(cp_s)
            result.cp_fsync_s.append(cp_s + sync_s)
            for mode in MODES:
                seconds, growth_mb = await _timed_upload(client, server_pid, path, mode)
                result.seconds[mode].append(seconds)
                result.rss_growth_mb[mode].append(growth_mb)
    return results


async def _timed_cp(source: Path, target: Path) -> tuple[float, float]:
    try:
        cp = await run_checked(["cp", str(source), str(target)], CP_TIMEOUT_S)
        sync = await run_checked(["sync", str(target)], CP_TIMEOUT_S)
    finally:
        target.unlink(missing_ok=True)
    return cp.elapsed_s, sync.elapsed_s


async def _timed_upload(client: ServiceClient, server_pid: int, path: Path, mode: str) -> tuple[float, float]:
    """Seconds until the service answered (stored, probed, fsynced), and its peak RSS growth."""
    with RssSampler(server_pid) as rss:
        seconds, video_id = await _curl_upload(client.base_url, path, mode)
    await client.delete(video_id)
    return seconds, rss.growth_mb


async def _curl_upload(base_url: str, path: Path, mode: str) -> tuple[float, str]:
    """POST with curl, streamed from the file; curl's own timing, without its start-up.

    curl, not aiohttp: a Python client would take CPU from the server on
    these two cores and measure itself as much as the service.
    """
    if mode == "multipart":
        body = ["-F", f"file=@{path};type=video/mp4", f"{base_url}/file/"]
    else:
        # -T streams the file; curl appends its name to a URL ending in "/", so the alias without one.
        body = ["-T", str(path), "-X", "POST", "-H", "Content-Type: video/mp4", f"{base_url}/file?filename={path.name}"]
    completed = await run_checked(
        ["curl", "--silent", "--show-error", "--max-time", str(int(CURL_TIMEOUT_S)), "-H", "Expect:",
         "--write-out", "\n%{http_code} %{time_total}", *body],
        CURL_TIMEOUT_S + 10,
    )  # fmt: skip
    response, _, status_line = completed.stdout.rpartition("\n")
    status, seconds = status_line.split()
    if status != "200":
        raise ServiceError(f"upload of {path.name} ({mode}) -> {status}: {response[:300]}")
    return float(seconds), str(json.loads(response)["id"])


def upload_rows(results: list[UploadResults]) -> list[Row]:
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
    smallest = results[0]
    for r in results:
        for mode in MODES:
            growth = max(r.rss_growth_mb[mode])  # the worst run, not the median: a bound
            baseline = "—" if r is smallest else f"{smallest.size_bytes / 1e6:.0f} MB: {max(smallest.rss_growth_mb[mode]):.1f} MB"
            rows.append(
                Row(
                    f"Server peak RSS growth, {mode} upload of {r.size_bytes / 1e6:.0f} MB (worst run)",
                    f"{growth:.1f} MB",
                    baseline,
                    target=f"< {MAX_RSS_GROWTH_MB:.0f} MB",
                    met=growth < MAX_RSS_GROWTH_MB,
                )
            )
    return rows
