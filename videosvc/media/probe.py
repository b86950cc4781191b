"""Reading what a media file is, with ffprobe or, without it, `ffmpeg -i`.

Plain synchronous functions over plain data: they run in worker processes and
in the server's thread pool, never on the event loop, and import neither
aiohttp nor the database.
"""

from __future__ import annotations

import dataclasses
import json
import re
import resource
import subprocess
from dataclasses import dataclass

from .isobmff import BoxError, read_tracks

#: ISO-BMFF brands that ffmpeg's demuxer names "mov,mp4,m4a,3gp,3g2,mj2".
MP4_FAMILY = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2"})


@dataclass(frozen=True)
class Ceiling:
    """What one ffmpeg or ffprobe process may take before it is stopped."""

    timeout_s: float
    #: RLIMIT_DATA: its heap and private mappings; an allocation past it fails.
    max_memory_bytes: int


@dataclass(frozen=True)
class Toolchain:
    """Where the ffmpeg binaries are (ffprobe is optional), and the ceiling of a probe."""

    ffmpeg: str
    ffprobe: str | None = None
    probe_ceiling: Ceiling = Ceiling(timeout_s=30.0, max_memory_bytes=512 * 1024**2)


@dataclass(frozen=True)
class InputLimits:
    """What an uploaded video may hold (checked before any decoder runs)."""

    max_pixels: int
    max_streams: int


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
    #: Frames of the video stream, from the index (or duration x frame rate); None when unknown.
    frame_count: int | None = None
    #: The video's pixel format ("yuv420p", ...) and frames per second; "" and None when unknown.
    pix_fmt: str = ""
    fps: float | None = None
    #: The longest stretch between two keyframes of the video track, from its index; None when unknown.
    max_keyframe_gap_s: float | None = None

    @property
    def is_mp4_family(self) -> bool:
        return bool(MP4_FAMILY.intersection(self.format_names))


class ProbeError(Exception):
    """The file is not media that ffmpeg can read, or has no video stream."""


class MediaOverLimit(ProbeError):
    """The file is media, but holds more (pixels, tracks) than this service takes."""


def limit_memory(max_bytes: int) -> None:
    """In a child before exec: cap its data segment, so a runaway allocation fails instead of the host."""
    resource.setrlimit(resource.RLIMIT_DATA, (max_bytes, max_bytes))


def run_bounded(args: list[str], ceiling: Ceiling) -> subprocess.CompletedProcess[bytes]:
    """Run a probe-like command under `ceiling`; raises ProbeError when it times out."""
    try:
        return subprocess.run(
            args,
            capture_output=True,
            timeout=ceiling.timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: limit_memory(ceiling.max_memory_bytes),
        )
    except subprocess.TimeoutExpired:
        raise ProbeError(f"probing the file took longer than {ceiling.timeout_s:g} s") from None


def inspect_upload(path: str, tools: Toolchain, limits: InputLimits) -> MediaInfo:
    """What an uploaded file is, or ProbeError/MediaOverLimit: whole, within limits, then probed.

    The limits are checked from the file's own index before ffprobe runs, so a
    file built to make a decoder allocate gigabytes never reaches one.
    """
    try:
        tracks = read_tracks(path)
    except BoxError as e:
        raise ProbeError(str(e)) from None
    if len(tracks) > limits.max_streams:
        raise MediaOverLimit(
            f"the file has {len(tracks)} tracks, over the limit of {limits.max_streams} (max_input_streams)"
        )
    for track in tracks:
        if track.pixels > limits.max_pixels:
            raise MediaOverLimit(
                f"a video track is {track.width}x{track.height} ({track.pixels} pixels), over the limit"
                f" of {limits.max_pixels} pixels (max_input_pixels)"
            )
    info = probe(path, tools)
    if info.width * info.height > limits.max_pixels:  # the index can under-report (a missing entry)
        raise MediaOverLimit(
            f"the video is {info.width}x{info.height}, over the limit of {limits.max_pixels} pixels"
            " (max_input_pixels)"
        )
    video = next((t for t in tracks if t.kind == "vide"), None)
    frames = video.sample_count if video else 0
    gap = video.max_keyframe_gap_s if video else None
    return dataclasses.replace(info, frame_count=frames or info.frame_count, max_keyframe_gap_s=gap)


def probe(path: str, tools: Toolchain) -> MediaInfo:
    if tools.ffprobe:
        return _probe_with_ffprobe(path, tools.ffprobe, tools.probe_ceiling)
    return _probe_with_ffmpeg(path, tools.ffmpeg, tools.probe_ceiling)


#: What ffprobe is asked of a file (ffmpeg-python's `probe`, as JSON).
FFPROBE_ARGS = ("-show_format", "-show_streams", "-of", "json", "-v", "error")


def _probe_with_ffprobe(path: str, ffprobe_cmd: str, ceiling: Ceiling) -> MediaInfo:
    # ffmpeg.probe has no timeout and no memory ceiling; the same call, bounded.
    completed = run_bounded([ffprobe_cmd, *FFPROBE_ARGS, path], ceiling)
    if completed.returncode != 0:
        _raise_if_out_of_memory(completed.stderr, ceiling)
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
    frames = str(video.get("nb_frames") or "")
    return _info(
        formats=data.get("format", {}).get("format_name", ""),
        width=int(video["width"]),
        height=int(video["height"]),
        rotation=rotation,
        duration_s=float(duration) if duration else None,
        video_codec=video.get("codec_name", ""),
        audio_codecs=[s.get("codec_name", "") for s in streams if s.get("codec_type") == "audio"],
        frame_count=int(frames) if frames.isdigit() else _frames(duration, video.get("avg_frame_rate")),
        pix_fmt=str(video.get("pix_fmt") or ""),
        fps=_rate(video.get("avg_frame_rate")),
    )


def _frames(duration: object, rate: object) -> int | None:
    """duration x frame rate; rate as ffprobe writes it ("30000/1001") or a number."""
    fps = _rate(rate)
    try:
        return round(float(str(duration)) * fps) or None if fps else None
    except (TypeError, ValueError):
        return None


def _rate(rate: object) -> float | None:
    """A frame rate as ffprobe writes it ("30000/1001") or a number; None when unknown."""
    try:
        num, _, den = str(rate).partition("/")
        fps = float(num) / float(den or 1)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return fps if 0 < fps < 1000 else None


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
_FPS_RE = re.compile(r", ([\d.]+) fps")
#: The pixel format follows the codec: "h264 (High) (avc1 / 0x...), yuv420p(progressive), 1280x720".
_PIX_FMT_RE = re.compile(r"\), (\w+)[(,]")
_ROTATION_RE = re.compile(r"display ?matrix: rotation of (-?[\d.]+) degrees", re.I)


def _probe_with_ffmpeg(path: str, ffmpeg_cmd: str, ceiling: Ceiling) -> MediaInfo:
    """Read `ffmpeg -i` output, for machines that have ffmpeg but no ffprobe."""
    completed = run_bounded([ffmpeg_cmd, "-hide_banner", "-nostdin", "-i", path], ceiling)
    _raise_if_out_of_memory(completed.stderr, ceiling)
    text = completed.stderr.decode("utf-8", "replace")
    header = _INPUT_RE.search(text)
    if header is None:
        raise ProbeError(_last_line(completed.stderr, path) or "ffmpeg could not read the file")
    video_codec, width, height, rotation, fps, pix_fmt = "", 0, 0, 0, "", ""
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
            pix = _PIX_FMT_RE.search(rest)
            pix_fmt = pix[1] if pix else ""
            rate = _FPS_RE.search(rest)
            fps = rate[1] if rate else ""
            # Side data (the display matrix) sits between this stream and the next.
            end = streams[index + 1].start() if index + 1 < len(streams) else len(text)
            turn = _ROTATION_RE.search(text, match.end(), end)
            rotation = int(float(turn[1])) if turn else 0
    if not video_codec:
        raise ProbeError("the file has no video stream")
    duration = _DURATION_RE.search(text)
    seconds = int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3]) if duration else None
    frames = _frames(seconds, fps)
    info = _info(header[1], width, height, rotation, seconds, video_codec, audio_codecs, frames)
    return dataclasses.replace(info, pix_fmt=pix_fmt, fps=_rate(fps))


def _info(
    formats: str,
    width: int,
    height: int,
    rotation: int,
    duration_s: float | None,
    video_codec: str,
    audio_codecs: list[str],
    frame_count: int | None = None,
    pix_fmt: str = "",
    fps: float | None = None,
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
        frame_count=frame_count,
        pix_fmt=pix_fmt,
        fps=fps,
    )


#: What ffmpeg's libraries print when an allocation fails (as under RLIMIT_DATA).
OUT_OF_MEMORY_MARKERS = (b"Cannot allocate memory", b"malloc of size", b"out of memory")


def ran_out_of_memory(stderr: bytes) -> bool:
    return any(marker in stderr for marker in OUT_OF_MEMORY_MARKERS)


def _raise_if_out_of_memory(stderr: bytes, ceiling: Ceiling) -> None:
    if ran_out_of_memory(stderr):
        raise ProbeError(
            f"reading the file needs more than {ceiling.max_memory_bytes // 2**20} MiB"
            " (probe_max_memory_bytes)"
        )


def _last_line(stderr: bytes, path: str) -> str:
    """ffmpeg's last word, without our file's path (a client must not learn our layout)."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].replace(path, "the file").replace("the file: ", "") if lines else ""
