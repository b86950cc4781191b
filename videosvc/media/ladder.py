"""An HLS ladder: the renditions a video is streamed in, and whether its upload can be one as it is.

Rungs are named by their short side (1080, 720, ...), so a portrait video gets
a ladder as good as a landscape one; a rung is never larger than the source,
keeps its aspect, and has even sizes (H.264 in 4:2:0 needs them).
"""

from __future__ import annotations

from dataclasses import dataclass

from .probe import MediaInfo

#: The bits per pixel per frame a rung may peak at (its `maxrate`): about Apple's HLS authoring
#: figures (1080p30 ~6 Mb/s, 720p30 ~2.8, 480p30 ~1.2, 360p30 ~0.7).
MAX_BITS_PER_PIXEL = 0.1
#: The frame rate assumed when the source does not say.
DEFAULT_FPS = 30.0
#: What the AAC rendition is encoded at.
AUDIO_BITRATE = 128_000
#: A rung smaller than this on its short side is not worth a rendition.
MIN_SHORT_SIDE = 144


@dataclass(frozen=True)
class Rung:
    width: int
    height: int
    #: The encoder's peak rate (`-maxrate`), bits per second; its buffer is twice that.
    maxrate: int

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)


def plan_ladder(width: int, height: int, short_sides: tuple[int, ...], fps: float | None) -> list[Rung]:
    """The rungs for a source of width x height (as displayed), largest first: one per short side
    asked for that fits in the source, and the source's own size when none does (a small video)."""
    short = min(width, height)
    sides = sorted({side for side in short_sides if MIN_SHORT_SIDE <= side <= short}, reverse=True)
    if not sides:
        sides = [short - short % 2]
    return [_rung(width, height, side, fps or DEFAULT_FPS) for side in sides]


def _rung(width: int, height: int, short: int, fps: float) -> Rung:
    scale = short / min(width, height)
    w, h = _even(width * scale), _even(height * scale)
    return Rung(w, h, int(w * h * fps * MAX_BITS_PER_PIXEL))


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


@dataclass(frozen=True)
class Plan:
    """The rungs of a video's package, largest first, and how the first is made."""

    rungs: tuple[Rung, ...]
    #: The first rung is the upload's own streams, copied (fast first play); else every rung is encoded.
    copy_first: bool
    #: Why the upload is not copied, when it is not.
    why_encoded: str | None = None


def plan(info: MediaInfo, short_sides: tuple[int, ...], segment_s: float) -> Plan:
    """Fast first play when the upload allows it: its own streams are the top rung, and the rungs
    below it come from the ladder; else the ladder, every rung encoded."""
    refusal = first_play_refusal(info, max(short_sides), segment_s)
    if refusal is not None:
        return Plan(tuple(plan_ladder(info.width, info.height, short_sides, info.fps)), False, refusal)
    short = min(info.width, info.height)
    peak = int(info.width * info.height * (info.fps or DEFAULT_FPS) * MAX_BITS_PER_PIXEL)
    ladder = plan_ladder(info.width, info.height, short_sides, info.fps)
    below = [rung for rung in ladder if rung.short_side < short]
    return Plan((Rung(info.width, info.height, peak), *below), True)


def first_play_refusal(info: MediaInfo, largest: int, segment_s: float) -> str | None:
    """Why the upload cannot be packaged as it is, to play at once as the top rung; None if it can.

    It can when a player takes its streams as they are (H.264 in 4:2:0, AAC or no audio), it is
    no larger than the ladder's largest rung (`largest`, a short side), shows as it is stored (no
    rotation), and its keyframes are close enough to cut segments of about `segment_s` seconds.
    """
    if info.video_codec != "h264" or info.pix_fmt not in ("yuv420p", "yuvj420p"):
        return f"its video is {info.video_codec} {info.pix_fmt or '(pixel format unknown)'}, not H.264 4:2:0"
    if any(codec != "aac" for codec in info.audio_codecs) or len(info.audio_codecs) > 1:
        return f"its audio is {', '.join(info.audio_codecs)}, not one AAC track"
    if min(info.width, info.height) > largest:
        return f"it is larger than the ladder's largest rung ({largest} lines)"
    if info.width % 2 or info.height % 2:
        return "its size is odd"
    if info.rotation:
        return "it is rotated (a display matrix): players would show the copy as stored"
    if info.max_keyframe_gap_s is None or info.max_keyframe_gap_s > 2 * segment_s:
        return f"its keyframes are more than {2 * segment_s:g} s apart"
    return None
