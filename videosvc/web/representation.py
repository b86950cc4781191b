"""The JSON a client sees of a video (the GET shape), and the links in it.

One rendering for every place a video is shown: GET /file/{id}/, the
catalogue, live streams (SSE) and webhook payloads.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from ..config import Settings
from ..media import hls
from ..media.pictures import POSTER, STORYBOARD
from ..signing import LinkFamily, Signer
from ..store.records import VideoStatus
from ..videos.service import VideoService
from ..videos.view import VideoInfo

#: The variant a content link opens when it names none.
CURRENT = "current"


class Representation:
    def __init__(self, settings: Settings, signer: Signer) -> None:
        self._keys = settings.http.api_keys
        self._ttl_s = settings.links.signed_url_ttl_s
        self._signer = signer

    @property
    def signs(self) -> bool:
        """Whether its links carry expiring signatures (API keys are set)."""
        return bool(self._keys)

    def _signed(
        self, path: str, family: LinkFamily, video_id: str, variant: str = "", until: int | None = None
    ) -> str:
        """`path`, with an expiring signature when API keys are set (a browser sends no key from
        <video src> or EventSource); never valid past `until`, the expiry of the link it is
        handed out through."""
        if not self._keys:
            return path
        ttl = self._ttl_s
        expires, signature = self._signer.sign(family, video_id, ttl, variant, until)
        return f"{path}?expires={expires}&signature={signature}"

    def content_url(self, video_id: str, until: int | None = None) -> str:
        return self._signed(f"/file/{video_id}/content", LinkFamily.CONTENT, video_id, CURRENT, until)

    def events_url(self, video_id: str, until: int | None = None) -> str:
        return self._signed(f"/file/{video_id}/events", LinkFamily.EVENTS, video_id, until=until)

    def playback_url(self, video_id: str, until: int | None = None) -> str:
        """The master playlist; with keys, the signature sits in the path, so that every URI the
        playlists name (relative to it) carries it too, and expires with it."""
        if not self._keys:
            return f"/file/{video_id}/hls/{hls.MASTER}"
        expires, signature = self._signer.sign(LinkFamily.PLAYBACK, video_id, self._ttl_s, until=until)
        return f"/file/{video_id}/hls/s/{expires}.{signature}/{hls.MASTER}"

    def picture_url(self, video_id: str, name: str, until: int | None = None) -> str:
        """A picture of the video (poster.jpg, storyboard.vtt); with keys, one signature of the
        pictures family opens its poster, storyboard and thumbnails, and nothing else."""
        return self._signed(f"/file/{video_id}/{name}", LinkFamily.PICTURES, video_id, until=until)

    def relinked(self, shape: dict[str, Any], until: int) -> dict[str, Any]:
        """A GET shape whose links expire no later than `until` (sent through a signed link)."""
        video_id = shape["id"]
        return shape | {
            "contentUrl": self.content_url(video_id, until),
            "eventsUrl": self.events_url(video_id, until),
            "playbackUrl": self.playback_url(video_id, until) if shape.get("playbackUrl") else None,
            "posterUrl": self.picture_url(video_id, POSTER, until) if shape.get("posterUrl") else None,
            "storyboardUrl": self.picture_url(video_id, STORYBOARD, until)
            if shape.get("storyboardUrl")
            else None,
        }

    def video(self, info: VideoInfo) -> dict[str, Any]:
        job = info.job
        original = info.original
        return {
            "id": info.id,
            "filename": info.filename,
            "processing": info.processing,
            "processingSuccess": info.processing_success,
            "processingError": info.processing_error,
            "progress": info.progress,
            "size": info.size_bytes,
            "width": info.width,
            "height": info.height,
            "duration": info.duration_s,
            "createdAt": info.created_at,
            "updatedAt": info.updated_at,
            "originalWidth": original.width if original else None,
            "originalHeight": original.height if original else None,
            "originalSize": original.size_bytes if original else None,
            "contentUrl": self.content_url(info.id),
            "eventsUrl": self.events_url(info.id),
            "playbackUrl": self.playback_url(info.id) if info.playable else None,
            "posterUrl": self.picture_url(info.id, POSTER) if info.has_pictures else None,
            "storyboardUrl": self.picture_url(info.id, STORYBOARD) if info.has_pictures else None,
            "pictures": None
            if info.pictures is None
            else {"state": info.pictures.state.value, "error": info.pictures.error},
            "renditions": [
                {
                    "width": r.width,
                    "height": r.height,
                    "bandwidth": r.bandwidth,
                    "state": r.state.value,
                    "error": r.error,
                }
                for r in info.renditions
            ],
            "job": None
            if job is None
            else {
                "state": job.state.value,
                "width": job.width,
                "height": job.height,
                "progress": job.progress,
                "error": job.error,
                "queuedAt": job.queued_at,
                "startedAt": job.started_at,
                "finishedAt": job.finished_at,
            },
        }


class GetBodies:
    """GET /file/{id}/'s body as bytes, made once per stored state of the video.

    Polling is what clients do, and rendering and encoding the video's JSON was
    most of a GET's own cost. A body is kept with the `VideoStatus` it was made
    from; the status cache hands out a new one after every write, so a kept body
    is used only while its state is still the stored one. Nothing is kept while
    a job is active (its progress moves between writes) or when API keys are set
    (the links in it are signed and expire).
    """

    def __init__(
        self, service: VideoService, representation: Representation, max_entries: int = 10_000
    ) -> None:
        self._service = service
        self._representation = representation
        self._bodies: OrderedDict[str, tuple[VideoStatus, bytes]] = OrderedDict()
        self._max_entries = max_entries

    async def body(self, video_id: str) -> bytes:
        status = await self._service.state(video_id)
        kept = self._bodies.get(video_id)
        if kept is not None and kept[0] is status:
            self._bodies.move_to_end(video_id)
            return kept[1]
        info = self._service.view(status)
        body = json.dumps(self._representation.video(info)).encode()
        if info.processing or self._representation.signs:
            self._bodies.pop(video_id, None)
        else:
            self._bodies[video_id] = (status, body)
            if len(self._bodies) > self._max_entries:
                self._bodies.popitem(last=False)
        return body
