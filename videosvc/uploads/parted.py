"""An upload kept in an object store as it arrives: equal parts, and a tail (SPEC §15).

What tus on S3 needs (and what tusd's S3 store does): the bytes received are
sent on as the parts of a multipart upload, all of one size fixed for the upload
(equal parts, as R2 requires), and the bytes that do not fill a part yet are an
object of their own, the tail. So the upload's offset is what the store holds,
and any process (a restarted one, another node) resumes it from there.

The tail is named by the part it will become (`<key>.part-<n>`). A crash after
part n is written but before its tail is replaced leaves a tail `n` whose bytes
are in part n already: a tail counts only when its number is the next part's.
Nothing is counted twice, and the client resumes at the offset the store says.

Not yet used by the tus routes: the building block, held to both stores by
`tests/test_objects.py`.
"""

from __future__ import annotations

import contextlib
import math

from ..store.objects import MAX_PARTS, ObjectMissing, ObjectStore, Part

#: The smallest part S3 takes (but the last).
MIN_PART_BYTES = 5 * 1024**2
#: The part size of an upload whose largest size allows it.
DEFAULT_PART_BYTES = 8 * 1024**2


def part_bytes_for(max_bytes: int) -> int:
    """One part size for an upload of at most `max_bytes`: fewer than 10,000 equal parts, in MiB."""
    mib = 1024**2
    needed = math.ceil(max_bytes / (MAX_PARTS - 1) / mib) * mib
    return max(DEFAULT_PART_BYTES, needed)


class PartedUpload:
    def __init__(self, store: ObjectStore, key: str, upload_id: str, part_bytes: int) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"parts of {part_bytes} bytes: S3 takes {MIN_PART_BYTES} at least")
        self.store = store
        self.key = key
        self.upload_id = upload_id
        self.part_bytes = part_bytes
        self._parts: list[Part] | None = None
        #: The tail as this process holds it: what the store's tail says, and what came since.
        self._tail: bytearray | None = None

    @classmethod
    async def start(cls, store: ObjectStore, key: str, part_bytes: int) -> PartedUpload:
        return cls(store, key, await store.start_parts(key), part_bytes)

    def _tail_key(self, number: int) -> str:
        return f"{self.key}.part-{number}"

    async def _load(self) -> tuple[list[Part], bytearray]:
        """The parts and the tail, from the store the first time (a resumed upload)."""
        if self._parts is None or self._tail is None:
            self._parts = await self.store.parts(self.key, self.upload_id)
            try:
                tail = b"".join([c async for c in self.store.read(self._tail_key(len(self._parts) + 1))])
            except ObjectMissing:
                tail = b""
            self._tail = bytearray(tail)
        return self._parts, self._tail

    async def offset(self) -> int:
        """The bytes the upload holds (the store's parts and this process's tail)."""
        parts, tail = await self._load()
        return sum(part.size for part in parts) + len(tail)

    async def append(self, data: bytes) -> None:
        """Add bytes: each part filled is sent to the store at once; the rest waits in the tail
        (kept in the store by `save`)."""
        parts, tail = await self._load()
        tail += data
        while len(tail) >= self.part_bytes:
            number = len(parts) + 1
            parts.append(
                await self.store.put_part(self.key, self.upload_id, number, bytes(tail[: self.part_bytes]))
            )
            del tail[: self.part_bytes]
            with contextlib.suppress(ObjectMissing):  # its bytes are in the part now
                await self.store.delete(self._tail_key(number))

    async def save(self) -> None:
        """Keep the tail in the store (at the end of each request, also one cut short)."""
        parts, tail = await self._load()
        if tail:
            await self.store.put_bytes(self._tail_key(len(parts) + 1), bytes(tail))

    async def finish(self) -> None:
        """Publish the upload at its key: its parts, and the tail as the last one."""
        parts, tail = await self._load()
        number = len(parts) + 1
        if tail or not parts:  # (an empty upload is one empty part)
            parts.append(await self.store.put_part(self.key, self.upload_id, number, bytes(tail)))
        await self.store.finish_parts(self.key, self.upload_id, parts)
        await self.store.delete(self._tail_key(number))
        tail.clear()

    async def abort(self) -> None:
        """Drop the upload: its parts, and its tail (what the expiry sweep does)."""
        parts, _ = await self._load()
        await self.store.abort_parts(self.key, self.upload_id)
        for number in (len(parts), len(parts) + 1):
            if number:
                await self.store.delete(self._tail_key(number))
