"""What GET shows, kept in memory: clients poll GET, and polling should cost nothing."""

from __future__ import annotations

from collections import OrderedDict

from .records import Commit, VideoStatus


class StatusCache:
    """The stored status of recently read videos.

    It listens to the database's commits and forgets the videos each touched; a read fills
    it only if no commit landed while it ran (`generation`), so an entry is never staler
    than the database.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, VideoStatus] = OrderedDict()
        self._max_entries = max_entries
        self.generation = 0

    def get(self, video_id: str) -> VideoStatus | None:
        status = self._entries.get(video_id)
        if status is not None:
            self._entries.move_to_end(video_id)
        return status

    def put(self, status: VideoStatus, read_at_generation: int) -> None:
        if read_at_generation != self.generation:
            return  # a write landed while this was read: it may be stale already
        self._entries[status.video.id] = status
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def on_commit(self, commit: Commit) -> None:
        self.generation += 1
        for video_id in commit.video_ids:
            self._entries.pop(video_id, None)
