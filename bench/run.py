"""Benchmark videosvc against bare ffmpeg, `cp` and a trivial aiohttp app.

    python -m bench.run            # full run: real clips + a 10 s pattern, 100 MB + 400 MB uploads, 3 runs
    python -m bench.run --quick    # smoke run: small inputs, 1 run
    python -m bench.run --sweep    # x264 preset/CRF candidates per clip, against ffmpeg's defaults

Real clips are fetched once (bench/clips.py says from where); the other inputs
are generated with ffmpeg in a temporary directory. The real service, with
its default settings (the access log on), runs as a subprocess on 127.0.0.1
with a temporary data directory. Results go to stdout and to bench/results/
(latest.md, or sweep.md). Every server and temporary file is removed on the
way out, on error and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    # `python bench/run.py`: import `bench` as a package, not its files as top-level modules.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp

from bench.api import api_rows, measure_api
from bench.batch import batch_rows, measure_batch
from bench.clips import Clip, ClipsUnavailable, real_clips
from bench.load import LoadSpec
from bench.logcost import Target, log_cost_rows, measure_log_cost
from bench.media import Encoder, make_clip, make_looped
from bench.quality import CANDIDATES, measure_quality, quality_rows, quality_table
from bench.read import catalogue_rows, download_rows, fill_catalogue, measure_catalogue, measure_downloads
from bench.report import RESULTS_DIR, Row, git_head, progress, publish, render_table
from bench.resize import job_cost_rows, measure_job_cost
from bench.servers import (
    CONFIG_PATH,
    Server,
    ServiceClient,
    running_service,
    running_trivial,
    service_env,
)
from bench.tus import measure_tus, tus_rows
from bench.upload import measure_uploads, upload_rows
from videosvc.config import load_settings
from videosvc.media.probe import Toolchain
from videosvc.media.toolchain import inspect_toolchain

WORKERS = 2
INPUT_TIMEOUT_S = 600.0
MB = 1_000_000
#: Under the temporary directory; "data" is the service's own.
WORK_FOLDERS = ("inputs", "resize", "upload", "quality", "batch")  # "catalogue" is made by fill_catalogue


@dataclass(frozen=True)
class Plan:
    clip_s: float
    small_bytes: int
    large_bytes: int
    runs: int
    load: LoadSpec
    #: The whole benchmark stops after this long, whatever it is doing.
    deadline_s: float
    #: Videos in the catalogue that pages are read from.
    catalogue_videos: int = 10_000


FULL = Plan(
    clip_s=10,
    small_bytes=100 * MB,
    large_bytes=400 * MB,
    runs=3,
    load=LoadSpec(duration_s=5),
    deadline_s=3600,
)
QUICK = Plan(
    clip_s=3,
    small_bytes=10 * MB,
    large_bytes=40 * MB,
    runs=1,
    load=LoadSpec(duration_s=2),
    deadline_s=900,
    catalogue_videos=1000,
)


@dataclass(frozen=True)
class Inputs:
    clip: Path
    #: Big files for uploads: the second shows whether memory stays flat.
    small: Path
    large: Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="Benchmark videosvc.")
    parser.add_argument("--quick", action="store_true", help="small inputs and 1 run: a smoke test")
    parser.add_argument("--runs", type=int, help="runs per measurement (default: 3, or 1 with --quick)")
    parser.add_argument("--sweep", action="store_true", help="run the x264 preset/CRF sweep instead")
    parser.add_argument(
        "--no-real-clips", action="store_true", help="measure on the synthetic clip only (no pip download)"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        plan = replace(plan, runs=args.runs)
    try:
        return asyncio.run(_main(plan, args.sweep, not args.no_real_clips))
    except ClipsUnavailable as e:
        print(f"bench: {e}", file=sys.stderr)
    except TimeoutError:
        print(f"bench: stopped after the {plan.deadline_s:g} s limit", file=sys.stderr)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; servers and temporary files were removed", file=sys.stderr)
    return 1


async def _main(plan: Plan, sweep: bool, real: bool) -> int:
    # SIGTERM cancels the run like Ctrl-C does, so every `finally` still runs.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    async with asyncio.timeout(plan.deadline_s):
        with tempfile.TemporaryDirectory(prefix="videosvc-bench-") as tmp_name:
            tmp = Path(tmp_name)
            for folder in WORK_FOLDERS:
                (tmp / folder).mkdir()
            env = service_env(tmp / "data", WORKERS)
            # The settings the service will run with: the bare baseline must use the same.
            settings = load_settings(CONFIG_PATH, env=env)
            toolchain = await asyncio.to_thread(inspect_toolchain, settings.ffmpeg)
            tools = toolchain.tools
            encoder = Encoder(settings.ffmpeg.x264_preset, settings.ffmpeg.x264_crf)
            inputs = await make_inputs(tools.ffmpeg, plan, tmp / "inputs", with_big_files=not sweep)
            clips = await asyncio.to_thread(real_clips) if real else []
            clips.append(Clip("testsrc2", "synthetic", inputs.clip, (640, 360)))
            context = describe_run(plan, encoder, inputs, clips, toolchain.ffmpeg_version)
            encoders = [*CANDIDATES, *([] if encoder in CANDIDATES else [encoder])] if sweep else [encoder]
            progress(
                f"quality: {len(encoders)} encoder(s) x {len(clips)} clip(s) vs defaults, {plan.runs} run(s)"
            )
            points = await measure_quality(tools, clips, encoders, tmp / "quality", plan.runs)
            if sweep:
                publish(context + "\n\n" + quality_table(points, encoder), "sweep.md")
            else:
                rows = quality_rows(points, encoder)
                rows += await measure_service(plan, env, tmp, tools, encoder, inputs, clips[0])
                rows += await measure_catalogue_service(plan, tmp, inputs.clip)
                tables = render_table(rows) + "\n\n## Per clip\n\n" + quality_table(points, encoder)
                publish(context + "\n\n" + tables, "latest.md")
    return 0


async def make_inputs(ffmpeg: str, plan: Plan, folder: Path, with_big_files: bool) -> Inputs:
    inputs = Inputs(folder / "clip.mp4", folder / "small.mp4", folder / "large.mp4")
    progress(f"inputs: {plan.clip_s:g} s 1280x720 clip")
    await make_clip(ffmpeg, inputs.clip, plan.clip_s, INPUT_TIMEOUT_S)
    if with_big_files:
        progress(f"inputs: {plan.small_bytes // MB} MB and {plan.large_bytes // MB} MB files by stream copy")
        await make_looped(ffmpeg, inputs.clip, inputs.small, plan.small_bytes, INPUT_TIMEOUT_S)
        await make_looped(ffmpeg, inputs.clip, inputs.large, plan.large_bytes, INPUT_TIMEOUT_S)
    return inputs


async def measure_service(
    plan: Plan, env: dict[str, str], tmp: Path, tools: Toolchain, encoder: Encoder, inputs: Inputs, film: Clip
) -> list[Row]:
    log_path = tmp / "service.log"
    try:
        async with running_service(env, log_path) as server, aiohttp.ClientSession() as session:
            return await _measure_running_service(plan, server, session, tmp, tools, encoder, inputs, film)
    finally:
        # Kept for reading: what the service said while it was measured (its access log included).
        RESULTS_DIR.mkdir(exist_ok=True)
        if log_path.exists():
            shutil.copyfile(log_path, RESULTS_DIR / "service.log")


async def _measure_running_service(
    plan: Plan,
    server: Server,
    session: aiohttp.ClientSession,
    tmp: Path,
    tools: Toolchain,
    encoder: Encoder,
    inputs: Inputs,
    film: Clip,
) -> list[Row]:
    client = ServiceClient(session, server.base_url)
    progress(f"resize: a job on {film.name} vs bare ffmpeg, step by step, {2 * plan.runs} run(s)")
    # A job is short and ffmpeg's time varies: twice the runs of the rest.
    cost = await measure_job_cost(client, tools, encoder, film, tmp / "resize", 2 * plan.runs)
    progress(f"batch: 8 jobs on {WORKERS} workers vs hand-run ffmpeg batches, {plan.runs} run(s)")
    batch = await measure_batch(client, tools, encoder, film, WORKERS, tmp / "batch", plan.runs)
    progress(f"upload: raw and multipart vs cp, {plan.runs} run(s)")
    uploads = await measure_uploads(
        client,
        server.pid,
        [inputs.small, inputs.large],
        inputs.clip,
        tmp / "upload",
        plan.runs,
        tools.ffprobe,
    )
    progress(f"api: GET under load, idle and with {WORKERS} busy workers, {plan.runs} run(s)")
    video_id = await client.upload(inputs.clip)
    async with running_trivial(tmp / "trivial.log", files=inputs.large.parent) as trivial:
        api = await measure_api(
            client, trivial.base_url, video_id, inputs.small, WORKERS, plan.load, plan.runs
        )
        progress(f"log: GET with and without the access log, and trivially, {plan.runs} run(s)")
        quiet_env = service_env(tmp / "data-quiet", WORKERS) | {"VIDEOSVC_LOG_LEVEL": "WARNING"}
        async with running_service(quiet_env, tmp / "quiet.log") as quiet:
            quiet_id = await ServiceClient(session, quiet.base_url).upload(inputs.clip)
            log_cost = await measure_log_cost(
                [
                    Target("default", client.file_url(video_id), server.pid),
                    Target("no access log", f"{quiet.base_url}/file/{quiet_id}/", quiet.pid),
                    Target("trivial", f"{trivial.base_url}/file/{video_id}/", trivial.pid),
                ],
                plan.load,
                plan.runs,
            )
        progress(f"read: downloads of {inputs.large.stat().st_size // MB} MB vs cp, {plan.runs} run(s)")
        downloads = await measure_downloads(
            client, server.pid, trivial.base_url, inputs.large, tmp / "upload", plan.runs
        )
    progress(f"tus: {inputs.large.stat().st_size // MB} MB in 8 MB chunks vs POST, {plan.runs} run(s)")
    resumable = await measure_tus(client, server.pid, inputs.large, tmp / "upload", plan.runs)
    return [
        *job_cost_rows(cost, encoder),
        *batch_rows(batch),
        *upload_rows(uploads),
        *tus_rows(resumable),
        *api_rows(api, plan.load),
        *log_cost_rows(log_cost),
        *download_rows(downloads),
    ]


async def measure_catalogue_service(plan: Plan, tmp: Path, clip: Path) -> list[Row]:
    """Its own service, on a data dir of `catalogue_videos` videos made directly."""
    data_dir = tmp / "catalogue"
    progress(f"read: catalogue of {plan.catalogue_videos} videos (filling the data dir)")
    await asyncio.to_thread(fill_catalogue, data_dir, clip, plan.catalogue_videos)
    async with running_service(service_env(data_dir, WORKERS), tmp / "catalogue.log") as server:
        results = await measure_catalogue(server.base_url, plan.catalogue_videos)
    return catalogue_rows(results, plan.catalogue_videos)


def describe_run(plan: Plan, encoder: Encoder, inputs: Inputs, clips: list[Clip], ffmpeg_version: str) -> str:
    """What the numbers were measured on, since this machine is shared and noisy."""
    files = [p for p in (inputs.clip, inputs.small, inputs.large) if p.exists()]
    sizes = ", ".join(f"{p.name} {p.stat().st_size / MB:.0f} MB" for p in files)
    return "\n".join(
        [
            f"# videosvc benchmark, {datetime.now().isoformat(timespec='seconds')}",
            "",
            f"- commit {git_head()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
            f"- service: {WORKERS} workers, x264 {encoder}; medians of {plan.runs} run(s), interleaved",
            f"- inputs: {plan.clip_s:g} s 1280x720 H.264+AAC clip; {sizes}",
            f"- clips: {', '.join(f'{c.name} ({c.kind})' for c in clips)}; their sources: bench/clips.py",
            f"- {ffmpeg_version}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
