"""The disk each unfinished upload's declared bytes hold, until it is stored, ended or expires."""

from __future__ import annotations

from ..store.disk import DiskBudget, Reservation


class Holds:
    def __init__(self, disk: DiskBudget) -> None:
        self._disk = disk
        self._held: dict[str, Reservation] = {}

    def hold(self, upload_id: str, reservation: Reservation) -> None:
        self._held[upload_id] = reservation

    def of(self, upload_id: str, remaining: int) -> Reservation:
        """The upload's reservation; one of its `remaining` bytes for an upload from before a restart
        (promised then: held whatever the disk says now)."""
        reservation = self._held.get(upload_id)
        if reservation is None:
            reservation = self._held[upload_id] = self._disk.reserve(remaining, force=True)
        return reservation

    def release(self, upload_id: str) -> None:
        reservation = self._held.pop(upload_id, None)
        if reservation is not None:
            reservation.release()
