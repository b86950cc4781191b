"""Resumable uploads: a tus upload in 8 MB chunks against the same file through POST /file/.

Both are sent by curl (one process per tus chunk, from chunk files cut
beforehand), so the client costs the same on both sides of the ratio. The
resume cost is measured by dropping a connection halfway through the chunk
that holds the file's middle, then asking HEAD where to resume: the bytes
sent again are those the server had not kept.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .media import run_checked
from .report import Row, median
from .rss import RssSampler
from .servers import HOST, ServiceClient, curl_upload

CHUNK_BYTES = 8 * 1024**2
MIN_TUS_VS_POST = 0.8
MAX_RSS_GROWTH_MB = 50.0
TIMEOUT_S = 900.0
TUS = ["-H", "Tus-Resumable: 1.0.0"]


@dataclass
class TusResults:
    size_bytes: int
    tus_s: list[float] = field(default_factory=list)
    post_s: list[float] = field(default_factory=list)
    rss_growth_mb: list[float] = field(default_factory=list)
    #: After a drop at 50%: bytes the client had sent that the server had not kept.
    resent_bytes: list[int] = field(default_factory=list)


async def _curl(*args: str) -> str:
    completed = await run_checked(["curl", "--silent", "--show-error", "--fail", *args], TIMEOUT_S)
    return completed.stdout


async def _create(base_url: str, size: int) -> str:
    headers = await _curl("-X", "POST", *TUS, "-H", f"Upload-Length: {size}", "-D", "-", "-o", "/dev/null",
                          f"{base_url}/uploads/")  # fmt: skip
    for line in headers.splitlines():
        if line.lower().startswith("location:"):
            return line.split(":", 1)[1].strip().rsplit("/", 1)[1]
    raise RuntimeError(f"no Location in {headers!r}")


async def _patch(base_url: str, upload_id: str, offset: int, chunk: Path) -> None:
    await _curl("-X", "PATCH", *TUS, "-H", "Content-Type: application/offset+octet-stream",
                "-H", f"Upload-Offset: {offset}", "-H", "Expect:", "-T", str(chunk), "-o", "/dev/null",
                f"{base_url}/uploads/{upload_id}")  # fmt: skip


async def _patch_all(base_url: str, upload_id: str, chunks: list[Path]) -> None:
    """Every chunk in one curl: one PATCH each, on one kept-alive connection, as tus clients do."""
    args: list[str] = []
    for index, chunk in enumerate(chunks):
        if index:
            args.append("--next")
        args += ["-X", "PATCH", *TUS, "-H", "Content-Type: application/offset+octet-stream",
                 "-H", f"Upload-Offset: {index * CHUNK_BYTES}", "-H", "Expect:", "-T", str(chunk),
                 "-o", "/dev/null", "--fail", f"{base_url}/uploads/{upload_id}"]  # fmt: skip
    await _curl(*args)


async def _offset(base_url: str, upload_id: str) -> int:
    headers = await _curl("-I", *TUS, f"{base_url}/uploads/{upload_id}")
    for line in headers.splitlines():
        if line.lower().startswith("upload-offset:"):
            return int(line.split(":", 1)[1])
    raise RuntimeError(f"no Upload-Offset in {headers!r}")


def _cut(path: Path, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    chunks: list[Path] = []
    with open(path, "rb") as source:
        while data := source.read(CHUNK_BYTES):
            chunk = folder / f"{len(chunks):05d}"
            chunk.write_bytes(data)
            chunks.append(chunk)
    return chunks


async def measure_tus(
    client: ServiceClient, server_pid: int, path: Path, work: Path, runs: int
) -> TusResults:
    size = (await asyncio.to_thread(path.stat)).st_size
    chunks = await asyncio.to_thread(_cut, path, work / "chunks")
    results = TusResults(size)
    base = client.base_url
    for _ in range(runs):
        seconds, video_id = await curl_upload(base, path, multipart=False)
        results.post_s.append(seconds)
        await client.delete(video_id)
        with RssSampler(server_pid) as rss:
            started = time.perf_counter()
            upload_id = await _create(base, size)
            await _patch_all(base, upload_id, chunks)
            results.tus_s.append(time.perf_counter() - started)
        results.rss_growth_mb.append(rss.growth_mb)
        await client.delete(upload_id)
        results.resent_bytes.append(await _resend_after_a_drop(base, chunks, size))
    return results


async def _resend_after_a_drop(base_url: str, chunks: list[Path], size: int) -> int:
    """Upload to the middle chunk, send half of it on a raw connection, drop it; how much is lost?"""
    upload_id = await _create(base_url, size)
    middle = (size // 2) // CHUNK_BYTES
    for index in range(middle):
        await _patch(base_url, upload_id, index * CHUNK_BYTES, chunks[index])
    data = await asyncio.to_thread(chunks[middle].read_bytes)
    port = int(urllib.parse.urlsplit(base_url).port or 80)
    _, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        f"PATCH /uploads/{upload_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {middle * CHUNK_BYTES}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data[: len(data) // 2]
    )
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.transport.abort()  # the network drops
    await asyncio.sleep(0.5)
    sent = middle * CHUNK_BYTES + len(data) // 2
    kept = await _offset(base_url, upload_id)
    await _curl("-X", "DELETE", *TUS, f"{base_url}/uploads/{upload_id}")
    return sent - kept


def tus_rows(results: TusResults) -> list[Row]:
    mb = results.size_bytes / 1e6
    tus = mb / median(results.tus_s)
    post = mb / median(results.post_s)
    growth = max(results.rss_growth_mb)
    resent = max(results.resent_bytes)
    return [
        Row(
            f"tus upload of {mb:.0f} MB in {CHUNK_BYTES // 2**20} MB chunks (MB/s)",
            f"{tus:.0f} MB/s",
            f"POST /file/ raw, same file: {post:.0f} MB/s",
            f"{tus / post:.2f}x",
            f"≥ {MIN_TUS_VS_POST}x",
            tus / post >= MIN_TUS_VS_POST,
        ),
        Row(
            "Server peak RSS growth during the tus upload (worst run)",
            f"{growth:.1f} MB",
            target=f"< {MAX_RSS_GROWTH_MB:.0f} MB",
            met=growth < MAX_RSS_GROWTH_MB,
        ),
        Row(
            "tus resume after a drop at 50%: bytes sent again (worst run)",
            f"{resent / 1e6:.2f} MB",
            f"one chunk: {CHUNK_BYTES / 1e6:.1f} MB",
            f"{resent / CHUNK_BYTES:.2f} chunks",
            "≤ 1 chunk",
            resent <= CHUNK_BYTES,
        ),
    ]
