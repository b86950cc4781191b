"""One frame of a stored video as a picture, by a decoder that stays open (PyAV).

A thumbnail made by the ffmpeg command pays, every time, for starting ffmpeg
(0.12 s for Debian's, which loads some 150 shared libraries) and for opening the
file (10 minutes of MP4 is an index of 40,000 samples) before it seeks: more than
the 250 ms a thumbnail may take. Here a worker process keeps the last few videos
it was asked about open, so a thumbnail costs the seek alone: to the keyframe at
or before the time, then decoded (two frame threads) to the first frame at or
after it, as `ffmpeg -ss T -i ... -frames:v 1` picks. The picture is made by the
same filters the command would use (the display rotation, `scale=W:-2`) and
written by FFmpeg's own JPEG or WebP encoder.

This module runs in the worker (`serve`); `videos/decoders.py` is the server's side.
"""

from __future__ import annotations

import collections
import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Any

import av
import av.filter

#: Videos a worker keeps open, the least recently used closed first...
KEEP_OPEN = 4
#: ...and their frame sizes together at most this many pixels (four 1080p videos, or one 4K:
#: an open 4K decoder holds ~150 MB of frames; a decoder may allocate 1 GiB).
KEEP_OPEN_PIXELS = 4 * 1920 * 1080
#: A worker asked nothing for this long closes every video it holds (a deleted one's space is
#: given back to the disk within this time).
IDLE_CLOSE_S = 10.0
#: Decoding threads for one thumbnail (frame threads: a seek decodes up to a GOP of frames).
DECODE_THREADS = 2
#: WebP quality (0-100) and JPEG quality (FFmpeg's qscale: 2 best ... 31).
WEBP_QUALITY, JPEG_QUALITY = 80, 3
#: The decoders' process name (`ps`, `top`; the kernel keeps 15 bytes).
PROCESS_NAME = b"videosvc-thumbs"
#: Encoder and the pixel format it is given, per format.
ENCODERS = {"jpg": ("mjpeg", "yuvj420p"), "webp": ("libwebp", "yuv420p")}


@dataclass(frozen=True)
class Grab:
    """Write the frame of `source` at `time_s` (or its last, past the end), `width` wide."""

    source: str
    time_s: float
    width: int
    format: str
    output: str


def encoders_available() -> set[str]:
    """The picture formats this FFmpeg (PyAV's) can write."""
    return {name for name, (encoder, _) in ENCODERS.items() if encoder in av.codecs_available}


class OpenFiles:
    """Recently used videos, kept open, each by the version (inode, mtime) it was opened at:
    a file replaced (a resize) or removed since is closed, never read."""

    def __init__(self, keep: int = KEEP_OPEN, keep_pixels: int = KEEP_OPEN_PIXELS) -> None:
        self._keep = keep
        self._keep_pixels = keep_pixels
        self._open: collections.OrderedDict[str, tuple[tuple[int, int], Any]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def get(self, path: str) -> Any:
        """The video at `path`, open: kept from before when it is the same file."""
        self.prune()
        st = os.stat(path)
        version = (st.st_ino, st.st_mtime_ns)
        kept = self._open.get(path)
        if kept is not None and kept[0] == version:
            self._open.move_to_end(path)
            return kept[1]
        container = av.open(path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "FRAME"
            stream.thread_count = DECODE_THREADS
        except BaseException:
            container.close()
            raise
        self._open[path] = (version, container)
        while len(self._open) > 1 and (len(self._open) > self._keep or self._pixels() > self._keep_pixels):
            _, (_, oldest) = self._open.popitem(last=False)
            oldest.close()
        return container

    def _pixels(self) -> int:
        sizes = [c.streams.video[0].codec_context for _, c in self._open.values()]
        return sum(ctx.width * ctx.height for ctx in sizes)

    def prune(self) -> None:
        """Close the videos whose file is gone or replaced."""
        for path, (version, container) in list(self._open.items()):
            try:
                st = os.stat(path)
                same = (st.st_ino, st.st_mtime_ns) == version
            except OSError:
                same = False
            if not same:
                del self._open[path]
                container.close()

    def close_all(self) -> None:
        while self._open:
            _, (_, container) = self._open.popitem()
            container.close()


def grab(files: OpenFiles, request: Grab) -> None:
    """Make the picture and write it to `request.output`."""
    container = files.get(request.source)
    stream = container.streams.video[0]
    frame = frame_at(container, stream, request.time_s)
    encoder, pixel_format = ENCODERS[request.format]
    picture = _filtered(stream, frame, request.width, pixel_format)
    with open(request.output, "wb") as out:
        out.write(_encoded(picture, encoder, pixel_format))


def frame_at(container: Any, stream: Any, time_s: float) -> Any:
    """The first frame at or after `time_s` from the start, or the last one when none is.

    From the keyframe at or before the time, every packet is decoded except, before the
    time, those that no other frame refers to (FFmpeg's `skip_frame=nonref`: most B-frames,
    a third of the frames of x264's defaults): they would be thrown away unseen. (Past the
    last frame, the last one shown is the last that is referred to: in what encoders write,
    the last frame, since a B-frame needs a reference shown after it.)
    """
    target = (stream.start_time or 0) + int(time_s / stream.time_base)
    # To the keyframe at or before the time (the decoders are flushed with the seek).
    container.seek(target, stream=stream, backward=True, any_frame=False)
    codec = stream.codec_context
    last = None
    try:
        for packet in container.demux(stream):
            before = packet.pts is not None and packet.pts < target
            codec.skip_frame = "NONREF" if before else "DEFAULT"
            for frame in codec.decode(packet):
                if frame.pts is not None and frame.pts >= target:
                    return frame
                last = frame
    finally:
        codec.skip_frame = "DEFAULT"
    if last is None:
        raise ValueError(f"no frame at or before {time_s:g} s")
    return last


def _filtered(stream: Any, frame: Any, width: int, pixel_format: str) -> Any:
    """What `ffmpeg`'s autorotate and `-vf scale=W:-2,setsar=1` make of the frame."""
    graph = av.filter.Graph()
    nodes = [graph.add_buffer(template=stream)]
    for name, args in [*_rotation(frame.rotation), ("scale", f"{width}:-2"), ("setsar", "1"),
                       ("format", pixel_format)]:  # fmt: skip
        nodes.append(graph.add(name, args))
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    graph.push(frame)
    return graph.pull()


def _rotation(degrees: int) -> list[tuple[str, str]]:
    """The filters that show a frame as its display matrix says (PyAV's `rotation`: counter-
    clockwise degrees, as ffmpeg's autorotate reads them)."""
    turn = round(degrees / 90) % 4
    return {
        0: [],
        1: [("transpose", "cclock")],
        2: [("hflip", ""), ("vflip", "")],
        3: [("transpose", "clock")],
    }[turn]


def _encoded(picture: Any, encoder: str, pixel_format: str) -> bytes:
    codec: Any = av.CodecContext.create(encoder, "w")
    codec.width, codec.height, codec.pix_fmt = picture.width, picture.height, pixel_format
    codec.time_base = Fraction(1, 25)
    codec.sample_aspect_ratio = Fraction(1, 1)  # JPEG: a JFIF header, as the command writes
    # One thread: with slices, FFmpeg's JPEG encoder gives up its optimal Huffman tables.
    codec.thread_count = 1
    if encoder == "mjpeg":
        codec.qmin = codec.qmax = JPEG_QUALITY
    else:
        codec.options = {"quality": str(WEBP_QUALITY)}
    packets = [*codec.encode(picture), *codec.encode(None)]
    return b"".join(bytes(packet) for packet in packets)


def serve(conn: Connection, niceness: int, max_memory_bytes: int, idle_close_s: float = IDLE_CLOSE_S) -> None:
    """A worker: answer `Grab` requests on `conn` one at a time with `None` or an error's text."""
    import ctypes

    from .supervise import child_limits

    pr_set_name = 15
    ctypes.CDLL(None).prctl(pr_set_name, PROCESS_NAME, 0, 0, 0)
    os.nice(niceness)
    child_limits(max_memory_bytes)
    files = OpenFiles()
    while True:
        if not conn.poll(idle_close_s):
            files.close_all()
            continue
        try:
            request = conn.recv()
        except EOFError:  # the server is gone
            return
        reply: str | None = None
        try:
            grab(files, request)
        except Exception as e:  # a video it cannot read: said, and the decoder goes on
            reply = f"{type(e).__name__}: {e}"[:300]
            with contextlib.suppress(OSError):
                os.unlink(request.output)
        conn.send(reply)
