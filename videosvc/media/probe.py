"""Reading what a media file is, with ffprobe or, without it, `ffmpeg -i`.

Plain synchronous functions over plain data: they run in worker processes and
in the server's thread pool, never on the event loop, and import neither
aiohttp nor the database.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass

#: Longest a probe may take; a file that ffprobe cannot read by then is not one we want.
PROBE_TIMEOUT_S = 60.0

#: ISO-BMFF brands that ffmpeg's demuxer names "mov,mp4,m4a,3gp,3g2,mj2".
MP4_FAMILY = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2"})


@dataclass(frozen=True)
class Toolchain:
    """Where the ffmpeg binaries are; ffprobe is optional."""

    ffmpeg: str
    ffprobe: str | None = None


@dataclass(frozen=True)
class MediaInfo:
    format_names: tuple[str, ...]
    #: Display size: what a player shows, rotation applied.
    width: int
    height: int
    duration_s: float | None
    video_codec: str
    audio_codecs: tuple[str, ...]
    #: Degrees of the display matrix, 0 when none.
    rotation: int = 0

    @property
    def is_mp4_family(self) -> bool:
        return bool(MP4_FAMILY.intersection(self.format_names))


class ProbeError(Exception):
    """The file is not media that ffmpeg can read, or has no video stream."""


def has_ftyp_header(head: bytes) -> bool:
    """ISO-BMFF files (MP4, MOV, 3GP) open with a `ftyp` box."""
    return len(head) >= 8 and head[4:8] == b"ftyp"


def check_complete(path: str) -> None:
    """Raise ProbeError unless the file's top-level ISO-BMFF boxes tile it exactly.

    A truncated upload whose index (moov) comes first, as `+faststart` writes
    it, still probes fine: only its media box (mdat) runs past the end of the
    file. Walking the box headers (8 or 16 bytes each) catches that without
    decoding anything.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        offset = 0
        while offset < end:
            f.seek(offset)
            header = f.read(16)
            if len(header) < 8:
                raise ProbeError("the file is truncated (a box header is cut off)")
            size = int.from_bytes(header[:4], "big")
            if size == 1:  # 64-bit size follows the type
                if len(header) < 16:
                    raise ProbeError("the file is truncated (a box header is cut off)")
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:  # "to the end of the file"
                return
            if size < 8 or offset + size > end:
                raise ProbeError(
                    f"the file is truncated: its '{header[4:8].decode('latin-1')}' box needs"
                    f" {offset + size - end} more bytes"
                )
            offset += size


def probe_complete(path: str, tools: Toolchain) -> MediaInfo:
    """`probe`, for a file that must also be whole (an upload): complete boxes first."""
    check_complete(path)
    return probe(path, tools)


def probe(path: str, tools: Toolchain) -> MediaInfo:
    if tools.ffprobe:
        return _probe_with_ffprobe(path, tools.ffprobe)
    return _probe_with_ffmpeg(path, tools.ffmpeg)


def _probe_with_ffprobe(path: str, ffprobe_cmd: str) -> MediaInfo:
    args = ["-show_format", "-show_streams", "-of", "json", "-v", "error", path]
    try:
        # ffmpeg.probe has no timeout; the same call, bounded.
        completed = subprocess.run(
            [ffprobe_cmd, *args], capture_output=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ProbeError("probing the file timed out") from None
    if completed.returncode != 0:
        raise ProbeError(_last_line(completed.stderr, path) or "ffprobe could not read the file")
    data = json.loads(completed.stdout)
    streams = data.get("streams", [])
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            and not s.get("disposition", {}).get("attached_pic")
            and s.get("width")
        ),
        None,
    )
    if video is None:
        raise ProbeError("the file has no video stream")
    rotation = _ffprobe_rotation(video)
    duration = data.get("format", {}).get("duration") or video.get("duration")
    return _info(
        formats=data.get("format", {}).get("format_name", ""),
        width=int(video["width"]),
        height=int(video["height"]),
        rotation=rotation,
        duration_s=float(duration) if duration else None,
        video_codec=video.get("codec_name", ""),
        audio_codecs=[s.get("codec_name", "") for s in streams if s.get("codec_type") == "audio"],
    )


def _ffprobe_rotation(stream: dict[str, object]) -> int:
    for side in stream.get("side_data_list", []) or []:  # type: ignore[attr-defined]
        if isinstance(side, dict) and "rotation" in side:
            return int(float(side["rotation"]))
    tags = stream.get("tags") or {}
    if isinstance(tags, dict) and "rotate" in tags:
        return int(float(tags["rotate"]))
    return 0


_INPUT_RE = re.compile(r"^Input #0, ([\w,]+), from ", re.M)
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+.*?: (Video|Audio): (\w+)(.*)$", re.M)
_SIZE_RE = re.compile(r", (\d{2,5})x(\d{2,5})[, \[]")
# ffmpeg 5 prints "displaymatrix:", ffmpeg 7 and later "Display Matrix:".
_ROTATION_RE = re.compile(r"display ?matrix: rotation of (-?[\d.]+) degrees", re.I)


def _probe_with_ffmpeg(path: str, ffmpeg_cmd: str) -> MediaInfo:
    """Read `ffmpeg -i` output, for machines that have ffmpeg but no ffprobe."""
    try:
        completed = subprocess.run(
            [ffmpeg_cmd, "-hide_banner", "-nostdin", "-i", path],
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProbeError("probing the file timed out") from None
    text = completed.stderr.decode("utf-8", "replace")
    header = _INPUT_RE.search(text)
    if header is None:
        raise ProbeError(_last_line(completed.stderr, path) or "ffmpeg could not read the file")
    video_codec, width, height, rotation = "", 0, 0, 0
    audio_codecs: list[str] = []
    streams = list(_STREAM_RE.finditer(text))
    for index, match in enumerate(streams):
        kind, codec, rest = match.groups()
        if kind == "Audio":
            audio_codecs.append(codec)
        elif not video_codec and "attached pic" not in rest:
            size = _SIZE_RE.search(rest + ",")
            if size is None:
                continue
            video_codec, width, height = codec, int(size[1]), int(size[2])
            # Side data (the display matrix) sits between this stream and the next.
            end = streams[index + 1].start() if index + 1 < len(streams) else len(text)
            turn = _ROTATION_RE.search(text, match.end(), end)
            rotation = int(float(turn[1])) if turn else 0
    if not video_codec:
        raise ProbeError("the file has no video stream")
    duration = _DURATION_RE.search(text)
    seconds = int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3]) if duration else None
    return _info(header[1], width, height, rotation, seconds, video_codec, audio_codecs)


def _info(
    formats: str,
    width: int,
    height: int,
    rotation: int,
    duration_s: float | None,
    video_codec: str,
    audio_codecs: list[str],
) -> MediaInfo:
    if rotation % 180:
        width, height = height, width
    return MediaInfo(
        format_names=tuple(name for name in formats.split(",") if name),
        width=width,
        height=height,
        duration_s=duration_s,
        video_codec=video_codec,
        audio_codecs=tuple(audio_codecs),
        rotation=rotation,
    )


def _last_line(stderr: bytes, path: str) -> str:
    """ffmpeg's last word, without our file's path (a client must not learn our layout)."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].replace(path, "the file").replace("the file: ", "") if lines else ""
