"""The JSON a client sees of a video (the GET shape), and the links in it.

One rendering for every place a video is shown: GET /file/{id}/, the
catalogue, live streams (SSE) and webhook payloads.
"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .service import VideoInfo
from .signing import Signer


class Representation:
    def __init__(self, settings: Settings, signer: Signer) -> None:
        self._settings = settings.http
        self._signer = signer

    def _signed(self, path: str, video_id: str) -> str:
        """`path`, with an expiring signature when API keys are set (a browser sends no key
        from <video src> or EventSource)."""
        if not self._settings.api_keys:
            return path
        expires, signature = self._signer.sign_content(video_id, self._settings.signed_url_ttl_s)
        return f"{path}?expires={expires}&signature={signature}"

    def content_url(self, video_id: str) -> str:
        return self._signed(f"/file/{video_id}/content", video_id)

    def events_url(self, video_id: str) -> str:
        return self._signed(f"/file/{video_id}/events", video_id)

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
