"""The one receiver: an upload's bytes, from the network to a sink, for every kind of upload.

POST /file/ (multipart or raw) and tus PATCHes receive through this loop, so
the limits are enforced once: a size that may not be exceeded (413), the disk
budget checked before each write is made (507, see `store.disk`), and, for a
new file, a look at its first bytes so a non-MP4 is refused before it is all
sent (415).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotAnMp4
from ..media.isobmff import has_ftyp_header
from ..media.sniff import not_mp4_reason
from ..store.disk import Reservation
from ..store.storage import FileSink

#: The first bytes of an upload, read to tell what a file that is not an MP4 looks like.
SNIFF_BYTES = 1024
#: A new file is written in blocks of this size, each in a thread while the next is received.
WRITE_BLOCK_BYTES = 4 * 1024**2


@dataclass(frozen=True)
class IncomingUpload:
    chunks: AsyncIterator[bytes]
    filename: str | None
    #: From Content-Length, when the client sent one.
    declared_bytes: int | None = None


@dataclass(frozen=True)
class ReceivedFile:
    """An upload's bytes, whole, in a file of their own, not yet checked."""

    path: Path
    size: int


@dataclass(frozen=True)
class Limits:
    #: Bytes the upload may still bring; past them, `too_much()` is raised and nothing more is written.
    room: int
    too_much: Callable[[], Exception]
    #: Gather the bytes into blocks of this size before each write; 0: write each piece as it
    #: comes (a tus upload's offset is what is on disk, so HEAD follows the bytes as they arrive).
    block_bytes: int = WRITE_BLOCK_BYTES
    #: Check the first bytes for an MP4 header (a new file); a tus chunk is checked when complete.
    sniff: bool = True


async def receive(
    chunks: AsyncIterator[bytes], sink: FileSink, reservation: Reservation, limits: Limits
) -> int:
    """Every chunk to `sink`, in order; returns the bytes received. The sink is not closed here."""
    size = 0
    head = b"" if limits.sniff else None
    pending: list[bytes] = []
    pending_bytes = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limits.room:
            raise limits.too_much()
        if head is not None:
            head += chunk[: SNIFF_BYTES - len(head)]
            if len(head) >= SNIFF_BYTES:
                check_head(head)
                head = None
        pending.append(chunk)
        pending_bytes += len(chunk)
        if pending_bytes >= limits.block_bytes:
            reservation.take(pending_bytes)  # before the write is made: 507, not a full disk
            await sink.write(pending)
            pending, pending_bytes = [], 0
    if pending:
        reservation.take(pending_bytes)
        await sink.write(pending)
    if head is not None and size:
        check_head(head)
    return size


def check_head(head: bytes) -> None:
    """415 for a file whose first bytes are not an ISO-BMFF `ftyp` box, saying what it looks like."""
    if len(head) < 8:
        raise NotAnMp4("the file is too short to be an MP4")
    if not has_ftyp_header(head):
        raise NotAnMp4(not_mp4_reason(head))
