"""Pictures of a video (SPEC §14): what a poster, a storyboard and a thumbnail are, in numbers.

A *poster* is one frame at most `POSTER_MAX_SIDE` on its long side, from the
first `POSTER_WINDOW_S` seconds, the most representative of those that are not
black. A *storyboard* is a sprite sheet of small tiles, one every `interval_s`
seconds (at most `MAX_TILES`, so a long video is not a huge sheet), and a WebVTT
file mapping each time range to its tile (`storyboard.jpg#xywh=x,y,w,h`). A
*thumbnail* is a frame at a time (tenths of a second) and a width (a multiple of
16): the parameters are rounded so that a cache of them can hit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The poster is picked among frames of the first seconds (all of a shorter video).
POSTER_WINDOW_S = 10.0
#: Frames per second looked at for the poster: 20 candidates in the window.
POSTER_SAMPLES_PER_S = 2.0
#: A candidate with more than this percent of its pixels black (luma < 32) is not a poster.
BLACK_PERCENT = 90
#: The poster's long side at most (a large video's poster is scaled down).
POSTER_MAX_SIDE = 1280
#: A storyboard tile's long side.
TILE_SIDE = 160
#: Tiles a sprite row holds.
TILE_COLUMNS = 10
#: Tiles a storyboard has at most: past this, the interval grows.
MAX_TILES = 100
#: The shortest interval between tiles, in seconds.
MIN_INTERVAL_S = 1.0
#: Keyframes at most this far apart make the tiles (the interval grows to their spacing): a decode
#: of one frame a tile. Farther apart, every frame is decoded to make tiles at the interval.
MAX_KEYFRAME_INTERVAL_S = 5.0
#: Files of a video's pictures.
POSTER = "poster.jpg"
SPRITE = "storyboard.jpg"
STORYBOARD = "storyboard.vtt"
#: The thumbnail widths asked for are rounded to a multiple of this, between the bounds.
WIDTH_STEP = 16
MIN_WIDTH, MAX_WIDTH = 16, 1920
#: Thumbnail formats, by the route's extension: (the ffmpeg encoder, the content type).
FORMATS = {"jpg": ("mjpeg", "image/jpeg"), "webp": ("libwebp", "image/webp")}


def even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def fit(width: int, height: int, longest: int) -> tuple[int, int]:
    """width x height scaled down (never up) to at most `longest` on the long side, even sizes."""
    scale = min(1.0, longest / max(width, height))
    return even(width * scale), even(height * scale)


@dataclass(frozen=True)
class Storyboard:
    """The tiles of a video's storyboard: every `interval_s` seconds, `count` of them."""

    interval_s: float
    count: int
    tile_width: int
    tile_height: int
    columns: int
    #: The tiles are keyframes (ffmpeg decodes those only).
    keyframes_only: bool = False

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns)

    def tile_at(self, index: int) -> tuple[int, int]:
        """The top-left corner of tile `index` in the sprite."""
        return (index % self.columns) * self.tile_width, (index // self.columns) * self.tile_height


def plan_storyboard(width: int, height: int, duration_s: float, keyframe_gap_s: float | None) -> Storyboard:
    """One tile every whole number of seconds (at least `MIN_INTERVAL_S`), at most `MAX_TILES`; from
    keyframes alone when they are at most `MAX_KEYFRAME_INTERVAL_S` apart (the interval then at
    least their longest gap, so each tile has its own)."""
    duration = max(duration_s, 0.1)
    interval = max(MIN_INTERVAL_S, float(math.ceil(duration / MAX_TILES)))
    keyframes_only = keyframe_gap_s is not None and keyframe_gap_s <= MAX_KEYFRAME_INTERVAL_S
    if keyframes_only and keyframe_gap_s is not None:
        interval = max(interval, float(math.ceil(keyframe_gap_s - 0.1)))  # 2.04 s apart: every 2 s
    count = max(1, math.ceil(duration / interval))
    tile_width, tile_height = fit(width, height, TILE_SIDE)
    return Storyboard(interval, count, tile_width, tile_height, min(TILE_COLUMNS, count), keyframes_only)


def storyboard_vtt(board: Storyboard, duration_s: float, tiles: int, sprite: str = SPRITE) -> str:
    """The WebVTT of a storyboard whose sprite holds `tiles` tiles (maybe fewer than planned: the
    video ended early); the cues cover 0 to the duration, the last reaching the end."""
    tiles = max(1, min(tiles, board.count))
    lines = ["WEBVTT", ""]
    for index in range(tiles):
        start = index * board.interval_s
        end = duration_s if index == tiles - 1 else min(duration_s, (index + 1) * board.interval_s)
        x, y = board.tile_at(index)
        lines += [
            f"{_timestamp(start)} --> {_timestamp(max(end, start + 0.001))}",
            f"{sprite}#xywh={x},{y},{board.tile_width},{board.tile_height}",
            "",
        ]
    return "\n".join(lines)


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


class BadThumbnail(ValueError):
    """A thumbnail's parameters that cannot be honoured; the message says why."""


@dataclass(frozen=True)
class ThumbnailAsk:
    #: Tenths of a second.
    tenths: int
    width: int
    format: str

    @property
    def time_s(self) -> float:
        return self.tenths / 10


def thumbnail_ask(
    fmt: str, time: str | None, width: str | None, duration_s: float | None, default_s: float
) -> ThumbnailAsk:
    """The rounded parameters of a thumbnail request, or BadThumbnail (a 400)."""
    if fmt not in FORMATS:
        raise BadThumbnail(f"thumbnails are {' or '.join(FORMATS)}, not {fmt!r}")
    seconds = default_s if time is None else _number(time, "time")
    tenths = round(seconds * 10)
    limit = math.floor((duration_s or 0) * 10)
    if tenths < 0 or tenths > limit:
        raise BadThumbnail(f"time must be between 0 and the video's duration ({limit / 10:g} s), got {time}")
    asked = 320 if width is None else _number(width, "width")
    rounded = round(asked / WIDTH_STEP) * WIDTH_STEP
    if not MIN_WIDTH <= rounded <= MAX_WIDTH:
        raise BadThumbnail(f"width must be between {MIN_WIDTH} and {MAX_WIDTH}, got {width}")
    return ThumbnailAsk(tenths, rounded, fmt)


def _number(text: str, name: str) -> float:
    """A finite decimal number of ASCII characters, not too long: `12`, `3.5`."""
    if len(text) > 16 or not text.isascii() or not text.replace(".", "", 1).isdigit():
        raise BadThumbnail(f"{name} must be a number like 12 or 3.5, got {text[:20]!r}")
    return float(text)
