"""A resize job's cost over bare ffmpeg, step by step, with a client polling as real ones do."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from videosvc.config import usable_cpus
from videosvc.media.probe import Toolchain

from .clips import Clip
from .media import Completed, Encoder, run_checked, service_args, service_audio_codec
from .report import Row, median
from .servers import ServiceClient, ServiceError

FFMPEG_TIMEOUT_S = 600.0
#: What `videosvc.jobs.worker.init_worker` sets for the workers, and so for their ffmpeg.
WORKER_NICENESS = 10
#: Real clients poll; each GET is work for the server while ffmpeg runs at nice 10.
POLL_S = 0.05
MAX_JOB_OVER_BARE = 1.05
#: The steps the service times (videosvc_job_step_seconds), in order.
STEPS = ("queue", "start", "handover", "spawn", "ffmpeg", "verify", "fsync", "replace", "record")


@dataclass
class Timings:
    """Wall and CPU seconds of one command over the runs."""

    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def add(self, completed: Completed) -> None:
        self.wall_s.append(completed.elapsed_s)
        self.cpu_s.append(completed.cpu_s)

    @property
    def wall(self) -> float:
        return median(self.wall_s)


@dataclass(frozen=True)
class JobCost:
    clip: Clip
    job_s: list[float]
    #: The same job, seen done by a client following the video's live stream.
    followed_s: list[float]
    #: ffmpeg's own seconds in each followed job (its step), to take out of the job's.
    followed_ffmpeg_s: list[float]
    #: Per run: seconds of each step, from the service's own metrics.
    steps: list[dict[str, float]]
    bare: Timings
    bare_niced: Timings


async def measure_job_cost(
    client: ServiceClient, tools: Toolchain, encoder: Encoder, clip: Clip, work: Path, runs: int
) -> JobCost:
    audio = await asyncio.to_thread(service_audio_codec, clip.path, tools)
    bare_cmd, _ = service_args(tools, clip.path, work / "bare", clip.size, encoder, audio, usable_cpus())
    bare, niced = Timings(), Timings()
    job_s: list[float] = []
    followed_s: list[float] = []
    followed_ffmpeg_s: list[float] = []
    steps: list[dict[str, float]] = []
    for _ in range(runs):  # interleaved, so a noisy neighbour slows every variant alike
        elapsed, timed = await _timed_job(client, clip)
        job_s.append(elapsed)
        steps.append(timed)
        before = await client.step_seconds()
        followed_s.append(await _followed_job(client, clip))
        followed_ffmpeg_s.append((await client.step_seconds())["ffmpeg"] - before.get("ffmpeg", 0.0))
        bare.add(await run_checked(bare_cmd, FFMPEG_TIMEOUT_S))
        niced.add(await run_checked(["nice", "-n", str(WORKER_NICENESS), *bare_cmd], FFMPEG_TIMEOUT_S))
    return JobCost(clip, job_s, followed_s, followed_ffmpeg_s, steps, bare, niced)


async def _timed_job(client: ServiceClient, clip: Clip) -> tuple[float, dict[str, float]]:
    """PATCH -> a GET polling every 50 ms sees it done, on a fresh upload; and the steps it took."""
    video_id = await client.upload(clip.path)
    try:
        before = await client.step_seconds()
        started = time.perf_counter()
        await client.resize(video_id, *clip.size)
        patched = time.perf_counter() - started
        info = await client.wait_until_done(video_id, FFMPEG_TIMEOUT_S, poll_s=POLL_S)
        elapsed = time.perf_counter() - started
        if not info["processingSuccess"] or (info["width"], info["height"]) != clip.size:
            raise ServiceError(f"the resize failed: {info['processingError']}")
        after = await client.step_seconds()
    finally:
        await client.delete(video_id)
    steps = {step: after.get(step, 0.0) - before.get(step, 0.0) for step in STEPS}
    return elapsed, {"patch": patched, **steps}


async def _followed_job(client: ServiceClient, clip: Clip) -> float:
    """PATCH -> the video's live stream says the job ended, on a fresh upload."""
    video_id = await client.upload(clip.path)
    try:
        async with client.events(video_id) as stream:
            events = _data(stream)
            await anext(events)  # the snapshot, sent at once
            started = time.perf_counter()
            await client.resize(video_id, *clip.size)
            async for video in events:
                job = video.get("job") or {}
                if job.get("state") in ("succeeded", "failed", "cancelled") and not video["processing"]:
                    if job["state"] != "succeeded":
                        raise ServiceError(f"the resize failed: {video['processingError']}")
                    return time.perf_counter() - started
        raise ServiceError("the live stream ended before the job did")
    finally:
        await client.delete(video_id)


async def _data(stream: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Each event's data, as JSON (the service sends one `data:` line an event)."""
    async for raw in stream.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data:"):
            yield json.loads(line.removeprefix("data:").strip())


def job_cost_rows(r: JobCost, encoder: Encoder) -> list[Row]:
    job, bare = median(r.job_s), r.bare.wall
    followed = list(zip(r.followed_s, r.followed_ffmpeg_s, strict=True))
    own = median([seen - ffmpeg for seen, ffmpeg in followed])
    own_ratio = median([seen / ffmpeg for seen, ffmpeg in followed])
    own_polled = median([seen - run["ffmpeg"] for seen, run in zip(r.job_s, r.steps, strict=True)])
    size = f"{r.clip.size[0]}x{r.clip.size[1]}"
    rows = [
        Row(
            f"Resize job {r.clip.name} → {size}, PATCH → seen done by a client polling every"
            f" {POLL_S * 1000:.0f} ms ({encoder})",
            f"{job:.2f} s",
            f"bare ffmpeg, same args: {bare:.2f} s",
            f"{job / bare:.2f}x (+{(job - bare) * 1000:.0f} ms)",
            f"≤ {MAX_JOB_OVER_BARE:.2f}x",
            job / bare <= MAX_JOB_OVER_BARE,
        ),
        Row(
            f"Resize job {r.clip.name} → {size}, PATCH → seen done by a client following /events",
            f"{median(r.followed_s):.2f} s",
            f"bare ffmpeg, same args: {bare:.2f} s",
            f"{median(r.followed_s) / bare:.2f}x (+{(median(r.followed_s) - bare) * 1000:.0f} ms)",
            f"≤ {MAX_JOB_OVER_BARE:.2f}x",
            median(r.followed_s) / bare <= MAX_JOB_OVER_BARE,
        ),
        Row(
            "Resize job: the service's own time (the job as its client saw it, less ffmpeg's run)",
            f"{own * 1000:.0f} ms",
            f"following /events; polling every {POLL_S * 1000:.0f} ms: {own_polled * 1000:.0f} ms",
            f"{own_ratio:.3f}x of ffmpeg's run",
            f"≤ {MAX_JOB_OVER_BARE:.2f}x",
            own_ratio <= MAX_JOB_OVER_BARE,
        ),
        Row(
            f"Resize: bare ffmpeg, same args, at nice {WORKER_NICENESS} like the workers",
            f"{r.bare_niced.wall:.2f} s",
            f"not niced: {bare:.2f} s",
            f"{r.bare_niced.wall / bare:.2f}x",
        ),
    ]
    for step in ("patch", *STEPS):
        value = median([run[step] for run in r.steps])
        rows.append(Row(f"Resize job step: {STEP_NAMES[step]}", f"{value * 1000:.1f} ms"))
    # The row is recorded when the last step ends; a polling client learns it at its next GET.
    seen = median([elapsed - sum(run.values()) for elapsed, run in zip(r.job_s, r.steps, strict=True)])
    rows.append(
        Row(f"Resize job step: until a GET every {POLL_S * 1000:.0f} ms sees it", f"{seen * 1000:.1f} ms")
    )
    return rows


STEP_NAMES = {
    "patch": "the PATCH, answered",
    "queue": "queue (waiting for a free worker)",
    "start": "start (the row marked running, the job's spec read)",
    "handover": "handover to the worker process and back",
    "spawn": "spawn (ffmpeg's fork and exec)",
    "ffmpeg": "ffmpeg",
    "verify": "verify (the output's moov, read in Python)",
    "fsync": "fsync of the output",
    "replace": "replace (rename over the video, fsync of the folder)",
    "record": "record (the row, the webhook outbox, the event)",
}
