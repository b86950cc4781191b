"""Finding a usable ffmpeg: the configured path, then PATH, then imageio-ffmpeg."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..config import FfmpegSettings
from .probe import Ceiling, Toolchain

REQUIRED_ENCODER = "libx264"
NO_FFMPEG_HINT = (
    "no ffmpeg found: install it (apt-get install ffmpeg), or from this checkout"
    " pip install '.[ffmpeg]' (the imageio-ffmpeg package), or set ffmpeg_path"
)


class ToolchainError(Exception):
    """No ffmpeg that can do the job was found."""


@dataclass(frozen=True)
class ToolchainReport:
    tools: Toolchain
    ffmpeg_source: str
    ffmpeg_version: str
    ffprobe_version: str | None
    has_libx264: bool
    has_aac: bool


def inspect_toolchain(settings: FfmpegSettings) -> ToolchainReport:
    """Find the binaries and ask them what they can do; raise if they cannot resize."""
    ffmpeg_cmd, source = _find_ffmpeg(settings)
    ffprobe_cmd = _find_ffprobe(settings, ffmpeg_cmd)
    version = _first_line([ffmpeg_cmd, "-hide_banner", "-version"])
    if version is None:
        raise ToolchainError(f"ffmpeg at {ffmpeg_cmd} does not run")
    encoders = _output([ffmpeg_cmd, "-hide_banner", "-encoders"]) or ""
    report = ToolchainReport(
        tools=Toolchain(
            ffmpeg=ffmpeg_cmd,
            ffprobe=ffprobe_cmd,
            probe_ceiling=Ceiling(settings.probe_timeout_s, settings.probe_max_memory_bytes),
        ),
        ffmpeg_source=source,
        ffmpeg_version=version,
        ffprobe_version=_first_line([ffprobe_cmd, "-hide_banner", "-version"]) if ffprobe_cmd else None,
        has_libx264=f" {REQUIRED_ENCODER} " in encoders,
        has_aac=" aac " in encoders,
    )
    if not report.has_libx264:
        raise ToolchainError(f"ffmpeg at {ffmpeg_cmd} has no {REQUIRED_ENCODER} encoder")
    return report


def _find_ffmpeg(settings: FfmpegSettings) -> tuple[str, str]:
    if settings.ffmpeg_path:
        found = shutil.which(settings.ffmpeg_path)
        if found is None:
            raise ToolchainError(f"ffmpeg_path {settings.ffmpeg_path!r} is not an executable")
        return found, "ffmpeg_path setting"
    found = shutil.which("ffmpeg")
    if found is not None:
        return found, "PATH"
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe()), "imageio-ffmpeg package"
    except (ImportError, RuntimeError):
        pass
    raise ToolchainError(NO_FFMPEG_HINT)


def _find_ffprobe(settings: FfmpegSettings, ffmpeg_cmd: str) -> str | None:
    if settings.ffprobe_path:
        found = shutil.which(settings.ffprobe_path)
        if found is None:
            raise ToolchainError(f"ffprobe_path {settings.ffprobe_path!r} is not an executable")
        return found
    beside = Path(ffmpeg_cmd).with_name("ffprobe")
    if beside.is_file():
        return str(beside)
    return shutil.which("ffprobe")


def _output(args: list[str]) -> str | None:
    try:
        completed = subprocess.run(args, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.decode("utf-8", "replace")


def _first_line(args: list[str]) -> str | None:
    text = _output(args)
    return text.splitlines()[0].strip() if text else None
