"""What a file that is not ISO-BMFF looks like, from its first bytes: for a 415 that says so."""

from __future__ import annotations

#: (offset, magic bytes, what it is), checked in order.
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1a\x45\xdf\xa3", "WebM/Matroska (.webm, .mkv)"),
    (0, b"OggS", "Ogg (.ogg, .ogv)"),
    (0, b"FLV", "Flash video (.flv)"),
    (0, b"\x00\x00\x01\xba", "MPEG program stream (.mpg, .vob)"),
    (0, b"\x00\x00\x01\xb3", "MPEG video (.mpg)"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "Windows Media (.wmv, .asf)"),
    (0, b"GIF8", "a GIF image"),
    (0, b"\x89PNG", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"%PDF", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive"),
    (0, b"ID3", "MP3 audio"),
    (0, b"fLaC", "FLAC audio"),
    (0, b"\x1f\x8b", "gzip-compressed data"),
)
TS_PACKET = 188


def describe(head: bytes) -> str:
    """'WebM/Matroska (.webm, .mkv)', 'text', ... or 'not a known media format'."""
    for offset, magic, name in SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI (.avi)"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV audio"
    if len(head) > 2 * TS_PACKET and all(head[i] == 0x47 for i in range(0, 3 * TS_PACKET, TS_PACKET)):
        return "MPEG transport stream (.ts, .m2ts)"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:512]):
        return "text"
    return "not a known media format"


def not_mp4_reason(head: bytes) -> str:
    return (
        f"the file looks like {describe(head)}; accepted is MP4 (ISO-BMFF: .mp4, .m4v, .mov)"
        " with a video stream"
    )
