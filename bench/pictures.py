"""Benchmark the pictures of a video: thumbnails on request, and the poster and storyboard job.

    python -m bench.pictures            # full run: a 10-minute 720p clip (~5 min on 2 CPUs)
    python -m bench.pictures --quick    # smoke run: a 2-minute clip, fewer samples

Two things, each against a baseline measured in the same run:

1. Thumbnails: the real service (`python -m videosvc run`, pictures on) is asked
   for the frame at random times (seeded) of a 10-minute 720p H.264 clip with a
   keyframe every 2 s, 320 wide: each time once uncached (made by ffmpeg), then
   again (from the cache). Interleaved with each, bare ffmpeg run by hand with the
   same picture (`-ss T -i ... -frames:v 1`, `thumbnail_args`). p50 and p95 of
   each; the ratio of the service's uncached p50 and p95 to bare ffmpeg's.
2. The pictures job (`run_pictures`, exactly what the derived lane runs: the
   poster from the first seconds, the storyboard from keyframes, the VTT) against the
   ladder job the service runs for the same upload (`build_ladder_args`: the
   rungs below the copied top one, keyframes at its segment starts).

Results go to stdout and bench/results/pictures.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp

from bench.clips import ClipsUnavailable, real_clips
from bench.hls import make_upload, post_raw
from bench.media import run_checked
from bench.report import Row, median, percentile, progress, publish_rows
from bench.servers import CONFIG_PATH, running_service, service_env
from videosvc.config import Settings, load_settings
from videosvc.jobs.contract import JobFiles, LadderJob, LadderRung
from videosvc.jobs.ladder import build_ladder_args
from videosvc.jobs.pictures import run_pictures
from videosvc.media.ladder import plan
from videosvc.media.probe import InputLimits, MediaInfo, Toolchain, inspect_upload
from videosvc.media.toolchain import inspect_toolchain
from videosvc.videos.pictures import pictures_job

MAX_UNCACHED_P95_MS = 250.0
MAX_CACHED_P95_MS = 10.0
MAX_OVER_BARE = 1.2
MAX_PICTURES_OVER_LADDER = 0.05
WIDTH = 320
TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Plan:
    clip_s: float
    thumbnails: int
    job_runs: int


FULL = Plan(clip_s=600, thumbnails=40, job_runs=3)
QUICK = Plan(clip_s=120, thumbnails=10, job_runs=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pictures", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 2-minute clip, fewer samples")
    parser.add_argument(
        "--ffmpeg",
        metavar="PATH",
        help="the ffmpeg for the service and the bare runs (default: as the service finds it)",
    )
    parser.add_argument(
        "--thumbnails-only", action="store_true", help="skip the pictures job against its ladder"
    )
    args = parser.parse_args(argv)
    try:
        plan_ = QUICK if args.quick else FULL
        if args.thumbnails_only:
            plan_ = Plan(plan_.clip_s, plan_.thumbnails, job_runs=0)
        return asyncio.run(_main(plan_, args.ffmpeg))
    except ClipsUnavailable as e:
        print(f"bench: {e}", file=sys.stderr)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted", file=sys.stderr)
    return 1


async def _main(plan_: Plan, ffmpeg: str | None = None) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="videosvc-bench-pictures-") as name:
        tmp = Path(name)
        env = service_env(tmp / "data", 2) | {"VIDEOSVC_PICTURES_ENABLED": "true"}
        if ffmpeg:
            env["VIDEOSVC_FFMPEG_PATH"] = ffmpeg
        settings = load_settings(CONFIG_PATH, env=env)
        tools = (await asyncio.to_thread(inspect_toolchain, settings.ffmpeg)).tools
        clips = {clip.name: clip.path for clip in await asyncio.to_thread(real_clips)}
        progress(f"input: {plan_.clip_s:g} s of 720p H.264 (bigbuckbunny), a keyframe every 2 s")
        (tmp / "inputs").mkdir()
        clip = await make_upload(tools.ffmpeg, clips["bigbuckbunny"], tmp / "inputs", plan_.clip_s)
        limits = InputLimits(settings.uploads.max_input_pixels, settings.uploads.max_input_streams)
        info = await asyncio.to_thread(inspect_upload, str(clip), tools, limits)

        rows = await thumbnails_part(plan_, env, clip, info.duration_s or plan_.clip_s, tools, tmp)
        if plan_.job_runs:
            rows += await job_part(plan_, settings, clip, info, tools, tmp)
    details = f"{plan_.clip_s:g} s clip, ffmpeg: {tools.ffmpeg}"
    publish_rows("videosvc pictures benchmark", details, rows, "pictures.md", started)
    return 0


async def thumbnails_part(
    plan_: Plan, env: dict[str, str], clip: Path, duration: float, tools: Toolchain, tmp: Path
) -> list[Row]:
    rng = random.Random(20261203)
    times = sorted({round(rng.uniform(0, duration - 1), 1) for _ in range(plan_.thumbnails * 2)})
    rng.shuffle(times)
    times = times[: plan_.thumbnails]
    uncached, cached, bare = [], [], []
    async with running_service(env, tmp / "service.log") as server, aiohttp.ClientSession() as session:
        video_id, _ = await post_raw(session, server.base_url, clip)
        progress("waiting for the upload's pictures (so that nothing runs beside the measurement)")
        while True:
            async with session.get(f"{server.base_url}/file/{video_id}/") as r:
                state = (await r.json())["pictures"]["state"]
            if state in ("ready", "failed"):
                break
            await asyncio.sleep(0.2)
        original = Path(env["VIDEOSVC_DATA_DIR"]) / "originals" / f"{video_id}.mp4"
        progress(f"thumbnails: {len(times)} times, each uncached, cached and bare, interleaved")
        for index, t in enumerate(times):
            url = f"{server.base_url}/file/{video_id}/thumbnail.jpg?time={t}&width={WIDTH}"
            bare_run = thumbnail_args(tools, original, t, WIDTH, tmp / f"bare-{index}.jpg")
            if index % 2:  # the order turns, so neither side always runs on a warmer cache
                bare.append(await _timed_command(bare_run))
                uncached.append(await _timed_get(session, url))
            else:
                uncached.append(await _timed_get(session, url))
                bare.append(await _timed_command(bare_run))
            cached.append(await _timed_get(session, url))
    p95 = {name: percentile(values, 95) for name, values in (("u", uncached), ("c", cached), ("b", bare))}
    p50 = {name: median(values) for name, values in (("u", uncached), ("c", cached), ("b", bare))}
    return [
        Row(
            f"Thumbnail at a random time of {duration / 60:.0f} min of 720p (a keyframe every 2 s),"
            f" {WIDTH} px, uncached: p95",
            f"{p95['u']:.0f} ms (p50 {p50['u']:.0f})",
            f"bare ffmpeg, same args: p95 {p95['b']:.0f} ms (p50 {p50['b']:.0f})",
            f"{p95['u'] / p95['b']:.2f}x p95, {p50['u'] / p50['b']:.2f}x p50",
            f"< {MAX_UNCACHED_P95_MS:.0f} ms, ≤ {MAX_OVER_BARE}x",
            p95["u"] < MAX_UNCACHED_P95_MS and p95["u"] / p95["b"] <= MAX_OVER_BARE,
        ),
        Row(
            "Thumbnail, the same again (from the cache): p95",
            f"{p95['c']:.1f} ms (p50 {p50['c']:.1f})",
            "—",
            "—",
            f"< {MAX_CACHED_P95_MS:.0f} ms",
            p95["c"] < MAX_CACHED_P95_MS,
        ),
    ]


def thumbnail_args(tools: Toolchain, source: Path, time_s: float, width: int, output: Path) -> list[str]:
    """The ffmpeg command for the picture the service makes: the frame at or after the time
    (an accurate seek), `width` wide, JPEG at qscale 3; ffmpeg's own choice of threads."""
    return [
        tools.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-ss", f"{time_s:.1f}", "-i", str(source),
        "-map", "0:v:0", "-vf", f"scale={width}:-2,setsar=1", "-frames:v", "1", "-update", "1",
        "-q:v", "3", "-f", "image2", "-y", str(output),
    ]  # fmt: skip


async def _timed_get(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} -> {response.status}")
    return (time.perf_counter() - started) * 1000


async def _timed_command(args: list[str]) -> float:
    started = time.perf_counter()
    await run_checked(args, 60)
    return (time.perf_counter() - started) * 1000


async def job_part(
    plan_: Plan, settings: Settings, clip: Path, info: MediaInfo, tools: Toolchain, tmp: Path
) -> list[Row]:
    """The pictures job against the ladder job the service runs for this upload."""
    the_plan = plan(info, settings.hls.hls_ladder, settings.hls.hls_segment_s)
    below = the_plan.rungs[1:] if the_plan.copy_first else the_plan.rungs
    ladder_dir = tmp / "ladder"
    ladder_files = JobFiles(ladder_dir / "job")
    ladder_files.directory.mkdir(parents=True)
    ladder = LadderJob(
        source=str(clip),
        directory=str(ladder_files.directory),
        output=str(ladder_dir / "out"),
        rungs=tuple(LadderRung(f"v{i + 1}", r.width, r.height, r.maxrate) for i, r in enumerate(below)),
        audio=False,  # the copy carries the audio
        segment_s=settings.hls.hls_segment_s,
        keyframes_at=(),
        tools=tools,
        x264_preset=settings.ffmpeg.x264_preset,
        x264_crf=settings.ffmpeg.x264_crf,
        timeout_s=0,
        max_memory_bytes=0,
    )
    pictures_files = JobFiles(tmp / "pictures" / "job")
    pictures_files.directory.mkdir(parents=True)
    pictures = pictures_job(
        settings, info, clip, pictures_files.directory, tmp / "pictures" / "out", tools, False
    )
    ladder_s, pictures_s = [], []
    rungs = ", ".join(f"{r.width}x{r.height}" for r in below)
    for run in range(plan_.job_runs):
        progress(f"jobs: run {run + 1} of {plan_.job_runs}: the ladder ({rungs}), then the pictures")
        for path in (ladder_dir / "out", tmp / "pictures" / "out"):
            for folder in [path, *(path / f"v{i + 1}" for i in range(len(below)))]:
                folder.mkdir(parents=True, exist_ok=True)
        ladder_s.append(await _timed_command_s(build_ladder_args(ladder, ladder_files)))
        started = time.perf_counter()
        made = await asyncio.to_thread(run_pictures, pictures)
        if made.error:
            raise RuntimeError(f"the pictures job failed: {made.error}")
        pictures_s.append(time.perf_counter() - started)
    decoded = "keyframes only" if pictures.keyframes_only else "every frame"
    tiles = f"{pictures.count} tiles every {pictures.interval_s:g} s, from {decoded}"
    return [
        Row(
            f"Pictures job (poster, storyboard: {tiles}) of {(info.duration_s or 0) / 60:.0f} min of 720p",
            f"{median(pictures_s):.2f} s",
            f"its ladder ({rungs}): {median(ladder_s):.1f} s",
            f"{median(pictures_s) / median(ladder_s):.3f}x",
            f"≤ {MAX_PICTURES_OVER_LADDER}x",
            median(pictures_s) / median(ladder_s) <= MAX_PICTURES_OVER_LADDER,
        )
    ]


async def _timed_command_s(args: list[str]) -> float:
    started = time.perf_counter()
    await run_checked(args, TIMEOUT_S)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
