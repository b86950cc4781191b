"""Pictures of a video (SPEC §14): the poster, the storyboard and thumbnails, as clients read them.

The clips are made here with lavfi and say what they show: one starts black
(a poster must not be black), one's brightness is its own clock (16 + 50 x t, so
a thumbnail's mean luma tells the time it shows). Every picture is read back
with ffmpeg/ffprobe; every VTT cue is parsed and checked against the sprite.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from videosvc.app import create_app
from videosvc.hooks import Hooks
from videosvc.jobs.grab import Grab, OpenFiles
from videosvc.media.probe import Toolchain
from videosvc.videos import thumbnails as thumbnails_module
from videosvc.videos.decoders import DecoderFailed, Decoders
from videosvc.web.keys import THUMBNAILS

from .conftest import ServiceTestServer, both_backends
from .helpers import Client, Samples, decoder_processes, ffmpeg_processes, get_video, poll_until, upload
from .receiver import WebhookReceiver, new_secret
from .server import ServerProcess
from .sse import EventReader
from .test_hls import h264_aac

PICTURES = {"pictures_enabled": True}
#: The clock clip: 4 s at 25 fps whose luma is 16 + 50 x t (t in seconds), keyframes every 0.5 s.
CLOCK_S = 4.0


def black_then_pattern(samples: Samples) -> Path:
    """4 s of black, then 3 s of testsrc2, 320x240, keyframes every second, with sound: mostly black,
    so that ffmpeg's `thumbnail` filter alone would pick a black frame (the most representative)."""
    return samples.make(
        "black_then_pattern_4_3.mp4",
        ["-f", "lavfi", "-i", "color=black:size=320x240:rate=25:duration=4",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=7",
         "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"],
    )  # fmt: skip


def clock(samples: Samples, b_frames: bool = False) -> Path:
    """Frames whose luma is their own time (16 + 50t). With `b_frames`, as x264 writes by
    default: B-frames (some no frame refers to) between the P-frames, a keyframe every 2 s."""
    encoding = (
        ["-preset", "fast", "-bf", "3", "-g", "50"]
        if b_frames
        else ["-preset", "ultrafast", "-qp", "0", "-g", "12"]
    )
    return samples.make(
        "clock_b.mp4" if b_frames else "clock.mp4",
        ["-f", "lavfi", "-i", f"nullsrc=size=320x240:rate=25:duration={CLOCK_S},format=gray,"
         "geq=lum='16+50*T'", "-c:v", "libx264", *encoding, "-pix_fmt", "yuv420p"],
    )  # fmt: skip


def luma(tools: Toolchain, image: Path) -> tuple[float, float]:
    """The mean luma of a picture, and the share of its pixels darker than 32 (black to `blackframe`)."""
    raw = subprocess.run(
        [tools.ffmpeg, "-v", "error", "-i", str(image), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return statistics.fmean(raw), sum(1 for value in raw if value < 32) / len(raw)


def size_of(tools: Toolchain, image: Path) -> tuple[int, int]:
    assert tools.ffprobe is not None
    out = subprocess.run(
        [tools.ffprobe, "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", str(image)],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout.strip()  # fmt: skip
    width, height = out.split(",")
    return int(width), int(height)


async def fetch(
    client: Client | aiohttp.ClientSession, url: str, to: Path, **headers: str
) -> aiohttp.ClientResponse:
    response = await client.get(url, headers=headers)
    body = await response.read()
    assert response.status == 200, body[:300]
    to.write_bytes(body)
    return response


async def wait_pictures(client: Client, video_id: str, **headers: str) -> dict[str, Any]:
    return await poll_until(
        lambda: get_video(client, video_id, **headers),
        f"the pictures of {video_id}",
        until=lambda body: body["pictures"]["state"] in ("ready", "failed"),
    )


def cues(vtt: str) -> list[tuple[float, float, str, tuple[int, int, int, int]]]:
    """(start, end, sprite URI, (x, y, w, h)) of each cue."""

    def seconds(stamp: str) -> float:
        hours, minutes, rest = stamp.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(rest)

    assert vtt.startswith("WEBVTT")
    found = []
    for start, end, uri, xywh in re.findall(r"(\S+) --> (\S+)\n(\S+)#xywh=(\S+)", vtt):
        x, y, w, h = (int(v) for v in xywh.split(","))
        found.append((seconds(start), seconds(end), uri, (x, y, w, h)))
    return found


@both_backends
async def test_the_poster_is_not_black_and_the_storyboard_covers_the_video(
    make_client: Any, samples: Samples, tools: Toolchain, tmp_path: Path, data_dir: Path
) -> None:
    client = await make_client(**PICTURES)
    video_id = await upload(client, black_then_pattern(samples))
    stream = EventReader(await client.get(f"/file/{video_id}/events"))
    first = await stream.next()
    assert first is not None and first.json()["pictures"]["state"] in ("queued", "running", "ready")
    # The live stream hears of them: an event whose shape has the poster.
    if first.json()["posterUrl"] is None:
        await stream.until(lambda event: event.json()["posterUrl"] is not None)
    body = await wait_pictures(client, video_id)
    assert body["pictures"] == {"state": "ready", "error": None}
    assert body["posterUrl"] == f"/file/{video_id}/poster.jpg"
    assert body["storyboardUrl"] == f"/file/{video_id}/storyboard.vtt"
    assert body["processing"] is False and body["job"] is None  # a PATCH's fields, untouched

    poster = tmp_path / "poster.jpg"
    response = await fetch(client, body["posterUrl"], poster)
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert size_of(tools, poster) == (320, 240)
    mean, dark = luma(tools, poster)
    assert dark < 0.5 and mean > 40, (mean, dark)  # the pattern, not the black first seconds
    # A thumbnail asked for with no time shows the poster's frame.
    default = tmp_path / "default.jpg"
    await fetch(client, f"/file/{video_id}/thumbnail.jpg?width=320", default)
    assert abs(luma(tools, default)[0] - mean) < 6

    vtt_response = await client.get(body["storyboardUrl"])
    assert vtt_response.headers["Content-Type"].startswith("text/vtt")
    board = cues(await vtt_response.text())
    sprite = tmp_path / "sprite.jpg"
    await fetch(client, f"/file/{video_id}/{board[0][2]}", sprite)  # relative to the VTT
    sprite_width, sprite_height = size_of(tools, sprite)
    assert board[0][0] == 0 and abs(board[-1][1] - body["duration"]) < 0.01  # all of it
    assert all(a[1] == b[0] for a, b in itertools.pairwise(board))  # no gap, no overlap
    assert len(board) >= 4
    for _, _, uri, (x, y, w, h) in board:
        assert uri == "storyboard.jpg" and (w, h) == (160, 120)
        assert x >= 0 and x + w <= sprite_width and y >= 0 and y + h <= sprite_height

    catalogue = await (await client.get("/file/")).json()
    assert catalogue["items"][0]["posterUrl"] == body["posterUrl"]
    assert (await client.delete(f"/file/{video_id}")).status == 200
    assert (await client.get(body["posterUrl"])).status == 404
    assert not (data_dir / "pictures" / video_id).exists()
    assert not (data_dir / "thumbnails" / video_id).exists()


async def test_a_thumbnail_shows_the_frame_at_its_time_at_its_width_and_is_made_once(
    make_client: Any, samples: Samples, tools: Toolchain, tmp_path: Path, data_dir: Path
) -> None:
    client = await make_client(pictures_enabled=False)  # thumbnails need no poster
    video_id = await upload(client, clock(samples))
    thumbnails = client.server.app[THUMBNAILS]
    for asked, shown in ((0.0, 0.0), (1.04, 1.0), (2.5, 2.5), (3.96, 4.0)):
        image = tmp_path / f"{asked}.jpg"
        response = await fetch(client, f"/file/{video_id}/thumbnail.jpg?time={asked}&width=100", image)
        assert response.headers["Content-Type"] == "image/jpeg"
        assert size_of(tools, image) == (96, 72)  # 100 rounded to a multiple of 16; the aspect kept
        # The first frame at or after the time (25 fps: 2.5 s shows the frame of 2.52 s, luma +2 a
        # frame); past the last frame (3.96 s), the last.
        frame_s = min(math.ceil(round(shown * 25, 6)) / 25, CLOCK_S - 0.04)
        assert abs(luma(tools, image)[0] - (16 + 50 * frame_s)) <= 1, (asked, luma(tools, image)[0])

    made = thumbnails.made
    url = f"/file/{video_id}/thumbnail.jpg?time=2.5&width=100"
    first = await client.get(url)
    again = await client.get(url.replace("2.5", "2.50").replace("100", "97"))  # the same, rounded
    assert thumbnails.made == made  # from the cache: no ffmpeg
    assert await first.read() == await again.read()
    assert (await client.get(url, headers={"If-None-Match": first.headers["ETag"]})).status == 304

    webp = await client.get(f"/file/{video_id}/thumbnail.webp?time=1&width=64")
    data = await webp.read()
    assert webp.headers["Content-Type"] == "image/webp" and data[:4] == b"RIFF" and data[8:12] == b"WEBP"

    # Bad parameters: a clear 400, and nothing left behind.
    for query in ("time=-1", "time=nan", "time=inf", "time=1e3", "time=4.1", "time=", "width=8",
                  "width=1930", "width=abc", "width=1e2", "time=\uff11"):  # fmt: skip
        response = await client.get(f"/file/{video_id}/thumbnail.jpg?{query}")
        assert response.status == 400, query
        assert "error" in await response.json()
    assert (await client.get(f"/file/{video_id}/thumbnail.png")).status == 400
    folder = data_dir / "thumbnails" / video_id
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert len(list(folder.iterdir())) == 5

    assert (await client.delete(f"/file/{video_id}")).status == 200
    assert not folder.exists()
    assert (await client.get(url)).status == 404


async def test_every_time_of_a_clip_with_b_frames_shows_its_own_frame(
    make_client: Any, samples: Samples, tools: Toolchain, tmp_path: Path
) -> None:
    # The frames before the time that nothing refers to are not decoded: the one at it is.
    client = await make_client(pictures_enabled=False, thumbnail_concurrency=4)
    video_id = await upload(client, clock(samples, b_frames=True))

    async def shown(tenths: int) -> float:
        image = tmp_path / f"{tenths}.jpg"
        await fetch(client, f"/file/{video_id}/thumbnail.jpg?time={tenths / 10}&width=64", image)
        return (await asyncio.to_thread(luma, tools, image))[0]

    tenths = range(round(CLOCK_S * 10) + 1)  # 0.0 to 4.0 s
    for start in range(0, len(tenths), 4):
        batch = tenths[start : start + 4]
        for at, value in zip(batch, await asyncio.gather(*(shown(t) for t in batch)), strict=True):
            frame_s = min(math.ceil(round(at / 10 * 25, 6)) / 25, CLOCK_S - 0.04)
            assert abs(value - (16 + 50 * frame_s)) <= 1.5, (at / 10, value, 16 + 50 * frame_s)


async def test_the_thumbnail_cache_keeps_to_its_size_least_recently_used_out_first(
    make_client: Any, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(thumbnail_cache_bytes=1_200)
    video_id = await upload(client, clock(samples))
    folder = data_dir / "thumbnails" / video_id

    async def thumbnail(t: float) -> None:
        response = await client.get(f"/file/{video_id}/thumbnail.jpg?time={t}&width=160")
        assert response.status == 200
        await response.read()

    def kept() -> set[str]:
        return {p.name.split("-")[0] for p in folder.iterdir()}  # tenths of a second

    for t in (0.5, 1.0, 1.5):
        await thumbnail(t)
    each = [p.stat().st_size for p in folder.iterdir()]
    assert kept() == {"5", "10", "15"} and sum(each) <= 1_200 < sum(each) + min(each)  # room for 3
    await thumbnail(0.5)  # used again: now the most recently used
    await thumbnail(2.0)  # one too many: the least recently used goes
    assert kept() == {"5", "15", "20"}
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 1_200


async def test_one_client_flooding_thumbnails_gets_its_share_and_the_service_stays_fast(
    samples: Samples, data_dir: Path
) -> None:
    source = samples.make(  # 200 distinct tenths of a second
        "flood_20s.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=20.5", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"],
    )  # fmt: skip
    with ServerProcess(data_dir, thumbnail_concurrency=2, thumbnail_cache_bytes=200_000) as server:
        assert server.process is not None
        pid = server.process.pid

        def rss_kib() -> int:
            """The server's and its thumbnail decoders' (processes of its own)."""
            total = 0
            for each in [pid, *decoder_processes(of=pid)]:
                with contextlib.suppress(FileNotFoundError):  # a decoder gone meanwhile
                    status = Path(f"/proc/{each}/status").read_text()
                    total += int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]
            return total

        async with aiohttp.ClientSession(server.url) as session:
            with source.open("rb") as f:
                video_id = (await (await session.post("/file/", data={"file": f})).json())["id"]

            async def warm(t: float) -> None:
                async with session.get(f"/file/{video_id}/thumbnail.jpg?time={t}&width=16") as r:
                    assert r.status == 200

            for t in (0, 1, 2):  # warm: the first requests of a process cost more; two decoders start
                await asyncio.gather(warm(t), warm(t + 0.5))
            before = rss_kib()
            statuses: list[int] = []
            health_ms: list[float] = []
            most_decoders = 0
            flooding = True

            async def one(t: float) -> None:
                while True:  # a greedy client: asks again 20 ms after each 429
                    async with session.get(f"/file/{video_id}/thumbnail.jpg?time={t:.1f}&width=320") as r:
                        await r.read()
                        statuses.append(r.status)
                        if r.status != 429:
                            return
                    await asyncio.sleep(0.02)

            def watch() -> None:
                """/health as a second client sees it, from a thread of its own (not this test's
                event loop, busy with the flood)."""
                nonlocal most_decoders
                while flooding:
                    started = time.perf_counter()
                    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
                        r.read()
                    health_ms.append((time.perf_counter() - started) * 1000)
                    most_decoders = max(most_decoders, len(decoder_processes(of=pid)))
                    time.sleep(0.01)

            watcher = asyncio.create_task(asyncio.to_thread(watch))
            times = [i / 10 for i in range(200)]  # 200 distinct times, 0.0-19.9 s
            for start in range(0, 200, 20):  # 20 in flight at once from this one client
                await asyncio.gather(*(one(t) for t in times[start : start + 20]))
            flooding = False
            await watcher
            grown_mib = (rss_kib() - before) / 1024
    assert statuses.count(200) == 200 and set(statuses) <= {200, 429}
    assert 429 in statuses  # its share: at most thumbnail_concurrency at a time
    assert 1 <= most_decoders <= 2  # seen (the measure is of the server's own), and no more
    health_ms.sort()
    p99 = health_ms[int(len(health_ms) * 0.99)]
    assert p99 < 100, f"/health p99 {p99:.1f} ms over {len(health_ms)} requests"
    assert grown_mib < 50, f"the server grew by {grown_mib:.1f} MiB"
    folder = data_dir / "thumbnails" / video_id
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 200_000  # the cache's cap held


async def test_with_api_keys_one_pictures_signature_opens_its_pictures_and_nothing_else(
    make_client: Any, samples: Samples, tmp_path: Path
) -> None:
    key = {"Authorization": "Bearer k1"}
    client = await make_client(**PICTURES, api_keys="k1")
    ids = []
    for _ in range(2):
        with black_then_pattern(samples).open("rb") as f:
            response = await client.post("/file/", data={"file": f}, headers=key)
            ids.append((await response.json())["id"])
    video_id, other = ids
    body = await wait_pictures(client, video_id, **key)
    await wait_pictures(client, other, **key)
    poster_url = body["posterUrl"]
    assert poster_url.startswith(f"/file/{video_id}/poster.jpg?expires=")
    query = poster_url.split("?", 1)[1]

    # With no key, the signed links open the poster, the storyboard, its sprite and thumbnails.
    poster = await client.get(poster_url)
    assert poster.status == 200 and poster.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    vtt = await client.get(body["storyboardUrl"])
    assert vtt.status == 200
    board = cues(await vtt.text())
    assert all(uri == f"storyboard.jpg?{query}" for _, _, uri, _ in board)  # the sprite's URI is signed too
    assert (await client.get(f"/file/{video_id}/{board[0][2]}")).status == 200
    thumbnail = await client.get(f"/file/{video_id}/thumbnail.jpg?time=3&{query}")
    assert thumbnail.status == 200 and thumbnail.headers["Cache-Control"].startswith("private")

    # Without a key or a signature: 401. Forged or of another family or video: 403.
    for path in ("poster.jpg", "storyboard.vtt", "storyboard.jpg", "thumbnail.jpg?time=1"):
        assert (await client.get(f"/file/{video_id}/{path}")).status == 401, path
    content_query = body["contentUrl"].split("?", 1)[1]
    expires, signature = (part.split("=")[1] for part in query.split("&"))
    for forged in (
        f"/file/{other}/poster.jpg?{query}",  # another video's
        f"/file/{video_id}/poster.jpg?expires={int(expires) + 1}&signature={signature}",  # a later expiry
        f"/file/{video_id}/poster.jpg?{content_query}",  # the content's signature
        f"/file/{video_id}/content?{query}",  # the pictures' signature on the content
        f"/file/{video_id}/events?{query}",
    ):
        assert (await client.get(forged)).status == 403, forged


async def test_pictures_are_made_after_fast_first_play_and_before_the_ladder(
    aiohttp_client: Any, make_settings: Any, samples: Samples
) -> None:
    ladder_may_run = asyncio.Event()

    async def hold_the_ladder() -> None:
        await ladder_may_run.wait()

    settings = make_settings(**PICTURES, hls_enabled=True, hls_ladder="360,240,180", hls_segment_s=2)
    client = await aiohttp_client(
        ServiceTestServer(create_app(settings, Hooks(before_ladder=hold_the_ladder)))
    )
    video_id = await upload(client, h264_aac(samples, 640, 360, 4.0))
    body = await wait_pictures(client, video_id)
    assert body["pictures"]["state"] == "ready"
    assert [r["state"] for r in body["renditions"]] == ["ready", "queued", "queued"]  # the ladder waits
    ladder_may_run.set()
    await poll_until(
        lambda: get_video(client, video_id), "the ladder",
        until=lambda body: [r["state"] for r in body["renditions"]] == ["ready"] * 3,
    )  # fmt: skip


async def test_pictures_over_the_job_caps_fail_with_the_reason_and_the_upload_stays(
    make_client: Any, samples: Samples
) -> None:
    # Keyframes 10 s apart: a storyboard would decode every frame, 320x240x300 pixel-frames, over the cap.
    sparse = samples.make(
        "sparse_keyframes.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=12", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p"],
    )  # fmt: skip
    client = await make_client(**PICTURES, max_job_pixel_frames=1_000_000)
    video_id = await upload(client, sparse)
    body = await wait_pictures(client, video_id)
    assert body["pictures"]["state"] == "failed" and "max_job_pixel_frames" in body["pictures"]["error"]
    assert body["posterUrl"] is None and body["storyboardUrl"] is None
    assert (await client.get(f"/file/{video_id}/poster.jpg")).status == 404
    assert (await client.get(f"/file/{video_id}/content")).status == 200
    # A thumbnail needs no storyboard: it is still made, from the nearest keyframe on.
    assert (await client.get(f"/file/{video_id}/thumbnail.jpg?time=6")).status == 200
    # Keyframes a second apart: the tiles are keyframes, a decode of a few frames, under the same cap.
    dense = await upload(client, black_then_pattern(samples))
    assert (await wait_pictures(client, dense))["pictures"] == {"state": "ready", "error": None}


async def test_pictures_off_then_on_makes_the_missing_ones_and_the_webhook_says_so(
    make_client: Any, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(pictures_enabled=False)
    video_id = await upload(client, black_then_pattern(samples))
    body = await get_video(client, video_id)
    assert body["pictures"] is None and body["posterUrl"] is None
    await client.close()

    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        client = await make_client(**PICTURES, webhook_urls=(receiver.url,), webhook_secret=secret)
        await receiver.wait_for(lambda r: len(r.accepted) == 1)
        [ready] = receiver.accepted
        assert ready.type == "pictures.ready" and ready.data["posterUrl"] == f"/file/{video_id}/poster.jpg"
        assert ready.data == await get_video(client, video_id)
    assert sorted(p.name for p in (data_dir / "pictures" / video_id).iterdir()) == [
        "poster.jpg", "storyboard.jpg", "storyboard.vtt",
    ]  # fmt: skip
    assert not list((data_dir / "jobs").iterdir())


async def test_pictures_cut_by_a_crash_are_made_at_the_next_start(samples: Samples, data_dir: Path) -> None:
    # Keyframes far apart and a long clip: the storyboard decodes every frame, long enough to be cut.
    long_clip = samples.make(
        "long_sparse.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=60", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "1500", "-pix_fmt", "yuv420p"],
    )  # fmt: skip
    with ServerProcess(data_dir, pictures_enabled="true", job_timeout_s=600) as server:
        async with aiohttp.ClientSession(server.url) as session:
            with long_clip.open("rb") as f:
                video_id = (await (await session.post("/file/", data={"file": f})).json())["id"]
            await poll_until(lambda: ffmpeg_processes(data_dir), "the pictures' ffmpeg", every_s=0.01)
            server.kill9()
    await poll_until(lambda: not ffmpeg_processes(data_dir), "ffmpeg to die with the server", 10)
    assert not (data_dir / "pictures" / video_id / "poster.jpg").exists()

    with ServerProcess(data_dir, pictures_enabled="true") as server:
        async with aiohttp.ClientSession(server.url) as session:

            async def state() -> str:
                body = await (await session.get(f"/file/{video_id}")).json()
                return str(body["pictures"]["state"])

            assert (
                await poll_until(state, "the pictures", until=lambda s: s in ("ready", "failed")) == "ready"
            )
    assert not (data_dir / "pictures" / video_id / ".work").exists()


async def test_an_ffmpeg_without_libwebp_answers_webp_with_406_and_jpeg_still_works(
    make_client: Any, samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PyAV built against an FFmpeg without libwebp (its wheels have it; one built from source
    # may not): what it says of its encoders, since such a build cannot be made here.
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libwebp"})
    client = await make_client()
    video_id = await upload(client, clock(samples))
    webp = await client.get(f"/file/{video_id}/thumbnail.webp?time=1")
    assert webp.status == 406 and "libwebp" in (await webp.json())["error"]
    assert (await client.get(f"/file/{video_id}/thumbnail.jpg?time=1")).status == 200


def gray(tools: Toolchain, image: Path) -> bytes:
    return subprocess.run(
        [tools.ffmpeg, "-v", "error", "-i", str(image), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip


@pytest.mark.parametrize("degrees", [90, 270])
async def test_a_rotated_video_s_thumbnail_shows_what_ffmpeg_and_players_show(
    make_client: Any, samples: Samples, tools: Toolchain, tmp_path: Path, degrees: int
) -> None:
    source = samples.rotated(degrees)  # 320x240 frames that display as 240x320
    client = await make_client(pictures_enabled=False)
    video_id = await upload(client, source)
    ours, theirs = tmp_path / "ours.jpg", tmp_path / "theirs.jpg"
    await fetch(client, f"/file/{video_id}/thumbnail.jpg?time=0.5&width=240", ours)
    await asyncio.to_thread(  # the ffmpeg command, which turns the frame as its display matrix says
        subprocess.run,
        [tools.ffmpeg, "-v", "error", "-ss", "0.5", "-i", str(source), "-vf", "scale=240:-2",
         "-frames:v", "1", "-q:v", "3", "-y", str(theirs)],
        check=True, timeout=30,
    )  # fmt: skip
    assert size_of(tools, ours) == size_of(tools, theirs) == (240, 320)
    size, expected = ours.stat().st_size, theirs.stat().st_size  # the JPEG quality of `-q:v 3`
    assert abs(size - expected) <= 0.05 * expected, (size, expected)
    a, b = gray(tools, ours), gray(tools, theirs)
    assert statistics.fmean(abs(x - y) for x, y in zip(a, b, strict=True)) < 6  # turned the same way


async def test_a_killed_or_stuck_decoder_costs_one_thumbnail_and_the_next_is_made(
    make_client: Any, samples: Samples, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(pictures_enabled=False, thumbnail_concurrency=1)
    video_id = await upload(client, clock(samples))
    decoders = client.server.app[THUMBNAILS].decoders
    url = f"/file/{video_id}/thumbnail.jpg?time={{}}&width=64"
    assert (await client.get(url.format(0.5))).status == 200
    [killed] = decoders.pids()
    os.kill(killed, signal.SIGKILL)  # the OOM killer, or an operator
    await poll_until(lambda: killed not in decoder_processes(), "the decoder to die", 10)
    assert (await client.get(url.format(1.0))).status == 200  # a new decoder made it
    [second] = decoders.pids()
    assert second != killed

    os.kill(second, signal.SIGSTOP)  # a decode that would not end (a hung decoder)
    monkeypatch.setattr(thumbnails_module, "TIMEOUT_S", 1.0)  # (not 30 s in a test)
    stuck = await client.get(url.format(1.5))
    assert stuck.status == 500 and "could not be made" in (await stuck.json())["error"]
    await poll_until(lambda: second not in decoder_processes(), "the stuck decoder to be killed", 10)
    monkeypatch.undo()
    assert (await client.get(url.format(1.5))).status == 200
    folder = data_dir / "thumbnails" / video_id
    assert sorted(p.name.split("-")[0] for p in folder.iterdir()) == ["10", "15", "5"]  # no temp


def held_by(decoders: Decoders, name: str) -> list[str]:
    """The files named `name` the decoder holds open (deleted ones end in " (deleted)")."""
    [pid] = decoders.pids()
    links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    return [link for link in links if name in link]


async def test_a_decoder_lets_go_of_a_video_replaced_or_deleted(samples: Samples, tmp_path: Path) -> None:
    video, other, out = tmp_path / "video.mp4", tmp_path / "other.mp4", tmp_path / "out.jpg"
    shutil.copy(clock(samples), video)
    shutil.copy(clock(samples), other)
    # Never idle long enough to close everything: what is closed here is closed for its file.
    decoders = Decoders(size=1, niceness=0, max_memory_bytes=1024**3, idle_close_s=600)
    try:
        await decoders.grab(Grab(str(video), 1.0, 64, "jpg", str(out)), 30)
        assert held_by(decoders, "video.mp4") == [str(video)]  # kept open for the next thumbnail
        replacement = tmp_path / "replacement.mp4"
        shutil.copy(samples.rotated(90), replacement)
        os.replace(replacement, video)  # a resize without a kept original: a new file
        await decoders.grab(Grab(str(video), 0.5, 64, "jpg", str(out)), 30)
        assert held_by(decoders, "video.mp4") == [str(video)]  # the new file; the old one closed
        [pid] = decoders.pids()
        sound = samples.make(
            "sound_only.mp4", ["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"]
        )  # a file with no picture at all
        for unreadable in (tmp_path / "nothing.mp4", sound):
            with pytest.raises(DecoderFailed):
                await decoders.grab(Grab(str(unreadable), 0, 64, "jpg", str(out)), 30)
        assert decoders.pids() == [pid]  # said why; the decoder and what it holds go on
        video.unlink()  # deleted while the decoder is busy with other videos: closed at its next
        await decoders.grab(Grab(str(other), 1.0, 64, "jpg", str(out)), 30)
        assert not held_by(decoders, "video.mp4")
    finally:
        await decoders.close()

    idle = Decoders(size=1, niceness=0, max_memory_bytes=1024**3, idle_close_s=0.5)
    try:
        await idle.grab(Grab(str(other), 1.0, 64, "jpg", str(out)), 30)
        other.unlink()  # deleted, and nothing more asked: closed once the decoder is idle a moment
        await poll_until(lambda: not held_by(idle, "other.mp4"), "the decoder to close the deleted video", 10)
    finally:
        await idle.close()


async def test_a_stopping_server_ends_a_thumbnail_in_flight_at_once(samples: Samples, tmp_path: Path) -> None:
    decoders = Decoders(size=1, niceness=0, max_memory_bytes=1024**3)
    out = tmp_path / "out.jpg"
    await decoders.grab(Grab(str(clock(samples)), 1.0, 64, "jpg", str(out)), 30)
    [pid] = decoders.pids()
    os.kill(pid, signal.SIGSTOP)  # busy for as long as it likes
    in_flight = asyncio.create_task(decoders.grab(Grab(str(clock(samples)), 2.0, 64, "jpg", str(out)), 30))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await decoders.close()
    with pytest.raises(DecoderFailed):
        await in_flight
    assert time.monotonic() - started < 5  # not its 30 s time limit
    assert pid not in decoder_processes() and not decoders.pids()
    with pytest.raises(DecoderFailed, match="stopping"):  # and no decoder is started after
        await decoders.grab(Grab(str(clock(samples)), 1.0, 64, "jpg", str(out)), 30)
    assert not decoders.pids()


def test_open_files_keep_the_most_recently_used_few(samples: Samples, tmp_path: Path) -> None:
    files = OpenFiles(keep=2)
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.mp4")
        shutil.copy(clock(samples), paths[-1])
    first = files.get(str(paths[0]))
    assert files.get(str(paths[0])) is first  # kept
    files.get(str(paths[1]))
    files.get(str(paths[0]))  # used again: the most recent
    files.get(str(paths[2]))  # one too many: the least recently used (1) is closed
    assert len(files) == 2 and files.get(str(paths[0])) is first
    files.close_all()
    assert len(files) == 0

    by_size = OpenFiles(keep=4, keep_pixels=2 * 320 * 240)  # room for two of the 320x240 clock
    for path in paths:
        by_size.get(str(path))
    assert len(by_size) == 2
    tiny = OpenFiles(keep=4, keep_pixels=1)  # even over the budget, the one in use stays open
    tiny.get(str(paths[0]))
    assert len(tiny) == 1
    by_size.close_all()
    tiny.close_all()
