"""Adaptive streaming (SPEC §13): the HLS package each upload gets, as players read it.

Every playlist is parsed with the `m3u8` package, every rendition is read back
with ffprobe and decoded whole by ffmpeg; the master playlist's figures are
checked against the segments themselves. Short clips (a few seconds, small
sizes) keep the suite fast; the ladder's rungs are scaled down to match.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import m3u8
import pytest

from videosvc.app import create_app
from videosvc.hooks import Hooks
from videosvc.media.probe import Toolchain

from .conftest import ServiceTestServer, both_backends
from .helpers import Client, Samples, ffmpeg_processes, get_video, poll_until, upload
from .receiver import WebhookReceiver, new_secret
from .server import ServerProcess
from .sse import EventReader

#: A small ladder for small clips: 360, 240 and 180 lines (the sides the suite's clips have).
LADDER = "360,240,180"
SEGMENT_S = 2
HLS = {"hls_enabled": True, "hls_ladder": LADDER, "hls_segment_s": SEGMENT_S}


def h264_aac(samples: Samples, width: int, height: int, seconds: float, gop: int = 25) -> Path:
    """H.264 4:2:0 + AAC with a keyframe every `gop` frames (25 fps): what fast first play copies."""
    return samples.make(
        f"hls_{width}x{height}_{seconds}_g{gop}.mp4",
        ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=25:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", str(gop), "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"],
    )  # fmt: skip


def yuv444(samples: Samples, width: int, height: int, seconds: float) -> Path:
    """H.264 in 4:4:4, silent: most players cannot take it, so every rung is encoded."""
    return samples.make(
        f"hls444_{width}x{height}_{seconds}.mp4",
        ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=25:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"],
    )  # fmt: skip


async def text(client: Client, url: str, **headers: str) -> str:
    response = await client.get(url, headers=headers)
    body = await response.text()
    assert response.status == 200, body
    assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    return body


async def wait_ready(client: Client, video_id: str, count: int, **headers: str) -> dict[str, Any]:
    return await poll_until(
        lambda: get_video(client, video_id, **headers),
        f"{count} ready rendition(s) of {video_id}",
        until=lambda body: (
            [r["state"] for r in body["renditions"]].count("ready") == count
            or any(r["state"] == "failed" for r in body["renditions"])
        ),
    )


def base(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/"


def ffprobe_stream(tools: Toolchain, path: Path) -> dict[str, Any]:
    assert tools.ffprobe is not None
    out = subprocess.run(
        [tools.ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return dict(json.loads(out))


async def fetch_rendition(client: Client, url: str, folder: Path, **headers: str) -> tuple[Path, list[float]]:
    """A rendition's init segment and segments, concatenated into one file (as a player feeds its
    decoder); and its segments' start times."""
    playlist = m3u8.loads(await text(client, url, **headers))
    assert playlist.is_endlist and playlist.playlist_type == "vod"
    assert playlist.segment_map, "no init segment (EXT-X-MAP)"
    parts = [playlist.segment_map[0].uri] + [segment.uri for segment in playlist.segments]
    data = b""
    for part in parts:
        response = await client.get(base(url) + part, headers=headers)
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "video/mp4"
        assert response.headers["Cache-Control"].endswith("max-age=31536000, immutable")
        data += await response.read()
    folder.mkdir(parents=True, exist_ok=True)
    whole = folder / f"{len(list(folder.iterdir()))}.mp4"
    whole.write_bytes(data)
    starts, clock = [], 0.0
    for segment in playlist.segments:
        starts.append(round(clock, 2))
        clock += segment.duration
    # Cut about every hls_segment_s: each rung has keyframes there (forced), and none between.
    assert max(segment.duration for segment in playlist.segments) <= SEGMENT_S + 0.1, url
    return whole, starts


def decodes_cleanly(tools: Toolchain, path: Path) -> None:
    done = subprocess.run(
        [tools.ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, timeout=120
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr.decode()[-2000:]


async def check_package(
    client: Client, tools: Toolchain, url: str, sizes: list[tuple[int, int]], tmp: Path, **headers: str
) -> m3u8.M3U8:
    """The master playlist lists `sizes`, largest first, each with its true figures; every rendition
    decodes, has the size it claims, and switches at the same times as the others."""
    master = m3u8.loads(await text(client, url, **headers))
    assert [tuple(p.stream_info.resolution) for p in master.playlists] == sizes
    all_starts = []
    for entry in master.playlists:
        info = entry.stream_info
        video, starts = await fetch_rendition(client, base(url) + entry.uri, tmp / "renditions", **headers)
        decodes_cleanly(tools, video)
        stream = ffprobe_stream(tools, video)["streams"][0]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", *info.resolution)
        assert stream["pix_fmt"] == "yuv420p"
        assert info.codecs.startswith("avc1.") and info.average_bandwidth <= info.bandwidth
        assert info.bandwidth != 140800  # plain ffmpeg's placeholder for what it cannot know
        all_starts.append(starts)
    assert all(starts == all_starts[0] for starts in all_starts), all_starts  # keyframes aligned
    return master


async def held_ladders(aiohttp_client: Any, make_settings: Any, ladder_may_run: asyncio.Event) -> Client:
    """A service with HLS whose ladders wait for `ladder_may_run` before they start (a test's pause)."""

    async def hold_the_ladder() -> None:
        await ladder_may_run.wait()

    app = create_app(make_settings(**HLS), Hooks(before_ladder=hold_the_ladder))
    return await aiohttp_client(ServiceTestServer(app))  # type: ignore[no-any-return]


async def test_an_h264_aac_upload_plays_from_its_copy_first_then_from_every_rung(
    aiohttp_client: Any,
    make_settings: Any,
    samples: Samples,
    tools: Toolchain,
    tmp_path: Path,
    data_dir: Path,
) -> None:
    ladder_may_run = asyncio.Event()
    client = await held_ladders(aiohttp_client, make_settings, ladder_may_run)
    video_id = await upload(client, h264_aac(samples, 640, 360, 6.0))

    # The copy alone: the master playlist plays the upload as it is, before any rung is encoded.
    first = await wait_ready(client, video_id, 1)
    assert [(r["width"], r["height"], r["state"]) for r in first["renditions"]] == [
        (640, 360, "ready"), (426, 240, "queued"), (320, 180, "queued"),
    ]  # fmt: skip
    assert first["playbackUrl"] == f"/file/{video_id}/hls/master.m3u8"
    assert first["processing"] is False and first["job"] is None  # a PATCH's fields, untouched
    master = await check_package(client, tools, first["playbackUrl"], [(640, 360)], tmp_path / "copy")
    assert master.media[0].type == "AUDIO" and master.playlists[0].stream_info.codecs.endswith("mp4a.40.2")

    ladder_may_run.set()
    done = await wait_ready(client, video_id, 3)
    assert [r["state"] for r in done["renditions"]] == ["ready"] * 3, done["renditions"]
    master = await check_package(
        client, tools, done["playbackUrl"], [(640, 360), (426, 240), (320, 180)], tmp_path / "all"
    )
    # BANDWIDTH is the peak of each rung's segments (the video's, plus the audio's).
    pairs = zip(master.playlists, done["renditions"], strict=True)
    assert all(entry.stream_info.bandwidth > rendition["bandwidth"] > 0 for entry, rendition in pairs)
    assert not (data_dir / "hls" / video_id / ".work").exists()
    assert not list((data_dir / "jobs").iterdir())


@both_backends
async def test_an_upload_a_player_cannot_take_gets_every_rung_encoded(
    make_client: Any, samples: Samples, tools: Toolchain, tmp_path: Path
) -> None:
    client = await make_client(**HLS)
    video_id = await upload(client, yuv444(samples, 480, 270, 3.0))
    body = await get_video(client, video_id)
    assert [(r["width"], r["height"]) for r in body["renditions"]] == [(426, 240), (320, 180)]
    done = await wait_ready(client, video_id, 2)
    assert [r["state"] for r in done["renditions"]] == ["ready", "ready"], done["renditions"]
    master = await check_package(client, tools, done["playbackUrl"], [(426, 240), (320, 180)], tmp_path)
    assert not master.media  # a silent upload: no audio rendition


async def test_the_package_is_served_as_players_and_caches_need_it(
    make_client: Any, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(**HLS, cors_origins="https://player.example")
    video_id = await upload(client, yuv444(samples, 480, 270, 3.0))
    done = await wait_ready(client, video_id, 2)
    url = done["playbackUrl"]
    origin = {"Origin": "https://player.example"}

    master = await client.get(url, headers=origin)
    assert master.headers["Cache-Control"] == "public, max-age=2"  # it changes as renditions are added
    assert master.headers["Access-Control-Allow-Origin"] == "https://player.example"
    segment = f"/file/{video_id}/hls/v0/seg00000.m4s"
    whole = await client.get(segment, headers=origin)
    data = await whole.read()
    assert whole.headers["Access-Control-Allow-Origin"] == "https://player.example"
    assert whole.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    part = await client.get(segment, headers={"Range": "bytes=10-19"})
    assert part.status == 206 and await part.read() == data[10:20]
    again = await client.get(segment, headers={"If-None-Match": whole.headers["ETag"]})
    assert again.status == 304

    # Not ready, not a package file, not this service's to serve: a JSON 404, never another file.
    for path in ("v7/index.m3u8", "v0/seg99999.m4s", "../../videosvc.sqlite3", "v0/..%2fmaster.m3u8",
                 ".work/v0/index.m3u8", "v0/ffmpeg.log", "master.m3u8.tmp"):  # fmt: skip
        response = await client.get(f"/file/{video_id}/hls/{path}")
        assert response.status == 404, path
        assert "error" in await response.json()
    other = "00000000-0000-4000-8000-000000000000"
    assert (await client.get(f"/file/{other}/hls/master.m3u8")).status == 404


async def test_with_api_keys_the_signed_playback_url_opens_the_whole_package_and_nothing_else(
    make_client: Any, samples: Samples, tools: Toolchain, tmp_path: Path
) -> None:
    key = {"Authorization": "Bearer k1"}
    client = await make_client(**HLS, api_keys="k1")
    video_id = await upload_with_key(client, yuv444(samples, 480, 270, 3.0), key)
    second = await upload_with_key(client, yuv444(samples, 480, 270, 3.0), key)
    done = await wait_ready(client, video_id, 2, **key)
    await wait_ready(client, second, 2, **key)
    url = done["playbackUrl"]
    assert url.startswith(f"/file/{video_id}/hls/s/") and url.endswith("/master.m3u8")

    # No key: every URI the playlists name, relative to the signed one, carries the signature.
    await check_package(client, tools, url, [(426, 240), (320, 180)], tmp_path)
    signed = await client.get(url.rsplit("/", 1)[0] + "/v0/seg00000.m4s")
    assert signed.headers["Cache-Control"] == "private, max-age=31536000, immutable"  # not for shared caches
    assert (await client.get(f"/file/{video_id}/hls/master.m3u8")).status == 401
    signed_part = url.split("/hls/", 1)[1].rsplit("/", 1)[0]  # s/{expires}.{signature}
    expires, signature = signed_part.removeprefix("s/").split(".")
    for forged in (
        f"/file/{second}/hls/{signed_part}/master.m3u8",  # another video's package
        f"/file/{video_id}/hls/s/{int(expires) + 1}.{signature}/master.m3u8",  # a later expiry
        f"/file/{video_id}/hls/s/{expires}.{signature[:-2]}xx/v0/index.m3u8",  # altered
    ):
        response = await client.get(forged)
        assert response.status == 403, forged
    # A content link's signature opens no package, and the package's no content.
    content = (await get_video(client, video_id, **key))["contentUrl"]
    query = dict(part.split("=") for part in content.split("?", 1)[1].split("&"))
    wrong = f"/file/{video_id}/hls/s/{query['expires']}.{query['signature']}/master.m3u8"
    assert (await client.get(wrong)).status == 403
    swapped = f"/file/{video_id}/content?expires={expires}&signature={signature}"
    assert (await client.get(swapped)).status == 403


async def upload_with_key(client: Client, path: Path, key: dict[str, str]) -> str:
    with path.open("rb") as f:
        response = await client.post("/file/", data={"file": f}, headers=key)
        body = await response.json()
    assert response.status == 200, body
    return str(body["id"])


async def test_delete_mid_ladder_stops_ffmpeg_and_removes_every_file(
    make_client: Any, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(**HLS, x264_preset="veryslow")
    video_id = await upload(client, yuv444(samples, 480, 270, 12.0))
    await poll_until(
        lambda: get_video(client, video_id), "the ladder to run",
        until=lambda body: body["renditions"][0]["state"] == "running",
    )  # fmt: skip
    await poll_until(lambda: ffmpeg_processes(data_dir), "the ladder's ffmpeg to start")
    response = await client.delete(f"/file/{video_id}")
    assert response.status == 200
    assert not ffmpeg_processes(data_dir)
    assert not (data_dir / "hls" / video_id).exists()
    assert not list((data_dir / "jobs").iterdir())
    assert (await client.get(f"/file/{video_id}/hls/master.m3u8")).status == 404


async def test_a_ladder_over_the_job_caps_fails_its_renditions_and_keeps_the_upload(
    make_client: Any, samples: Samples
) -> None:
    client = await make_client(**HLS, max_job_pixel_frames=100_000)
    video_id = await upload(client, h264_aac(samples, 640, 360, 2.0))
    body = await poll_until(
        lambda: get_video(client, video_id), "the ladder's renditions to fail",
        until=lambda body: body["renditions"][-1]["state"] == "failed",
    )  # fmt: skip
    states = [(r["state"], r["error"] and "max_job_pixel_frames" in r["error"]) for r in body["renditions"]]
    assert states == [("ready", None), ("failed", True), ("failed", True)]  # the copy needs no encode
    assert body["playbackUrl"] is not None and body["processingSuccess"] is None
    assert (await client.get(f"/file/{video_id}/content")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'videosvc_renditions_total{outcome="failed"} 2.0' in metrics
    assert 'videosvc_renditions_total{outcome="ready"} 1.0' in metrics
    assert "videosvc_first_playable_seconds_count 1.0" in metrics


async def test_hls_off_keeps_a_pure_mp4_store_and_turned_on_builds_the_missing_packages(
    make_client: Any, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(hls_enabled=False)
    video_id = await upload(client, h264_aac(samples, 640, 360, 2.0))
    body = await get_video(client, video_id)
    assert body["renditions"] == [] and body["playbackUrl"] is None
    assert not list((data_dir / "hls").iterdir())
    await client.close()

    client = await make_client(**HLS)  # the same data dir, a new start
    done = await wait_ready(client, video_id, 3)
    assert [r["state"] for r in done["renditions"]] == ["ready"] * 3
    assert (await client.get(done["playbackUrl"])).status == 200


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
async def test_a_ladder_cut_by_a_stop_lists_nothing_half_built_and_resumes_at_the_next_start(
    samples: Samples, data_dir: Path, stop: str
) -> None:
    source = h264_aac(samples, 640, 360, 30.0)
    package = data_dir / "hls"
    with ServerProcess(data_dir, **HLS, x264_preset="veryslow") as server:
        async with aiohttp.ClientSession(server.url) as session:
            with source.open("rb") as f:
                video_id = (await (await session.post("/file/", data={"file": f})).json())["id"]

            async def renditions() -> list[str]:
                body = await (await session.get(f"/file/{video_id}")).json()
                return [r["state"] for r in body["renditions"]]

            await poll_until(
                renditions, "the ladder to run", until=lambda s: s == ["ready", "running", "running"]
            )
            await poll_until(lambda: ffmpeg_processes(data_dir), "the ladder's ffmpeg")
            if stop == "kill -9":
                server.kill9()
            else:  # within its grace: the ladder's ffmpeg is stopped, not waited for (minutes at veryslow)
                assert server.stop(timeout_s=15) == 0
    await poll_until(lambda: not ffmpeg_processes(data_dir), "ffmpeg to die with the server", 10)
    # On disk, the master playlist lists the copy alone, and the copy is whole.
    listed = m3u8.loads((package / video_id / "master.m3u8").read_text())
    assert [p.uri for p in listed.playlists] == ["v0/index.m3u8"]
    assert not (package / video_id / "v1").exists()

    with ServerProcess(data_dir, **HLS) as server:
        async with aiohttp.ClientSession(server.url) as session:
            states = await poll_until(
                renditions,
                "the ladder to resume and end",
                until=lambda s: "running" not in s and "queued" not in s,
            )
            assert states == ["ready"] * 3
            master = m3u8.loads(await (await session.get(f"/file/{video_id}/hls/master.m3u8")).text())
            assert [p.uri for p in master.playlists] == ["v0/index.m3u8", "v1/index.m3u8", "v2/index.m3u8"]
    assert not (package / video_id / ".work").exists()
    assert not list((data_dir / "jobs").iterdir())


async def test_renditions_ready_and_failed_are_posted_as_webhooks(make_client: Any, samples: Samples) -> None:
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        client = await make_client(
            **HLS, webhook_urls=(receiver.url,), webhook_secret=secret, max_job_pixel_frames=100_000
        )
        video_id = await upload(client, h264_aac(samples, 640, 360, 2.0))
        await receiver.wait_for(lambda r: len(r.accepted) == 3)
        assert [a.type for a in receiver.accepted] == ["video.stored", "rendition.ready", "rendition.failed"]
        stored, ready, failed = (a.data for a in receiver.accepted)
        assert [r["state"] for r in stored["renditions"]] == ["queued"] * 3 and stored["playbackUrl"] is None
        assert ready["renditions"][0]["state"] == "ready" and ready["playbackUrl"].endswith("/master.m3u8")
        assert [r["state"] for r in failed["renditions"]] == ["ready", "failed", "failed"]
        assert failed == await get_video(client, video_id)


async def test_a_live_stream_sees_each_rendition_become_ready(
    aiohttp_client: Any, make_settings: Any, samples: Samples
) -> None:
    ladder_may_run = asyncio.Event()
    client = await held_ladders(aiohttp_client, make_settings, ladder_may_run)
    video_id = await upload(client, h264_aac(samples, 640, 360, 2.0))
    await wait_ready(client, video_id, 1)
    stream = EventReader(await client.get(f"/file/{video_id}/events"))
    first = await stream.next()
    assert first is not None and first.event == "video"
    assert [r["state"] for r in first.json()["renditions"]] == ["ready", "queued", "queued"]
    ladder_may_run.set()
    seen = await stream.until(lambda e: [r["state"] for r in e.json()["renditions"]] == ["ready"] * 3)
    assert {e.event for e in seen} == {"video"}
    assert any(r["state"] == "running" for e in seen for r in e.json()["renditions"])  # and on the way


async def test_a_resize_never_waits_for_a_ladder_which_runs_below_its_priority(
    make_client: Any, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(**HLS, x264_preset="veryslow", workers=1)
    ladder = await upload(client, yuv444(samples, 480, 270, 12.0))
    await poll_until(lambda: ffmpeg_processes(data_dir), "the ladder's ffmpeg to start")
    [ladder_ffmpeg] = ffmpeg_processes(data_dir)
    # Field 19 of /proc/<pid>/stat is the niceness: the derived lane's 15, below the resizes' 10.
    assert Path(f"/proc/{ladder_ffmpeg}/stat").read_text().rsplit(")", 1)[1].split()[16] == "15"

    resized = await upload(client, samples.video(320, 240, 1.0))
    assert (await client.patch(f"/file/{resized}/", json={"width": 160, "height": 120})).status == 200
    done = await poll_until(
        lambda: get_video(client, resized), "the resize to end", until=lambda body: not body["processing"]
    )
    assert done["processingSuccess"] is True and done["width"] == 160
    ladder_now = await get_video(client, ladder)
    assert [r["state"] for r in ladder_now["renditions"]] == ["running", "running"]  # still encoding
    assert ladder_ffmpeg in ffmpeg_processes(data_dir)


async def test_a_ladder_over_the_queue_cap_fails_its_renditions_and_keeps_the_upload(
    make_client: Any, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(**HLS, x264_preset="veryslow", max_queued_jobs=1)
    busy = await upload(client, yuv444(samples, 480, 270, 12.0))
    await poll_until(lambda: ffmpeg_processes(data_dir), "the first ladder to run")
    refused = await upload(client, yuv444(samples, 480, 270, 3.0))
    body = await poll_until(
        lambda: get_video(client, refused), "the second ladder to be refused",
        until=lambda body: body["renditions"][0]["state"] == "failed",
    )  # fmt: skip
    assert all("max_queued_jobs" in r["error"] for r in body["renditions"])
    assert (await client.get(f"/file/{refused}/content")).status == 200
    assert (await client.delete(f"/file/{busy}")).status == 200
