"""The Dask backend against the local pool, on the same machine: what the cluster costs per job.

    python -m bench.backends            # 5 runs; about two minutes
    python -m bench.backends --quick    # 1 run

A real scheduler and two real workers (one thread each) run on loopback as
processes of their own, as the local pool has two worker processes: the same
CPUs, so only the overhead of going through Dask shows (not the gain of more
machines). Per job: PATCH → done for a 5 s 1280x720 clip resized to 640x360.
Batch: 8 jobs queued at once, until the last is done. The backends are
measured alternately, so a noisy moment hurts each alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp

from bench.media import make_clip
from bench.report import Row, median, progress, publish, render_table
from bench.servers import HOST, ServiceClient, free_port, running_service, service_env

DASK = str(Path(sys.executable).with_name("dask"))
MAX_DASK_OVER_LOCAL = 1.05
BATCH = 8
JOB_TIMEOUT_S = 600.0


@contextlib.asynccontextmanager
async def dask_cluster(folder: Path, workers: int) -> AsyncIterator[str]:
    port = free_port()
    address = f"tcp://{HOST}:{port}"
    processes = []

    def spawn(name: str, args: list[str]) -> None:
        with open(folder / f"{name}.log", "wb") as log:
            processes.append(subprocess.Popen([DASK, *args], stdout=log, stderr=log, start_new_session=True))

    try:
        spawn("scheduler", ["scheduler", "--host", HOST, "--port", str(port), "--no-dashboard"])
        for index in range(workers):
            spawn(f"worker-{index}", ["worker", address, "--nthreads", "1", "--memory-limit", "0",
                                      "--no-dashboard", "--host", HOST])  # fmt: skip
        from distributed import Client

        for _ in range(600):
            try:
                async with Client(address, asynchronous=True, timeout=5) as client:  # type: ignore[no-untyped-call]
                    await client.wait_for_workers(workers, timeout=60)
                    break
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
        yield address
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)


async def one_job(client: ServiceClient, video_id: str, size: tuple[int, int]) -> float:
    started = time.perf_counter()
    await client.resize(video_id, *size)
    await client.wait_until_done(video_id, JOB_TIMEOUT_S)
    return time.perf_counter() - started


async def batch(client: ServiceClient, video_ids: list[str], size: tuple[int, int]) -> float:
    started = time.perf_counter()
    for video_id in video_ids:
        await client.resize(video_id, *size)
    for video_id in video_ids:
        await client.wait_until_done(video_id, JOB_TIMEOUT_S)
    return time.perf_counter() - started


async def measure(runs: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="videosvc-backends-") as name:
        tmp = Path(name)
        clip = tmp / "clip.mp4"
        await make_clip("ffmpeg", clip, 5, 300)
        single: dict[str, list[float]] = {"local": [], "dask": []}
        batches: dict[str, list[float]] = {"local": [], "dask": []}
        async with dask_cluster(tmp, workers=2) as address:
            for run in range(runs):
                for backend in ("local", "dask"):
                    env = service_env(tmp / f"data-{backend}", 2)
                    if backend == "dask":
                        env |= {"VIDEOSVC_BACKEND": "dask", "VIDEOSVC_DASK_SCHEDULER": address}
                    log = tmp / f"service-{backend}.log"
                    async with running_service(env, log) as server, aiohttp.ClientSession() as session:
                        client = ServiceClient(session, server.base_url)
                        ids = [await client.upload(clip) for _ in range(BATCH)]
                        # Alternate sizes, so no job is a no-op resize to the current size.
                        single[backend].append(
                            await one_job(client, ids[0], (640, 360) if run % 2 == 0 else (640, 352))
                        )
                        batches[backend].append(await batch(client, ids[1:] + ids[:1], (480, 270)))
                    progress(f"run {run + 1}: {backend} done")
    local_s, dask_s = median(single["local"]), median(single["dask"])
    local_b, dask_b = median(batches["local"]), median(batches["dask"])
    return [
        Row(
            "One job, 5 s 1280x720 → 640x360, PATCH → done: dask",
            f"{dask_s:.2f} s",
            f"local pool: {local_s:.2f} s",
            f"{dask_s / local_s:.2f}x",
            f"≤ {MAX_DASK_OVER_LOCAL}x",
            dask_s / local_s <= MAX_DASK_OVER_LOCAL,
        ),
        Row(
            f"{BATCH} jobs queued at once, 2 workers: dask (jobs/min)",
            f"{BATCH / dask_b * 60:.1f}/min ({dask_b:.1f} s)",
            f"local pool: {BATCH / local_b * 60:.1f}/min ({local_b:.1f} s)",
            f"{local_b / dask_b:.2f}x the local throughput",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run instead of five")
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(1 if args.quick else 5))
    table = "# videosvc: the Dask backend against the local pool (2 workers each, one machine)\n\n"
    table += render_table(rows)
    publish(table, "backends.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
