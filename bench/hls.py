"""Benchmark the HLS package (adaptive streaming) against bare ffmpeg and nginx.

    python -m bench.hls              # full run, ~10 min on 2 CPUs
    python -m bench.hls --quick      # smoke run: short inputs, 1 run
    python -m bench.hls --variants   # also per-rung encoder choices for the ladder (threads, presets)

Four things, each against a baseline measured in the same run (this machine is
shared and noisy: medians of interleaved runs, and ratios):

1. The ladder: the job's own ffmpeg command (`build_ladder_args`, exactly what
   the derived lane runs), against the same rungs as separate ffmpeg runs with
   the same settings, against the one-process ladder a person writes by hand
   (`-filter_complex split+scale`, `-var_stream_map`, default threads, same
   preset and CRF), and against its top rung alone. On ~30 s of 720p (the
   bigbuckbunny clip looped: 3 rungs) and a 1080p source made from it (scaled
   up, with film grain: 4 rungs).
2. Time to first playable: the real service (HLS on, the default ladder) is
   sent a 5-minute 720p H.264/AAC upload with a keyframe every 2 s; from the
   POST's answer to GET showing `playbackUrl` and the master playlist answering
   200, polled every 20 ms. The baseline is the stream copy (`build_copy_args`)
   run by hand on the same file.
3. Serving: requests per second for a ~1 MiB segment of a package, from
   `/file/{id}/hls/v0/...` and from nginx on loopback (root = the package's
   folder), the same aiohttp load generator for both; whole-file downloads of
   `/file/{id}/content` against nginx, with curl for both.
4. Quality: each rung's VMAF (the `imageio-ffmpeg` wheel's ffmpeg, which has
   libvmaf) against the source scaled to the rung's size, beside its bit rate,
   and beside the same rung encoded alone with ffmpeg's defaults (libx264
   medium, CRF 23), on the real short clips.

Results go to stdout and bench/results/hls.md. Servers and temporary files are
removed on the way out, on error and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp
import m3u8

from bench.clips import ClipsUnavailable, real_clips
from bench.load import LoadResult, LoadSpec, get_load
from bench.media import QUIET, CommandFailed, Completed, run_checked
from bench.report import Row, git_head, markdown_table, median, progress, publish, render_table
from bench.servers import (
    CONFIG_PATH,
    HOST,
    ServiceError,
    free_port,
    running_service,
    service_env,
)
from videosvc.config import Settings, load_settings
from videosvc.jobs.contract import JobFiles, LadderJob, LadderRung
from videosvc.jobs.ladder import AUDIO_BITRATE, build_copy_args, build_ladder_args
from videosvc.media import hls as hls_media
from videosvc.media.ladder import Rung, plan_ladder
from videosvc.media.probe import MediaInfo, Toolchain, probe
from videosvc.media.toolchain import inspect_toolchain

FFMPEG_TIMEOUT_S = 900.0
WORKERS = 2
MiB = 1024 * 1024
MB = 1_000_000

# Targets, from the issue.
MAX_LADDER_OVER_SEPARATE = 0.7
MAX_LADDER_OVER_PLAIN = 1.0
MAX_LADDER_OVER_TOP = 1.6
MAX_FIRST_PLAY_S = 2.0
MIN_SEGMENT_OVER_NGINX = 0.8
MIN_CONTENT_OVER_NGINX = 1.0
MAX_VMAF_LOSS = 1.0

#: How often a client polls GET /file/{id}/ for the first play.
POLL_S = 0.02
#: The upload's video bit rate: a 4 s segment of it is about 1 MiB (the serving test's size).
UPLOAD_VIDEO_KBPS = 2100


@dataclass(frozen=True)
class Plan:
    #: The 720p source of the ladder (the bigbuckbunny clip looped), and the 1080p one made from it.
    ladder_720_s: float
    ladder_1080_s: float
    runs: int
    #: The first-play upload's length.
    upload_s: float
    load: LoadSpec
    #: Whole-file downloads per run, from each server.
    downloads: int
    #: Real clips the VMAF of each rung is measured on.
    vmaf_clips: tuple[str, ...]
    deadline_s: float


FULL = Plan(
    ladder_720_s=30,
    ladder_1080_s=10,
    runs=3,
    upload_s=300,
    load=LoadSpec(concurrency=8, duration_s=3.0),
    downloads=3,
    vmaf_clips=("bigbuckbunny", "bikes"),
    deadline_s=2400,
)
QUICK = Plan(
    ladder_720_s=6,
    ladder_1080_s=3,
    runs=1,
    upload_s=30,
    load=LoadSpec(concurrency=8, duration_s=1.0),
    downloads=1,
    vmaf_clips=("bikes",),
    deadline_s=900,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hls", description="Benchmark videosvc's HLS.")
    parser.add_argument("--quick", action="store_true", help="short inputs and 1 run: a smoke test")
    parser.add_argument("--runs", type=int, help="runs per measurement (default: 3, or 1 with --quick)")
    parser.add_argument(
        "--variants", action="store_true", help="also time per-rung encoder choices for the ladder"
    )
    parser.add_argument(
        "--only",
        choices=("ladder", "first-play", "serving", "vmaf"),
        action="append",
        help="measure only this part (repeatable)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        plan = replace(plan, runs=args.runs)
    parts = set(args.only or ("ladder", "first-play", "serving", "vmaf"))
    try:
        return asyncio.run(_main(plan, parts, args.variants))
    except ClipsUnavailable as e:
        print(f"bench: {e}", file=sys.stderr)
    except TimeoutError:
        print(f"bench: stopped after the {plan.deadline_s:g} s limit", file=sys.stderr)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; servers and temporary files were removed", file=sys.stderr)
    return 1


async def _main(plan: Plan, parts: set[str], variants: bool) -> int:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    started = time.monotonic()
    load_before = os.getloadavg()
    async with asyncio.timeout(plan.deadline_s):
        with tempfile.TemporaryDirectory(prefix="videosvc-bench-hls-") as tmp_name:
            tmp = Path(tmp_name)
            env = service_env(tmp / "data", WORKERS) | {"VIDEOSVC_HLS_ENABLED": "true"}
            settings = load_settings(CONFIG_PATH, env=env)
            toolchain = await asyncio.to_thread(inspect_toolchain, settings.ffmpeg)
            tools = toolchain.tools
            clips = {clip.name: clip.path for clip in await asyncio.to_thread(real_clips)}
            inputs = tmp / "inputs"
            inputs.mkdir()
            rows: list[Row] = []
            tables: list[str] = []
            if "ladder" in parts:
                ladder_rows, ladder_table = await ladder_part(plan, settings, tools, clips, tmp, variants)
                rows += ladder_rows
                tables.append(ladder_table)
            if parts & {"first-play", "serving"}:
                progress(f"inputs: a {plan.upload_s:g} s 720p H.264/AAC upload, a keyframe every 2 s")
                upload = await make_upload(tools.ffmpeg, clips["bigbuckbunny"], inputs, plan.upload_s)
                if "first-play" in parts:
                    rows += await first_play_part(plan, settings, tools, upload, tmp)
                if "serving" in parts:
                    rows += await serving_part(plan, upload, tmp)
            if "vmaf" in parts:
                vmaf_rows, vmaf_table = await vmaf_part(plan, settings, tools, clips, tmp)
                rows += vmaf_rows
                tables.append(vmaf_table)
            context = describe_run(plan, settings, toolchain.ffmpeg_version, load_before, started)
            publish("\n\n".join([context, render_table(rows), *tables]), "hls.md")
    return 0


# -- 1. the ladder


@dataclass(frozen=True)
class Source:
    name: str
    path: Path
    info: MediaInfo
    rungs: tuple[Rung, ...]


@dataclass(frozen=True)
class Command:
    name: str
    #: Each run is these commands one after the other (the separate rungs), timed together.
    args: tuple[tuple[str, ...], ...]
    output: Path


async def ladder_part(
    plan: Plan,
    settings: Settings,
    tools: Toolchain,
    clips: dict[str, Path],
    tmp: Path,
    variants: bool,
) -> tuple[list[Row], str]:
    inputs, work = tmp / "inputs", tmp / "ladder"
    work.mkdir()
    progress(
        f"inputs: {plan.ladder_720_s:g} s of 720p (bigbuckbunny looped), {plan.ladder_1080_s:g} s of 1080p"
    )
    p720 = inputs / "ladder-720p.mp4"
    p1080 = inputs / "ladder-1080p.mp4"
    await make_720(tools.ffmpeg, clips["bigbuckbunny"], p720, plan.ladder_720_s)
    await make_1080(tools.ffmpeg, p720, p1080, plan.ladder_1080_s)
    sources = [
        await _source(name, path, settings, tools) for name, path in (("720p", p720), ("1080p", p1080))
    ]
    rows: list[Row] = []
    detail: list[tuple[str, ...]] = []
    for source in sources:
        # The variants on the largest ladder only: they take as long as the ladder each.
        with_variants = variants and source is sources[-1]
        commands = ladder_commands(source, settings, tools, work / source.name, with_variants)
        progress(
            f"ladder: {source.name}, {len(source.rungs)} rungs, {len(commands)} commands x {plan.runs} run(s)"
        )
        times = await interleaved(commands, plan.runs)
        rows += ladder_rows(source, times)
        detail += ladder_detail(source, commands, times)
    table = markdown_table(
        ("source", "command", "wall s (median)", "CPU s (median)", "over ours (paired median)"), detail
    )
    return rows, "## Ladder commands\n\n" + table


async def _source(name: str, path: Path, settings: Settings, tools: Toolchain) -> Source:
    info = await asyncio.to_thread(probe, str(path), tools)
    rungs = plan_ladder(info.width, info.height, settings.hls.hls_ladder, info.fps)
    return Source(name, path, info, tuple(rungs))


def ladder_job(
    source: Source, settings: Settings, tools: Toolchain, rungs: Sequence[Rung], audio: bool, folder: Path
) -> tuple[LadderJob, JobFiles]:
    """The job the derived lane would run for these rungs (as `videos.ladders` makes it)."""
    files = JobFiles(folder / "job")
    job = LadderJob(
        source=str(source.path),
        directory=str(files.directory),
        output=str(folder / "out"),
        rungs=tuple(LadderRung(f"v{i}", r.width, r.height, r.maxrate) for i, r in enumerate(rungs)),
        audio=audio,
        segment_s=settings.hls.hls_segment_s,
        keyframes_at=(),
        tools=tools,
        x264_preset=settings.ffmpeg.x264_preset,
        x264_crf=settings.ffmpeg.x264_crf,
        timeout_s=0,  # unused by build_ladder_args
        max_memory_bytes=0,
    )
    return job, files


def ours(
    source: Source, settings: Settings, tools: Toolchain, rungs: Sequence[Rung], audio: bool, folder: Path
) -> list[str]:
    job, files = ladder_job(source, settings, tools, rungs, audio, folder)
    return build_ladder_args(job, files)


def ladder_commands(
    source: Source, settings: Settings, tools: Toolchain, folder: Path, variants: bool
) -> list[Command]:
    audio = bool(source.info.audio_codecs)
    rungs = source.rungs
    ladder = ours(source, settings, tools, rungs, audio, folder / "ours")
    # The rungs one by one, with the job's own settings; the audio with the top one.
    separate = tuple(
        tuple(ours(source, settings, tools, [rung], audio and i == 0, folder / f"alone-{i}"))
        for i, rung in enumerate(rungs)
    )
    commands = [
        Command("ours (build_ladder_args)", (tuple(ladder),), folder / "ours" / "out"),
        Command(
            "plain ffmpeg ladder",
            (tuple(plain_ladder(source, settings, tools, folder / "plain")),),
            folder / "plain" / "out",
        ),
        Command("separate runs, one per rung", separate, folder / "alone-0" / "out"),
    ]
    if variants:
        commands += [
            Command(f"ours + {label}", (tuple(with_options(ladder, extra)),), folder / "ours" / "out")
            for label, extra in ladder_variants(settings, len(rungs))
        ]
    return commands


def plain_ladder(source: Source, settings: Settings, tools: Toolchain, folder: Path) -> list[str]:
    """The one-process ladder a person writes from ffmpeg's documentation: split and scale, one
    libx264 per rung with the same preset, CRF and peak rates, a fixed GOP of one segment, default threads."""
    out = folder / "out"
    n = len(source.rungs)
    graph = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n)) + ";"
    graph += ";".join(f"[s{i}]scale={r.width}:{r.height}[o{i}]" for i, r in enumerate(source.rungs))
    gop = round((source.info.fps or 25) * settings.hls.hls_segment_s)
    args = [tools.ffmpeg, *QUIET, "-i", str(source.path), "-filter_complex", graph]
    for i in range(n):
        args += ["-map", f"[o{i}]"]
    audio = bool(source.info.audio_codecs)
    if audio:
        args += ["-map", "0:a"]
    args += ["-c:v", "libx264", "-preset", settings.ffmpeg.x264_preset, "-crf", str(settings.ffmpeg.x264_crf),
             "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]  # fmt: skip
    for i, r in enumerate(source.rungs):
        args += [f"-maxrate:v:{i}", str(r.maxrate), f"-bufsize:v:{i}", str(2 * r.maxrate)]
    if audio:
        args += ["-c:a", "aac", "-b:a", AUDIO_BITRATE]
    stream_map = " ".join([f"v:{i}" for i in range(n)] + (["a:0"] if audio else []))
    args += ["-f", "hls", "-hls_time", f"{settings.hls.hls_segment_s:g}", "-hls_playlist_type", "vod",
             "-hls_segment_type", "fmp4", "-hls_segment_filename", str(out / "%v" / "seg%05d.m4s"),
             "-var_stream_map", stream_map, str(out / "%v" / "index.m3u8")]  # fmt: skip
    return args


def ladder_variants(settings: Settings, rungs: int) -> list[tuple[str, list[str]]]:
    """Per-rung encoder choices to try on the job's own command (ffmpeg's per-stream options)."""
    cpus = os.cpu_count() or 2
    lower = list(range(1, rungs))
    return [
        (f"-threads {cpus} (x264 threads per rung)", ["-threads", str(cpus)]),
        (f"-threads:v:0 {cpus}, lower rungs 1", ["-threads:v:0", str(cpus), *_each("-threads", lower, "1")]),
        ("-filter_complex_threads 1", ["-filter_complex_threads", "1"]),
        ("-rc-lookahead 10 (x264's lookahead, all rungs)", ["-rc-lookahead", "10"]),
        ("lower rungs veryfast", _each("-preset", lower, "veryfast")),
    ]


def _each(option: str, streams: Sequence[int], value: str) -> list[str]:
    return [arg for i in streams for arg in (f"{option}:v:{i}", value)]


def with_options(args: Sequence[str], extra: Sequence[str]) -> list[str]:
    """The job's command with output options added just before its output (later options win)."""
    output = next(i for i, a in enumerate(args) if a.endswith(f"%v/{hls_media.PLAYLIST}"))
    global_options = [a for a in extra if a == "-filter_complex_threads"]
    if global_options:  # a global option: before the input
        return [args[0], *extra, *args[1:]]
    return [*args[:output], *extra, *args[output:]]


@dataclass(frozen=True)
class Timed:
    elapsed_s: float
    #: User + system CPU seconds of its ffmpeg runs.
    cpu_s: float
    #: The wall time of each of its ffmpeg runs (the separate rungs: the top one first).
    parts_s: tuple[float, ...]


async def interleaved(commands: Sequence[Command], runs: int) -> list[list[Timed]]:
    """Every command once per round, in an order that turns each round (so drift hits all alike)."""
    results: list[list[Timed]] = [[] for _ in commands]
    for r in range(runs):
        order = list(range(len(commands)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for index in order:
            results[index].append(await _timed(commands[index]))
    return results


async def _timed(command: Command) -> Timed:
    parts: list[Completed] = []
    for args in command.args:
        for folder in _outputs(args):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        parts.append(await run_checked(args, FFMPEG_TIMEOUT_S))
    return Timed(
        sum(p.elapsed_s for p in parts), sum(p.cpu_s for p in parts), tuple(p.elapsed_s for p in parts)
    )


def _outputs(args: Sequence[str]) -> list[Path]:
    """The output folder of an HLS command, and its job folder (the -progress file's)."""
    found = [Path(a).parent.parent for a in args if a.endswith(f"%v/{hls_media.PLAYLIST}")]
    found += [Path(args[i + 1]).parent for i, a in enumerate(args[:-1]) if a == "-progress"]
    return found


def ladder_rows(source: Source, times: list[list[Timed]]) -> list[Row]:
    """Wall time is the target's; CPU time (every ffmpeg thread, user + system) is shown beside it,
    since on a shared machine the neighbours' load moves wall times far more than CPU times."""
    ours_t, plain_t, separate_t = times[0], times[1], times[2]
    ours_w = [t.elapsed_s for t in ours_t]
    top_w = [t.parts_s[0] for t in separate_t]
    what = f"{source.name} {source.info.duration_s or 0:.0f} s, {len(source.rungs)} rungs"
    ours_s = median(ours_w)
    r_sep = _paired(ours_w, [t.elapsed_s for t in separate_t])
    r_plain = _paired(ours_w, [t.elapsed_s for t in plain_t])
    r_top = _paired(ours_w, top_w)
    top = source.rungs[0]

    def cpu(a: list[Timed], b: list[Timed]) -> str:
        return f"; CPU {median([t.cpu_s for t in a]) / median([t.cpu_s for t in b]):.2f}x"

    return [
        Row(f"Ladder {what}: ours (one process) against the rungs as separate ffmpeg runs",
            f"{ours_s:.2f} s", f"separate: {median([t.elapsed_s for t in separate_t]):.2f} s",
            f"{r_sep:.2f}x{cpu(ours_t, separate_t)}",
            f"≤ {MAX_LADDER_OVER_SEPARATE}x", r_sep <= MAX_LADDER_OVER_SEPARATE),
        Row(f"Ladder {what}: ours against plain ffmpeg's one-process ladder",
            f"{ours_s:.2f} s", f"plain: {median([t.elapsed_s for t in plain_t]):.2f} s",
            f"{r_plain:.2f}x{cpu(ours_t, plain_t)}",
            f"≤ {MAX_LADDER_OVER_PLAIN}x", r_plain <= MAX_LADDER_OVER_PLAIN),
        Row(f"Ladder {what}: ours over its top rung alone ({top.width}x{top.height} and the audio)",
            f"{ours_s:.2f} s", f"top rung: {median(top_w):.2f} s", f"{r_top:.2f}x",
            f"≤ {MAX_LADDER_OVER_TOP}x", r_top <= MAX_LADDER_OVER_TOP),
    ]  # fmt: skip


def _paired(a: Sequence[float], b: Sequence[float]) -> float:
    """The median of the per-round ratios (each pair measured within a minute or two of each other)."""
    return median([x / y for x, y in zip(a, b, strict=True)])


def ladder_detail(
    source: Source, commands: Sequence[Command], times: list[list[Timed]]
) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    base = [t.elapsed_s for t in times[0]]
    what = f"{source.name} ({len(source.rungs)} rungs)"
    for command, runs in zip(commands, times, strict=True):
        wall = [t.elapsed_s for t in runs]
        cpu = median([t.cpu_s for t in runs])
        rows.append((what, command.name, f"{median(wall):.2f}", f"{cpu:.2f}", f"{_paired(wall, base):.2f}x"))
        if command.name.startswith("separate"):
            for i, rung in enumerate(source.rungs):
                part = [t.parts_s[i] for t in runs]
                label = f"… rung {rung.width}x{rung.height} alone" + (" (with the audio)" if i == 0 else "")
                rows.append((what, label, f"{median(part):.2f}", "—", f"{_paired(part, base):.2f}x"))
    return rows


async def make_720(ffmpeg: str, clip: Path, path: Path, seconds: float) -> None:
    """The 720p clip looped by stream copy, cut at `seconds`."""
    clip_s = float((await asyncio.to_thread(probe, str(clip), Toolchain(ffmpeg))).duration_s or 5)
    loops = max(0, int(seconds // clip_s))
    await run_checked(
        [
            ffmpeg,
            *QUIET,
            "-stream_loop",
            str(loops),
            "-i",
            str(clip),
            "-t",
            f"{seconds:g}",
            "-c",
            "copy",
            str(path),
        ],
        FFMPEG_TIMEOUT_S,
    )


async def make_1080(ffmpeg: str, source: Path, path: Path, seconds: float) -> None:
    """1080p from the 720p: scaled up, with a little temporal grain (so it is not merely smooth),
    encoded as a camera or an editor would (veryfast, CRF 21, a keyframe every 2 s)."""
    await run_checked(
        [ffmpeg, *QUIET, "-i", str(source), "-t", f"{seconds:g}",
         "-vf", "scale=1920:1080:flags=bicubic,noise=alls=3:allf=t", "-c:v", "libx264", "-preset", "veryfast",
         "-crf", "21", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "copy", str(path)],
        FFMPEG_TIMEOUT_S,
    )  # fmt: skip


# -- 2. time to first playable


async def make_upload(ffmpeg: str, clip: Path, folder: Path, seconds: float) -> Path:
    """A 720p H.264/AAC upload with a keyframe every 2 s: 10 s of the clip encoded once
    (veryfast at ~2.1 Mb/s, so a 4 s segment is ~1 MiB), then looped by stream copy."""
    base = folder / "upload-base.mp4"
    await run_checked(
        [ffmpeg, *QUIET, "-stream_loop", "1", "-i", str(clip), "-t", "10",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{UPLOAD_VIDEO_KBPS}k",
         "-maxrate", f"{UPLOAD_VIDEO_KBPS * 1.1:.0f}k", "-bufsize", f"{UPLOAD_VIDEO_KBPS}k",
         "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(base)],
        FFMPEG_TIMEOUT_S,
    )  # fmt: skip
    upload = folder / f"upload-{seconds:g}s.mp4"
    loops = max(0, int(seconds // 10) - 1)
    await run_checked(
        [ffmpeg, *QUIET, "-stream_loop", str(loops), "-i", str(base), "-t", f"{seconds:g}", "-c", "copy",
         "-movflags", "+faststart", str(upload)],
        FFMPEG_TIMEOUT_S,
    )  # fmt: skip
    return upload


@dataclass
class FirstPlay:
    #: From the POST's answer to GET showing playbackUrl, and to the master playlist answering 200.
    url_s: list[float] = dataclasses.field(default_factory=list)
    master_s: list[float] = dataclasses.field(default_factory=list)
    #: The POST itself (the upload's bytes and the service's checks), for context.
    upload_s: list[float] = dataclasses.field(default_factory=list)
    copy_s: list[float] = dataclasses.field(default_factory=list)
    copy_cold_start_s: list[float] = dataclasses.field(default_factory=list)


async def first_play_part(
    plan: Plan, settings: Settings, tools: Toolchain, upload: Path, tmp: Path
) -> list[Row]:
    size = (await asyncio.to_thread(upload.stat)).st_size
    progress(f"first play: {size / MB:.0f} MB upload, {plan.runs} run(s), vs the bare copy")
    result = FirstPlay()
    env = service_env(tmp / "data", WORKERS) | {"VIDEOSVC_HLS_ENABLED": "true"}
    copy_dir = tmp / "copy"
    async with running_service(env, tmp / "first-play.log") as server, aiohttp.ClientSession() as session:
        for _ in range(plan.runs):
            # The baseline first, by hand: the same command the service runs for the first play.
            files = JobFiles(copy_dir / "job")
            for folder in (copy_dir / "out", files.directory):
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
            args = build_copy_args(
                str(upload), str(copy_dir / "out"), True, settings.hls.hls_segment_s, tools, files
            )
            result.copy_s.append((await run_checked(args, FFMPEG_TIMEOUT_S)).elapsed_s)
            await _first_play_once(session, server.base_url, upload, result)
    return first_play_rows(result, plan, size)


async def _first_play_once(
    session: aiohttp.ClientSession, base: str, upload: Path, result: FirstPlay
) -> None:
    sent = time.perf_counter()
    video_id, answered = await post_raw(session, base, upload)
    result.upload_s.append(answered - sent)
    deadline = answered + 120
    url_seen = None
    try:
        while time.perf_counter() < deadline:
            async with session.get(f"{base}/file/{video_id}/") as response:
                info = await response.json()
            if url_seen is None and info.get("playbackUrl"):
                url_seen = time.perf_counter()
            if url_seen is not None:
                async with session.get(base + info["playbackUrl"]) as response:
                    await response.read()
                    if response.status == 200:
                        now = time.perf_counter()
                        result.url_s.append(url_seen - answered)
                        result.master_s.append(now - answered)
                        return
            await asyncio.sleep(POLL_S)
        raise ServiceError(f"video {video_id}: not playable 120 s after its upload: {info}")
    finally:
        # Stops its ladder too, so the next run is not measured beside it.
        async with session.delete(f"{base}/file/{video_id}/") as response:
            await response.read()


async def post_raw(session: aiohttp.ClientSession, base: str, path: Path) -> tuple[str, float]:
    """POST /file/ with the file as the raw body; returns the id and when the answer was read."""
    body = await asyncio.to_thread(open, path, "rb")
    try:
        async with session.post(
            f"{base}/file/?filename={path.name}",
            data=body,
            headers={"Content-Type": "video/mp4"},
            timeout=aiohttp.ClientTimeout(total=600),
        ) as response:
            text = await response.text()
            answered = time.perf_counter()
    finally:
        body.close()
    if response.status != 200:
        raise ServiceError(f"POST /file/ -> {response.status}: {text[:300]}")
    return str(json.loads(text)["id"]), answered


def first_play_rows(result: FirstPlay, plan: Plan, size: int) -> list[Row]:
    what = f"{plan.upload_s / 60:g} min 720p H.264/AAC upload ({size / MB:.0f} MB)"
    master = median(result.master_s)
    copy = median(result.copy_s)
    return [
        Row(f"First play of a {what}: POST answered → master playlist 200"
            f" (polling every {POLL_S * 1000:.0f} ms)",
            f"{master:.2f} s", f"bare stream copy (build_copy_args): {copy:.2f} s",
            f"{master / copy:.2f}x (+{(master - copy) * 1000:.0f} ms)",
            f"≤ {MAX_FIRST_PLAY_S:g} s", master <= MAX_FIRST_PLAY_S),
        Row("First play: POST answered → GET shows playbackUrl", f"{median(result.url_s):.2f} s",
            f"runs: {', '.join(f'{s:.2f}' for s in result.master_s)} s to the master playlist"),
        Row("First play: the POST itself (sending, the upload's checks)", f"{median(result.upload_s):.2f} s"),
    ]  # fmt: skip


# -- 3. serving


@dataclass
class Serving:
    segment_bytes: int = 0
    content_bytes: int = 0
    service_rps: list[float] = dataclasses.field(default_factory=list)
    nginx_rps: list[float] = dataclasses.field(default_factory=list)
    service_cpu_us: list[float] = dataclasses.field(default_factory=list)
    nginx_cpu_us: list[float] = dataclasses.field(default_factory=list)
    service_p99_ms: list[float] = dataclasses.field(default_factory=list)
    nginx_p99_ms: list[float] = dataclasses.field(default_factory=list)
    service_mbps: list[float] = dataclasses.field(default_factory=list)
    nginx_mbps: list[float] = dataclasses.field(default_factory=list)


async def serving_part(plan: Plan, upload: Path, tmp: Path) -> list[Row]:
    """On a service of its own whose ladders are refused (max_job_pixel_frames), so no encode runs
    beside the measurement: the package is the upload's stream copy (its first play)."""
    data = tmp / "data-serving"
    env = service_env(data, WORKERS) | {
        "VIDEOSVC_HLS_ENABLED": "true",
        "VIDEOSVC_MAX_JOB_PIXEL_FRAMES": "484",
    }
    result = Serving()
    async with running_service(env, tmp / "serving.log") as server, aiohttp.ClientSession() as session:
        video_id, _ = await post_raw(session, server.base_url, upload)
        await _wait_settled(session, server.base_url, video_id)
        package = data / "hls" / video_id
        segment = _segment_near_1mib(package / "v0")
        content = data / "videos" / f"{video_id}.mp4"
        result.segment_bytes = segment.stat().st_size
        result.content_bytes = content.stat().st_size
        relative = segment.relative_to(package).as_posix()
        async with running_nginx(package, content.parent, tmp / "nginx") as nginx:
            urls = {
                "service": (f"{server.base_url}/file/{video_id}/hls/{relative}", server.pid),
                "nginx": (f"{nginx.base_url}/{relative}", nginx.pid),
            }
            progress(
                f"serving: a {result.segment_bytes / MiB:.2f} MiB segment, {plan.load.concurrency}"
                f" connections x {plan.load.duration_s:g} s, service vs nginx, {plan.runs} run(s)"
            )
            for r in range(plan.runs):
                for name in ("service", "nginx") if r % 2 == 0 else ("nginx", "service"):
                    url, pid = urls[name]
                    load, cpu_s = await _load_with_cpu(url, pid, plan.load)
                    getattr(result, f"{name}_rps").append(load.rps)
                    getattr(result, f"{name}_cpu_us").append(cpu_s / load.ok * 1e6)
                    getattr(result, f"{name}_p99_ms").append(load.p99_ms)
            progress(f"serving: whole-file GET of {result.content_bytes / MB:.0f} MB with curl,"
                     f" service vs nginx, {plan.runs} run(s) of {plan.downloads}")  # fmt: skip
            content_urls = {
                "service": f"{server.base_url}/file/{video_id}/content",
                "nginx": f"{nginx.base_url}/videos/{content.name}",
            }
            for r in range(plan.runs):
                for name in ("service", "nginx") if r % 2 == 0 else ("nginx", "service"):
                    seconds = [await _curl_null(content_urls[name]) for _ in range(plan.downloads)]
                    getattr(result, f"{name}_mbps").append(result.content_bytes / MB / median(seconds))
    return serving_rows(result, plan)


async def _wait_settled(session: aiohttp.ClientSession, base: str, video_id: str) -> None:
    """Until the video's first play is listed and no rendition is queued or running."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        async with session.get(f"{base}/file/{video_id}/") as response:
            info = await response.json()
        states = {r["state"] for r in info["renditions"]}
        if info.get("playbackUrl") and not states & {"queued", "running"}:
            return
        await asyncio.sleep(0.1)
    raise ServiceError(f"video {video_id}: its package did not settle: {info['renditions']}")


def _segment_near_1mib(folder: Path) -> Path:
    segments = sorted(folder.glob("seg*.m4s"))
    if not segments:
        raise ServiceError(f"no segment in {folder}")
    return min(segments, key=lambda p: abs(p.stat().st_size - MiB))


async def _load_with_cpu(url: str, pid: int, spec: LoadSpec) -> tuple[LoadResult, float]:
    before = _group_cpu_s(pid)
    load = await get_load(url, spec)  # its warm-up counts in the CPU; the requests of it too (below)
    after = _group_cpu_s(pid)
    if load.errors:
        raise ServiceError(f"GET {url}: errors {dict(load.errors)}")
    warmup_requests = load.ok * spec.warmup_s / spec.duration_s  # about: same rate
    return load, (after - before) * load.ok / (load.ok + warmup_requests)


def _group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:  # the 5th field: the process group
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


async def _curl_null(url: str) -> float:
    done = await run_checked(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "-o",
            "/dev/null",
            "--write-out",
            "%{time_total}",
            url,
        ],
        FFMPEG_TIMEOUT_S,
    )
    return float(done.stdout.strip())


@dataclass(frozen=True)
class Nginx:
    base_url: str
    pid: int


@asynccontextmanager
async def running_nginx(root: Path, videos: Path, folder: Path) -> AsyncIterator[Nginx]:
    """nginx in the foreground on a free loopback port, its defaults but for the paths: root = the
    package, /videos/ = the stored videos; sendfile on, the access log on (like the service's)."""
    port = free_port()
    process = await asyncio.to_thread(_spawn_nginx, root, videos, folder, port)
    server = Nginx(f"http://{HOST}:{port}", process.pid)
    try:
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while True:
                if process.poll() is not None:
                    raise ServiceError(f"nginx exited with {process.returncode}; its log is in {folder}")
                try:
                    async with session.get(server.base_url + "/", timeout=aiohttp.ClientTimeout(total=2)):
                        break
                except (aiohttp.ClientError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
        yield server
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # its own group: the master and its workers
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)


def _spawn_nginx(root: Path, videos: Path, folder: Path, port: int) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    folder.mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = folder / "nginx.conf"
    config.write_text(
        f"""{user}daemon off;
worker_processes auto;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    types {{ video/mp4 mp4 m4s; application/vnd.apple.mpegurl m3u8; }}
    default_type application/octet-stream;
    access_log {folder}/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen {HOST}:{port};
        root {root};
        location /videos/ {{ alias {videos}/; }}
    }}
}}
"""
    )
    with open(folder / "stderr.log", "wb") as log:
        return subprocess.Popen(
            [nginx, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the master and its workers, stopped together
        )


def serving_rows(s: Serving, plan: Plan) -> list[Row]:
    rps, nginx_rps = median(s.service_rps), median(s.nginx_rps)
    ratio = median([a / b for a, b in zip(s.service_rps, s.nginx_rps, strict=True)])
    cpu, nginx_cpu = median(s.service_cpu_us), median(s.nginx_cpu_us)
    mbps, nginx_mbps = median(s.service_mbps), median(s.nginx_mbps)
    c_ratio = median([a / b for a, b in zip(s.service_mbps, s.nginx_mbps, strict=True)])
    return [
        Row(f"Segment GET /file/{{id}}/hls/v0/seg….m4s ({s.segment_bytes / MiB:.2f} MiB), "
            f"{plan.load.concurrency} connections (req/s)",
            f"{rps:.0f} req/s", f"nginx, same file: {nginx_rps:.0f} req/s", f"{ratio:.2f}x",
            f"≥ {MIN_SEGMENT_OVER_NGINX}x of nginx", ratio >= MIN_SEGMENT_OVER_NGINX),
        Row("Segment GET: latency p99", f"{median(s.service_p99_ms):.1f} ms",
            f"nginx: {median(s.nginx_p99_ms):.1f} ms"),
        Row("Segment GET: server CPU per request (every process of the server)", f"{cpu:.0f} µs",
            f"nginx: {nginx_cpu:.0f} µs", f"{cpu / nginx_cpu:.2f}x"),
        Row(f"Whole-file GET /file/{{id}}/content ({s.content_bytes / MB:.0f} MB),"
            " curl to /dev/null (MB/s)",
            f"{mbps:.0f} MB/s", f"nginx, same file: {nginx_mbps:.0f} MB/s", f"{c_ratio:.2f}x",
            f"≥ {MIN_CONTENT_OVER_NGINX}x of nginx", c_ratio >= MIN_CONTENT_OVER_NGINX),
    ]  # fmt: skip


# -- 4. quality


_VMAF = re.compile(r"VMAF score: ([0-9.]+)")


@dataclass(frozen=True)
class RungQuality:
    clip: str
    rung: Rung
    vmaf: float
    kbps: float
    defaults_vmaf: float
    defaults_kbps: float


async def vmaf_part(
    plan: Plan, settings: Settings, tools: Toolchain, clips: dict[str, Path], tmp: Path
) -> tuple[list[Row], str]:
    vmaf_ffmpeg = vmaf_binary()
    work = tmp / "vmaf"
    points: list[RungQuality] = []
    for name in plan.vmaf_clips:
        source = await _source(name, clips[name], settings, tools)
        progress(f"vmaf: {name}, {len(source.rungs)} rung(s): the ladder and ffmpeg's defaults per rung")
        folder = work / name
        ladder = ours(
            source, settings, tools, source.rungs, bool(source.info.audio_codecs), folder / "ladder"
        )
        await _timed(Command("ours", (tuple(ladder),), folder / "ladder" / "out"))
        for i, rung in enumerate(source.rungs):
            rendition = folder / "ladder" / "out" / f"v{i}"
            joined = folder / f"v{i}.mp4"  # init + segments: one fragmented MP4
            await asyncio.to_thread(_join, rendition, joined)
            kbps = (await asyncio.to_thread(hls_media.measure, rendition)).average_bandwidth / 1000
            defaults = folder / f"defaults-{i}.mp4"
            await run_checked(
                [tools.ffmpeg, *QUIET, "-i", str(source.path),
                 "-vf", f"scale={rung.width}:{rung.height},setsar=1", "-an", str(defaults)],
                FFMPEG_TIMEOUT_S,
            )  # fmt: skip
            duration = (await asyncio.to_thread(probe, str(defaults), tools)).duration_s or 1
            defaults_bits = (await asyncio.to_thread(defaults.stat)).st_size * 8
            ours_vmaf = await vmaf(vmaf_ffmpeg, joined, source.path, rung)
            defaults_vmaf = await vmaf(vmaf_ffmpeg, defaults, source.path, rung)
            points.append(
                RungQuality(name, rung, ours_vmaf, kbps, defaults_vmaf, defaults_bits / duration / 1000)
            )
    return vmaf_rows(points, settings), "## VMAF per rung\n\n" + vmaf_table(points, settings)


def _join(rendition: Path, joined: Path) -> None:
    """The init segment its playlist names (init_N.mp4 when there are several renditions), then
    its segments in order: one fragmented MP4."""
    playlist = m3u8.loads((rendition / hls_media.PLAYLIST).read_text(encoding="utf-8"))
    parts = [playlist.segment_map[0].uri, *(segment.uri for segment in playlist.segments)]
    with open(joined, "wb") as out:
        for part in parts:
            out.write((rendition / str(part)).read_bytes())


def vmaf_binary() -> str:
    """The imageio-ffmpeg wheel's ffmpeg: built with libvmaf (Debian's is not)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


async def vmaf(ffmpeg: str, distorted: Path, source: Path, rung: Rung) -> float:
    """VMAF (the default model) of `distorted` against the source scaled to the rung's size."""
    threads = os.cpu_count() or 2
    graph = (
        "[0:v]setpts=PTS-STARTPTS,setsar=1[d];"
        f"[1:v]scale={rung.width}:{rung.height},setsar=1,setpts=PTS-STARTPTS[r];"
        f"[d][r]libvmaf=n_threads={threads}"
    )
    done = await run_checked(
        [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-i", str(distorted), "-i", str(source),
         "-lavfi", graph, "-f", "null", "-"],
        FFMPEG_TIMEOUT_S,
    )  # fmt: skip
    found = _VMAF.findall(done.stderr)
    if not found:
        raise CommandFailed(f"no VMAF score in ffmpeg's output for {distorted.name}")
    return float(found[-1])


def vmaf_table(points: Sequence[RungQuality], settings: Settings) -> str:
    ours_name = f"ladder ({settings.ffmpeg.x264_preset} crf {settings.ffmpeg.x264_crf}, maxrate)"
    rows = [
        (f"{p.clip} → {p.rung.width}x{p.rung.height}", f"{p.vmaf:.2f}", f"{p.kbps:.0f}",
         f"{p.defaults_vmaf:.2f}", f"{p.defaults_kbps:.0f}", f"{p.vmaf - p.defaults_vmaf:+.2f}",
         f"{p.kbps / p.defaults_kbps:.2f}x")
        for p in points
    ]  # fmt: skip
    return markdown_table(
        ("rung", f"VMAF, {ours_name}", "kb/s", "VMAF, defaults alone (medium crf 23)", "kb/s",
         "Δ VMAF", "bit rate over defaults"),
        rows,
    )  # fmt: skip


def vmaf_rows(points: Sequence[RungQuality], settings: Settings) -> list[Row]:
    worst = min(points, key=lambda p: p.vmaf - p.defaults_vmaf)
    loss = worst.defaults_vmaf - worst.vmaf
    return [
        Row(f"VMAF of each rung against the same rung encoded alone with ffmpeg's defaults, worst of "
            f"{len(points)} ({worst.clip} → {worst.rung.width}x{worst.rung.height})",
            f"{worst.vmaf:.2f} at {worst.kbps:.0f} kb/s",
            f"defaults: {worst.defaults_vmaf:.2f} at {worst.defaults_kbps:.0f} kb/s",
            f"Δ {worst.vmaf - worst.defaults_vmaf:+.2f}",
            f"within {MAX_VMAF_LOSS:g} point", loss <= MAX_VMAF_LOSS),
    ]  # fmt: skip


# -- the run's context


def describe_run(
    plan: Plan,
    settings: Settings,
    ffmpeg_version: str,
    load_before: tuple[float, float, float],
    started: float,
) -> str:
    load_after = os.getloadavg()
    return "\n".join([
        f"# videosvc HLS benchmark, {datetime.now().isoformat(timespec='seconds')}",
        "",
        f"- commit {git_head()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} at the start,"
        f" {load_after[0]:.2f} at the end; {time.monotonic() - started:.0f} s",
        f"- x264 {settings.ffmpeg.x264_preset} crf {settings.ffmpeg.x264_crf};"
        f" ladder {list(settings.hls.hls_ladder)},"
        f" {settings.hls.hls_segment_s:g} s segments; medians of {plan.runs} interleaved run(s);"
        " ratios are the medians of each run's own ratio",
        f"- {ffmpeg_version}; VMAF: imageio-ffmpeg's {Path(vmaf_binary()).name}",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
