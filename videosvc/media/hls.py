"""An HLS package, as players read it: media playlists (written by ffmpeg), and the master playlist,
written here from what was measured, so that its figures are true.

ffmpeg's own master playlist guesses: its BANDWIDTH comes from the encoder's
maxrate (or 140800 for a stream it copied), and its CODECS from defaults. Here
BANDWIDTH is the peak bit rate of a rendition's segments and AVERAGE-BANDWIDTH
their mean, CODECS is read from each rendition's init segment (`avcC`,
`esds`), and RESOLUTION is what the encoder was asked for.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import m3u8

#: The media playlist of each rendition, in its own folder of the package.
PLAYLIST = "index.m3u8"
MASTER = "master.m3u8"
#: The folder of the one audio rendition that every video rendition plays with.
AUDIO = "a"
AUDIO_GROUP = "audio"


class PackageError(Exception):
    """A rendition's files are not what a player needs (a playlist, its segments, an init segment)."""


@dataclass(frozen=True)
class Measured:
    """A rendition as packaged: what its master playlist entry says."""

    name: str
    #: Peak and mean bit rate over its segments, in bits per second.
    bandwidth: int
    average_bandwidth: int
    codecs: str
    #: The start time of each segment (the keyframes every rendition must share), seconds.
    segment_starts: tuple[float, ...]
    duration_s: float


def video_name(index: int) -> str:
    return f"v{index}"


def measure(folder: Path) -> Measured:
    """Read a rendition's media playlist, its segments' sizes and its init segment."""
    playlist = folder / PLAYLIST
    try:
        parsed = m3u8.loads(playlist.read_text(encoding="utf-8"))
    except OSError as e:
        raise PackageError(f"{folder.name}: no media playlist ({e.strerror})") from None
    if not parsed.segments:
        raise PackageError(f"{folder.name}: the media playlist lists no segment")
    starts, rates, total_bits, total_s, clock = [], [], 0, 0.0, 0.0
    for segment in parsed.segments:
        duration = float(segment.duration or 0)
        bits = os.path.getsize(folder / str(segment.uri)) * 8
        starts.append(round(clock, 6))
        clock += duration
        total_bits += bits
        total_s += duration
        if duration > 0:
            rates.append(bits / duration)
    init = parsed.segment_map[0].uri if parsed.segment_map else None
    if not init:
        raise PackageError(f"{folder.name}: the media playlist names no init segment")
    return Measured(
        name=folder.name,
        bandwidth=int(max(rates, default=0)),
        average_bandwidth=int(total_bits / total_s) if total_s else 0,
        codecs=codecs_of(folder / str(init)),
        segment_starts=tuple(starts),
        duration_s=total_s,
    )


@dataclass(frozen=True)
class VideoEntry:
    measured: Measured
    width: int
    height: int
    frame_rate: float | None


def master_playlist(videos: list[VideoEntry], audio: Measured | None) -> str:
    """The master playlist: one entry per video rendition, largest first, each playing with the audio."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio is not None:
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,'
            f'URI="{AUDIO}/{PLAYLIST}"'
        )
    for entry in sorted(videos, key=lambda e: e.width * e.height, reverse=True):
        video = entry.measured
        bandwidth = video.bandwidth + (audio.bandwidth if audio else 0)
        average = video.average_bandwidth + (audio.average_bandwidth if audio else 0)
        codecs = f"{video.codecs},{audio.codecs}" if audio else video.codecs
        attributes = [
            f"BANDWIDTH={bandwidth}",
            f"AVERAGE-BANDWIDTH={average}",
            f'CODECS="{codecs}"',
            f"RESOLUTION={entry.width}x{entry.height}",
        ]
        if entry.frame_rate:
            attributes.append(f"FRAME-RATE={entry.frame_rate:.3f}")
        if audio is not None:
            attributes.append(f'AUDIO="{AUDIO_GROUP}"')
        lines += [f"#EXT-X-STREAM-INF:{','.join(attributes)}", f"{video.name}/{PLAYLIST}"]
    return "\n".join(lines) + "\n"


# -- the codecs of an init segment (RFC 6381 names)


def codecs_of(init: Path) -> str:
    """`avc1.PPCCLL` (profile, constraints, level from `avcC`) or `mp4a.40.N` (the audio object
    type from `esds`), for the first track of an init segment."""
    data = init.read_bytes()
    entry = _first_sample_entry(data)
    if entry is None:
        raise PackageError(f"{init.name}: no sample entry")
    kind, body, end = entry
    if kind in (b"avc1", b"avc3"):
        config = _child(data, body + 78, end, b"avcC")
        if config is None or config[1] - config[0] < 4:
            raise PackageError(f"{init.name}: an H.264 track without its avcC")
        profile, constraints, level = data[config[0] + 1 : config[0] + 4]
        return f"{kind.decode()}.{profile:02x}{constraints:02x}{level:02x}"
    if kind == b"mp4a":
        config = _child(data, body + 28, end, b"esds")
        return f"mp4a.40.{_audio_object_type(data, config) if config else 2}"
    raise PackageError(f"{init.name}: a {kind.decode('latin-1')} track, not H.264 or AAC")


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    found, offset = [], start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1 and offset + 16 <= end:
            size, header = struct.unpack_from(">Q", data, offset + 8)[0], 16
        if size < header or offset + size > end:
            break
        found.append((kind, offset + header, offset + size))
        offset += size
    return found


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((body, stop) for found, body, stop in _boxes(data, start, end) if found == kind), None)


def _first_sample_entry(data: bytes) -> tuple[bytes, int, int] | None:
    """moov/trak/mdia/minf/stbl/stsd: its first entry (type, body start, end)."""
    start, end = 0, len(data)
    for kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"):
        found = _child(data, start, end, kind)
        if found is None:
            return None
        start, end = found
    entries = _boxes(data, start + 8, end)  # stsd: version/flags and an entry count first
    return entries[0] if entries else None


def _audio_object_type(data: bytes, esds: tuple[int, int]) -> int:
    """The AudioSpecificConfig's first five bits, in the esds descriptors (ES > DecoderConfig >
    DecoderSpecificInfo); 2 (AAC-LC) when it cannot be read."""
    offset, end = esds[0] + 4, esds[1]  # version and flags
    while offset < end:
        tag = data[offset]
        length, offset = 0, offset + 1
        for _ in range(4):  # the length: up to four bytes of 7 bits
            byte = data[offset]
            offset += 1
            length = (length << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        if tag == 0x03:  # ES_Descriptor: id, flags, then its own descriptors
            offset += 3
        elif tag == 0x04:  # DecoderConfigDescriptor: 13 bytes of fields, then DecoderSpecificInfo
            offset += 13
        elif tag == 0x05:
            return data[offset] >> 3 if offset < end else 2
        else:
            offset += length
    return 2
