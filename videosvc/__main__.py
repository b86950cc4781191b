"""Command line: `run` starts the service, `check` tests ffmpeg, `sample` makes a video, `restore`
rebuilds the database from its backup; the client
commands (`upload`, `ls`, `info`, `resize`, `download`, `rm`) talk to a running server."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from . import __version__
from .client import cli as client_cli
from .config import ConfigError, Settings, load_settings
from .jobs.contract import ResizeJob
from .jobs.worker import run_resize
from .logs import setup_logging
from .media.toolchain import ToolchainError, inspect_toolchain
from .server import ListenError
from .server import serve as serve_forever
from .store.backup import BackupError, replica_report
from .store.backup import BackupSettings as BackupTarget
from .store.backup import restore as backup_restore
from .store.records import JobState
from .store.storage import Storage

DEFAULT_CONFIG = Path("config.toml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="videosvc", description="Store MP4 videos and resize them with ffmpeg."
    )
    parser.add_argument("--version", action="version", version=f"videosvc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="start the HTTP service")
    check_parser = commands.add_parser("check", help="report the ffmpeg found and try a tiny resize")
    sample_parser = commands.add_parser("sample", help="make a short sample video to try the service with")
    sample_parser.add_argument("path", type=Path, help="where to write it, e.g. cat.mp4")
    sample_parser.add_argument("--seconds", type=float, default=5.0, help="its length (default 5)")
    sample_parser.add_argument("--size", default="1280x720", help="WxH (default 1280x720)")
    restore_parser = commands.add_parser(
        "restore", help="rebuild the database from its backup (backup_url), on a new or wiped machine"
    )
    restore_parser.add_argument("--force", action="store_true", help="replace an existing database")
    for command in (run_parser, check_parser, sample_parser, restore_parser):
        command.add_argument(
            "--config", type=Path, help=f"TOML settings file (default: ./{DEFAULT_CONFIG} if it exists)"
        )
    run_parser.add_argument("--host", help="listen address (overrides the host setting)")
    run_parser.add_argument("--port", type=int, help="listen port (overrides the port setting)")
    client_cli.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command in client_cli.COMMANDS:
        return client_cli.run(args)

    try:
        config_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        overrides = {"host": getattr(args, "host", None), "port": getattr(args, "port", None)}
        settings = load_settings(config_path, overrides=overrides)
        if args.command == "check":
            return check(settings)
        if args.command == "sample":
            return sample(settings, args.path, args.seconds, args.size)
        if args.command == "restore":
            return restore(settings, args.force)
        return serve(settings, config_path)
    except (ConfigError, ToolchainError, ListenError) as e:
        print(f"videosvc: {e}", file=sys.stderr)
        return 2


def serve(settings: Settings, config_path: Path | None) -> int:
    setup_logging(settings.log)
    source = f"settings from {config_path.resolve()}" if config_path else "default settings"
    data = settings.storage.data_dir.resolve()
    where = f"videosvc {__version__}: data in {data}; {source} and VIDEOSVC_* variables"
    asyncio.run(serve_forever(settings, where))
    return 0


def restore(settings: Settings, force: bool) -> int:
    """The database, rebuilt from the replica Litestream kept; the service's files stay as they are."""
    backup = settings.backup
    target = BackupTarget(backup.backup_url, backup.backup_sync_interval_s, backup.litestream_path)
    database = Storage(settings.storage.data_dir.resolve()).database_path
    try:
        print(backup_restore(target, database, force))
    except BackupError as e:
        print(f"videosvc: {e}", file=sys.stderr)
        return 1
    print("start the service: videos whose rows were not replicated yet are moved to quarantine/ at start")
    return 0


def sample(settings: Settings, path: Path, seconds: float, size: str) -> int:
    """A test pattern with a tone, H.264 and AAC in MP4, made with the ffmpeg the service would use."""
    tools = inspect_toolchain(settings.ffmpeg).tools
    made = subprocess.run(
        [tools.ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-movflags", "+faststart",
         str(path)],
        capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        print(f"videosvc: ffmpeg could not make the sample: {made.stderr.decode(errors='replace').strip()}")
        return 1
    print(f"{path}: {seconds:g} s of {size} test pattern with sound")
    return 0


def check(settings: Settings) -> int:
    report = inspect_toolchain(settings.ffmpeg)
    print(f"ffmpeg:   {report.tools.ffmpeg} (from {report.ffmpeg_source})")
    print(f"          {report.ffmpeg_version}")
    print(f"ffprobe:  {report.tools.ffprobe or 'not found; probing reads ffmpeg -i instead'}")
    if report.ffprobe_version:
        print(f"          {report.ffprobe_version}")
    print(
        f"encoders: libx264 {'yes' if report.has_libx264 else 'NO'}, aac {'yes' if report.has_aac else 'NO'}"
    )
    with tempfile.TemporaryDirectory() as folder:
        sample = Path(folder) / "sample.mp4"
        made = subprocess.run(
            [report.tools.ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", "testsrc2=size=96x64:duration=0.2", "-f", "lavfi", "-i", "sine=duration=0.2",
             "-c:v", "libx264", "-c:a", "aac", "-shortest", str(sample)],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            print(f"sample:   FAILED to encode a test clip: {made.stderr.decode(errors='replace').strip()}")
            return 1
        result = run_resize(
            ResizeJob(
                source=str(sample),
                source_audio_codecs=None,
                directory=str(Path(folder) / "job"),
                width=48,
                height=32,
                tools=report.tools,
                x264_preset=settings.ffmpeg.x264_preset,
                x264_crf=settings.ffmpeg.x264_crf,
                timeout_s=60,
                max_memory_bytes=settings.ffmpeg.ffmpeg_max_memory_bytes,
            )
        )
    if result.outcome is not JobState.SUCCEEDED:
        print(f"resize:   FAILED: {result.error}")
        return 1
    print(f"resize:   ok (96x64 -> 48x32 in {result.elapsed_s:.2f} s)")
    if settings.backup.backup_url:
        backup = settings.backup
        target = BackupTarget(backup.backup_url, backup.backup_sync_interval_s, backup.litestream_path)
        healthy, line = replica_report(target, Storage(settings.storage.data_dir.resolve()).database_path)
        print(f"backup:   {line}" if healthy else f"backup:   FAILED: {line}")
        if not healthy:
            return 1
    if settings.jobs.backend == "dask":
        return check_dask_workers(settings)
    return 0


def check_dask_workers(settings: Settings) -> int:
    """Each worker of the cluster: its ffmpeg, libx264, and whether it can read and write data_dir."""
    from distributed import Client

    from .jobs.backends.dask import worker_report

    address = settings.jobs.dask_scheduler
    data_dir = settings.storage.data_dir.resolve()
    # As `run` would make it: on a fresh install the workers are asked about a folder that exists.
    (data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    try:
        with Client(address, timeout=10) as client:  # type: ignore[no-untyped-call]
            reports = client.run(worker_report, str(data_dir))
    except (OSError, TimeoutError) as e:
        print(f"dask:     FAILED: cannot reach the scheduler at {address}: {e}")
        return 1
    print(f"dask:     {address}, {len(reports)} worker(s)")
    healthy = bool(reports)
    for worker, report in sorted(reports.items()):
        ok = bool(report["ffmpeg"]) and report["libx264"] and report["data_dir"]
        healthy &= ok
        sees = (
            "data_dir ok"
            if report["data_dir"]
            else f"data_dir NOT readable and writable ({report.get('data_dir_error', 'its content differs')})"
        )
        x264 = "yes" if report["libx264"] else "NO"
        print(f"  {worker} ({report['host']}): {report['version']}, libx264 {x264}, {sees}")
    if not reports:
        print("  no workers: start some with `dask worker {address}`")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
