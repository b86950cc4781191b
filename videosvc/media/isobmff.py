"""Reading the box structure of ISO-BMFF files (MP4, MOV, 3GP) in Python, without decoding.

Two questions are answered here, before any ffmpeg process is started on a
client's file: is the file whole (its top-level boxes tile it exactly), and
what does its index (`moov`) promise: how many tracks, how many pixels per
frame, how many frames. ffprobe answers the second only after it allocated
and decoded a frame of every stream, which is how a 3 MB file with four
16000x16000 streams costs gigabytes; reading a few box headers costs nothing.

Only the handful of boxes needed are parsed (`tkhd`, `mdhd`, `hdlr`, `stsd`,
`stsz`/`stz2`); reads are bounded by `MAX_INDEX_BYTES`. General-purpose MP4
parsers (pymp4, construct-based) parse whole trees into objects; this needs
five fields and a hard bound on what it reads, so it stays a page of code.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

#: The largest `moov` read into memory. A two-hour film's index is a few MB.
MAX_INDEX_BYTES = 64 * 1024**2
#: Boxes nest; no real file goes deeper than about eight.
MAX_DEPTH = 16


class BoxError(Exception):
    """The file is not a well-formed ISO-BMFF file (or its index is too large to read)."""


@dataclass(frozen=True)
class Track:
    #: The handler type: "vide", "soun", "text", "meta", ...
    kind: str
    #: The coded size of the first sample entry (video tracks); 0 when absent.
    width: int
    height: int
    #: Samples in the track's index (frames, for video); 0 for fragmented files.
    sample_count: int
    duration_s: float | None
    #: The first sample entry's type: "avc1", "hvc1", "mp4a", ...; "" when absent.
    codec: str = ""
    #: The longest stretch between two keyframes (or from the last to the end), in seconds; None
    #: when the index does not say (a fragmented file).
    max_keyframe_gap_s: float | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height


def has_ftyp_header(head: bytes) -> bool:
    """ISO-BMFF files (MP4, MOV, 3GP) open with a `ftyp` box."""
    return len(head) >= 8 and head[4:8] == b"ftyp"


def top_level_boxes(path: str) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, size) of each top-level box; raises BoxError unless they tile the file.

    A truncated upload whose index (moov) comes first, as `+faststart` writes
    it, still probes fine: only its media box (mdat) runs past the end of the
    file. Walking the box headers (8 or 16 bytes each) catches that.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        offset = 0
        while offset < end:
            f.seek(offset)
            header = f.read(16)
            if len(header) < 8:
                raise BoxError("the file is truncated (a box header is cut off)")
            size = int.from_bytes(header[:4], "big")
            kind = header[4:8]
            if size == 1:  # 64-bit size follows the type
                if len(header) < 16:
                    raise BoxError("the file is truncated (a box header is cut off)")
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:  # "to the end of the file"
                size = end - offset
            if size < 8 or offset + size > end:
                raise BoxError(
                    f"the file is truncated: its '{_name(kind)}' box needs {offset + size - end} more bytes"
                )
            yield kind, offset, size
            offset += size


def read_tracks(path: str) -> list[Track]:
    """The tracks that the file's `moov` box describes; raises BoxError for a broken or huge index."""
    moov = None
    for kind, offset, size in top_level_boxes(path):
        if kind == b"moov":
            moov = (offset, size)
    if moov is None:
        raise BoxError("the file has no index ('moov' box)")
    offset, size = moov
    if size > MAX_INDEX_BYTES:
        raise BoxError(f"the file's index is {size} bytes, over the {MAX_INDEX_BYTES} this service reads")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    tracks = []
    for kind, start, end in _children(data, _header_size(data, 0), size, 1):
        if kind == b"trak":
            tracks.append(_track(data, start, end))
    return tracks


def _track(data: bytes, start: int, end: int) -> Track:
    handler, width, height, samples, duration_s, codec = "", 0, 0, 0, None, ""
    timescale, stts, stss = 0, (0, 0), (0, 0)
    for kind, body, body_end in _walk(data, start, end, 2):
        if kind == b"hdlr" and body_end - body >= 12:
            handler = data[body + 8 : body + 12].decode("latin-1")
        elif kind == b"mdhd":
            duration_s = _mdhd_duration(data, body, body_end)
            timescale = _mdhd_timescale(data, body, body_end)
        elif kind == b"stts":
            stts = (body, body_end)
        elif kind == b"stss":
            stss = (body, body_end)
        elif kind == b"stsd" and body_end - body >= 8 + 8 + 28:
            # version/flags, entry count, then the first sample entry: a box header,
            # 6 reserved + 2 reference bytes, 16 bytes of (pre)defined fields, width, height.
            entry = body + 8 + 8
            codec = data[entry - 4 : entry].decode("latin-1")
            width, height = struct.unpack_from(">HH", data, entry + 24)
        elif kind in (b"stsz", b"stz2") and body_end - body >= 12:
            samples = struct.unpack_from(">I", data, body + 8)[0]
    if handler != "vide":  # other sample entries keep other fields at those offsets
        return Track(handler, 0, 0, samples, duration_s, codec)
    gap = _max_keyframe_gap(data, stts, stss, timescale, samples)
    return Track(handler, width, height, samples, duration_s, codec, gap)


def _max_keyframe_gap(
    data: bytes, stts: tuple[int, int], stss: tuple[int, int], timescale: int, samples: int
) -> float | None:
    """From the decode times (stts) of the sync samples (stss; none: every sample is one)."""
    if not timescale or not samples or stts[1] - stts[0] < 8:
        return None
    body, end = stts
    runs = [
        struct.unpack_from(">II", data, body + 8 + 8 * i)
        for i in range(min(struct.unpack_from(">I", data, body + 4)[0], (end - body - 8) // 8))
    ]
    if stss[1] - stss[0] >= 8:
        count = min(struct.unpack_from(">I", data, stss[0] + 4)[0], (stss[1] - stss[0] - 8) // 4)
        sync = sorted(struct.unpack_from(f">{count}I", data, stss[0] + 8))
    else:
        sync = None  # every sample is a keyframe
    times, sample, clock = [], 1, 0
    wanted = iter(sync) if sync is not None else None
    target = next(wanted, None) if wanted is not None else None
    for run_count, delta in runs:
        if wanted is None:
            return float(delta / timescale)  # all keyframes: the gap is one frame
        while target is not None and target < sample + run_count:
            times.append(clock + (target - sample) * delta)
            target = next(wanted, None)
        sample += run_count
        clock += run_count * delta
    if not times:
        return float(clock / timescale)
    gaps = [b - a for a, b in itertools.pairwise(times)] + [clock - times[-1], times[0]]
    return float(max(gaps) / timescale)


def _mdhd_timescale(data: bytes, body: int, end: int) -> int:
    version = data[body] if body < end else 0
    offset = body + 20 if version == 1 else body + 12
    return int(struct.unpack_from(">I", data, offset)[0]) if offset + 4 <= end else 0


def _mdhd_duration(data: bytes, body: int, end: int) -> float | None:
    version = data[body] if body < end else 0
    if version == 1 and end - body >= 32:
        timescale, duration = struct.unpack_from(">IQ", data, body + 20)
    elif end - body >= 20:
        timescale, duration = struct.unpack_from(">II", data, body + 12)
    else:
        return None
    return duration / timescale if timescale else None


#: Boxes whose children are boxes (and that lead to the fields read above).
_CONTAINERS = frozenset({b"mdia", b"minf", b"stbl"})


def _walk(data: bytes, start: int, end: int, depth: int) -> Iterator[tuple[bytes, int, int]]:
    """Every box below a trak, depth first: (type, body start, body end)."""
    if depth > MAX_DEPTH:
        raise BoxError("the file's index nests too deeply")
    for kind, body, body_end in _children(data, start, end, depth):
        yield kind, body, body_end
        if kind in _CONTAINERS:
            yield from _walk(data, body, body_end, depth + 1)


def _children(data: bytes, start: int, end: int, depth: int) -> Iterator[tuple[bytes, int, int]]:
    offset = start
    while offset + 8 <= end:
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        header = 8
        if size == 1:
            if offset + 16 > end:
                raise BoxError("the file's index is malformed (a box header is cut off)")
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise BoxError(f"the file's index is malformed (the '{_name(kind)}' box overruns its parent)")
        yield kind, offset + header, offset + size
        offset += size


def _header_size(data: bytes, offset: int) -> int:
    return 16 if int.from_bytes(data[offset : offset + 4], "big") == 1 else 8


def _name(kind: bytes) -> str:
    return "".join(c if c.isprintable() else "?" for c in kind.decode("latin-1"))
