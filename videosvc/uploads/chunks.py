"""A tus PATCH's body appended to its upload: all or nothing with a checksum, as much as arrived without."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..aio import run_to_end
from ..errors import ChecksumMismatch, UploadTooLarge, VideoServiceError, from_os_error
from ..store.disk import DiskBudget, Reservation
from ..store.storage import FileSink, Storage, append_file, remove
from .receiver import Limits, receive
from .writers import Writer

#: Checksum algorithms of the tus checksum extension, by their tus names.
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


@dataclass(frozen=True)
class Checksum:
    """A chunk's `Upload-Checksum`: one of CHECKSUMS, and the digest it must have."""

    algorithm: str
    digest: bytes


@dataclass(frozen=True)
class Chunk:
    """The body of one PATCH."""

    chunks: AsyncIterator[bytes]
    #: From Content-Length, when the client sent one.
    declared_bytes: int | None
    checksum: Checksum | None = None


class PastTheEnd(UploadTooLarge):
    def __init__(self, length: int, remaining: int) -> None:
        VideoServiceError.__init__(
            self,
            f"the chunk goes past Upload-Length ({length}): only {remaining} more bytes fit;"
            " nothing of it was kept",
        )
        self.limit_bytes = length


async def append_chunk(
    storage: Storage,
    disk: DiskBudget,
    me: Writer,
    upload_id: str,
    length: int,
    start: int,
    body: Chunk,
    reservation: Reservation,
) -> int:
    """Append the body to the upload that is at `start` of `length` bytes; returns the bytes kept.

    With a checksum: all or nothing (the chunk waits in a file of its own until verified).
    Without: what arrived is kept (tus: store as much as possible), except for a body that runs
    past Upload-Length, which leaves nothing, and bytes past where a newer request took over.
    """
    part = storage.upload_path(upload_id)
    limits = Limits(
        room=length - start, too_much=lambda: PastTheEnd(length, length - start), block_bytes=0, sniff=False
    )
    checksum = body.checksum
    target = storage.new_chunk_path(upload_id) if checksum else part
    digest = CHECKSUMS[checksum.algorithm]() if checksum else None
    sink = await FileSink.open(target, append=checksum is None, digest=digest)
    try:
        try:
            written = await receive(body.chunks, sink, reservation, limits)
        finally:
            await sink.close(durable=True)
        if checksum is not None:
            if digest is None or digest.digest() != checksum.digest:
                raise ChecksumMismatch(
                    f"the chunk does not match its {checksum.algorithm} checksum; it was discarded"
                )
            disk.reserve(written).release()  # the copy needs room while the chunk is kept
            await run_to_end(asyncio.to_thread(append_file, target, part))
        return written
    except PastTheEnd:
        if checksum is None:
            await _cut_back(part, start, reservation)
        raise
    except asyncio.CancelledError:
        if checksum is None and me.stop_at is not None:
            await _cut_back(part, me.stop_at, reservation)
        raise
    except OSError as e:
        raise from_os_error(e) from None
    finally:
        if checksum is not None:
            await run_to_end(asyncio.to_thread(remove, target))


async def _cut_back(part: Path, size: int, reservation: Reservation) -> None:
    def truncate() -> int:
        extra = os.path.getsize(part) - size
        if extra > 0:
            os.truncate(part, size)
        return max(0, extra)

    reservation.refund(await run_to_end(asyncio.to_thread(truncate)))
