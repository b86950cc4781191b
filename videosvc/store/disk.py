"""Free disk, reserved before it is written (SPEC §12).

Checking free space once, when an upload starts, lets two uploads that each
fit fill the disk together. Here every byte the service intends to write is
*reserved* first: the declared length of each unfinished upload, the body of
each upload being received, each running job's expected output. The rule is
one line, `free - reserved >= min_free_bytes`, checked synchronously when a
reservation is made (so a burst cannot pass together) and before every write
(so a disk filled by another process is noticed before the service adds to it).

A full disk must still let the service free space: SQLite needs a few pages to
record a DELETE. A small *ballast* file is kept in `data_dir`; when a write of
the database fails for lack of space, the ballast is given up and the write
retried, and it is put back once there is room again.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import InsufficientStorage

log = logging.getLogger(__name__)

#: Bytes kept in the ballast file: room for SQLite to record deletions on a full disk.
BALLAST_BYTES = 8 * 1024**2
#: What a file of n bytes may cost beyond n (blocks, metadata): reserved on top of what is declared.
OVERHEAD_BYTES = 64 * 1024


def overhead(size: int) -> int:
    return OVERHEAD_BYTES + size // 128


class DiskBudget:
    """The free space of `root`, less `min_free_bytes`, shared out among reservations.

    Thread-safe: reservations are made on the event loop, and writes are checked
    from writer threads.
    """

    def __init__(
        self, root: Path, min_free_bytes: int, free_bytes: Callable[[Path], int] | None = None
    ) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self._free_bytes = free_bytes or (lambda path: shutil.disk_usage(path).free)
        self._lock = threading.Lock()
        self._reserved = 0

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    @property
    def ballast(self) -> Path:
        return self.root / "ballast"

    def free_bytes(self) -> int:
        return self._free_bytes(self.root)

    def room(self) -> int:
        """What may still be reserved: free space, less what is spoken for and the margin."""
        return self.free_bytes() - self._reserved - self.min_free_bytes

    def reserve(self, size: int, *, force: bool = False) -> Reservation:
        """Hold `size` bytes (and their overhead) for writes to come; InsufficientStorage if they
        do not fit. `force`: account for bytes already promised (unfinished uploads at start)."""
        wanted = size + overhead(size)
        with self._lock:
            if not force and self.free_bytes() - self._reserved - wanted < self.min_free_bytes:
                raise InsufficientStorage(f"not enough free disk space for {size} more bytes")
            self._reserved += wanted
        return Reservation(self, wanted)

    def _write(self, reservation: Reservation, size: int) -> None:
        with self._lock:
            covered = min(size, reservation.remaining)
            extra = size - covered
            # After the write: free - size, reserved - covered; the rule must still hold.
            if self.free_bytes() - self._reserved - extra < self.min_free_bytes:
                raise InsufficientStorage("not enough free disk space: the upload could not be stored")
            reservation.remaining -= covered
            self._reserved -= covered

    def _refund(self, reservation: Reservation, size: int) -> None:
        with self._lock:
            reservation.remaining += size
            self._reserved += size

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            self._reserved -= reservation.remaining
            reservation.remaining = 0

    def problems(self) -> list[str]:
        """What /health reports: the disk under its margin (the service refuses uploads then)."""
        free = self.free_bytes()
        if free - self._reserved < self.min_free_bytes:
            return ["free disk is below min_free_bytes: uploads and resizes are refused until space is freed"]
        return []

    # -- the ballast

    def keep_ballast(self) -> None:
        """Put the ballast back if it is missing and it fits (at start, and after space was freed)."""
        if self.ballast.exists() or self.room() < 2 * BALLAST_BYTES:
            return
        temp = self.ballast.with_suffix(".tmp")
        try:
            with open(temp, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, BALLAST_BYTES)
            os.replace(temp, self.ballast)
        except OSError as e:
            temp.unlink(missing_ok=True)
            log.warning("could not keep a ballast file: %s", e.strerror)

    def give_up_ballast(self) -> bool:
        """The disk is full: free the ballast so the database can record deletions; False if gone."""
        try:
            self.ballast.unlink()
        except FileNotFoundError:
            return False
        log.warning("the disk is full: released the ballast file so deletions can be recorded")
        return True


class Reservation:
    """Bytes held for one writer; each write takes from it, `release` gives back the rest."""

    def __init__(self, budget: DiskBudget, size: int) -> None:
        self._budget = budget
        self.remaining = size

    def take(self, size: int) -> None:
        """Before writing `size` bytes: InsufficientStorage if the write would cross the line."""
        self._budget._write(self, size)

    def refund(self, size: int) -> None:
        """Bytes written from it were removed again (cut back): they are held once more."""
        self._budget._refund(self, size)

    def release(self) -> None:
        self._budget._release(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def out_of_space(error: BaseException) -> bool:
    """An OSError or SQLite error that may say the disk is full. SQLite says "disk I/O error" when it
    cannot even make its shared-memory file (after a restart on a full disk)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return any(words in str(error) for words in ("database or disk is full", "disk I/O error"))
