"""The catalogue: pages of videos, newest first, under an opaque, signed cursor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidRequest
from ..signing import BadSignature, Signer
from ..store.records import PageKey, VideoStatus
from ..store.videos import VideoRepository
from .view import VideoInfo


@dataclass(frozen=True)
class Page:
    videos: list[VideoInfo]
    #: Opaque; None on the last page.
    next_cursor: str | None


class Catalogue:
    def __init__(
        self, videos: VideoRepository, signer: Signer, view: Callable[[VideoStatus], VideoInfo]
    ) -> None:
        self._videos = videos
        self._signer = signer
        self._view = view

    async def page(self, limit: int, cursor: str | None, processing: bool | None) -> Page:
        """A page of videos, newest first. A forged cursor (or one from before a restart without a
        url_signing_key) is refused."""
        after = None
        if cursor is not None:
            try:
                state = self._signer.decode_cursor(cursor)
                after = PageKey(str(state["c"]), str(state["i"]))
            except (BadSignature, KeyError):
                raise InvalidRequest(
                    "cursor: not one this service handed out (or from before a restart);"
                    " start from the first page"
                ) from None
        statuses = await self._videos.page(limit + 1, after, processing)
        videos = [self._view(status) for status in statuses[:limit]]
        next_cursor = None
        if len(statuses) > limit:
            last = videos[-1]
            next_cursor = self._signer.encode_cursor({"c": last.created_at, "i": last.id})
        return Page(videos, next_cursor)
