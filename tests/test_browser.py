"""A real browser (Debian's chromium, driven by Playwright) plays and seeks in /file/{id}/content."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .browser import needs_chromium
from .helpers import Samples
from .server import ServerProcess

pytestmark = needs_chromium


def _post_video(url: str, path: Path, key: str | None) -> str:
    headers = {"Content-Type": "video/mp4", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url + "/file/", data=path.read_bytes(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(json.load(response)["id"])


def _get_json(url: str, key: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        body: dict[str, Any] = json.load(response)
        return body


@pytest.mark.parametrize("key", [None, "secret"], ids=["open", "with-api-keys"])
async def test_a_video_element_plays_and_a_seek_is_a_range_request_answered_206(
    page: Any, data_dir: Path, samples: Samples, key: str | None
) -> None:
    source = samples.noisy(10)  # 57 MB: a seek to the end is far past what the browser buffered
    settings = {"api_keys": key} if key else {}
    with ServerProcess(data_dir, **settings) as server:
        video_id = await asyncio.to_thread(_post_video, server.url, source, key)
        # With keys, the page has no header to send: the signed contentUrl must be enough.
        info = await asyncio.to_thread(_get_json, f"{server.url}/file/{video_id}/", key)
        content_url = server.url + info["contentUrl"]
        ranged: list[tuple[str, int]] = []
        page.on(
            "response",
            lambda r: (
                ranged.append((r.request.headers.get("range", ""), r.status)) if "/content" in r.url else None
            ),
        )
        await page.set_content(f'<video id="v" src="{content_url}" muted playsinline></video>')
        started = await page.evaluate(
            """() => new Promise((done) => {
                const v = document.getElementById("v");
                v.addEventListener("error", () => done("error " + (v.error && v.error.code)));
                v.play().then(() => v.addEventListener("timeupdate", function once() {
                    if (v.currentTime > 0.2) { v.removeEventListener("timeupdate", once); done("playing"); }
                }), (e) => done("play failed: " + e));
            })"""
        )
        assert started == "playing", started
        seeked = await page.evaluate(
            """() => new Promise((done) => {
                const v = document.getElementById("v");
                v.addEventListener("seeked", () => done(v.currentTime), { once: true });
                v.currentTime = 8.5;
            })"""
        )
        assert abs(seeked - 8.5) < 0.5
        far = [
            (header, status)
            for header, status in ranged
            if header.startswith("bytes=") and not header.startswith("bytes=0-")
        ]
        assert far, f"no Range request past the start: {ranged}"
        offset = max(int(header.removeprefix("bytes=").split("-")[0]) for header, _ in far)
        assert offset > source.stat().st_size // 2, ranged  # the seek, not the next bytes of the stream
        assert all(status == 206 for _, status in far), far
    assert "Traceback" not in server.log()
