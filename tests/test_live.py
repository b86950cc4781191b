"""GET /file/{id}/events (SPEC §10): a live stream of a video's GET shape, over server-sent events."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from videosvc.web.keys import SERVICE

from .helpers import Client, Samples, get_video, poll_until, upload, wait_for_job, wait_until_running
from .server import ServerProcess
from .sse import EventReader


async def _open(client: Any, url: str, **headers: str) -> EventReader:
    return EventReader(await client.get(url, headers=headers))


async def _until_a_stream_opens(client: Client, url: str, timeout_s: float, every_s: float) -> None:
    """Until GET `url` opens a live stream (200, not 429); each answer is closed at once."""

    async def status() -> int:
        response = await client.get(url)
        response.close()
        return response.status

    await poll_until(status, f"a stream at {url}", timeout_s, every_s=every_s, until=lambda s: s == 200)


async def test_a_stream_follows_a_resize_from_queued_to_done(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video(1280, 720, duration_s=4))
    info = await get_video(client, video_id)
    assert info["eventsUrl"] == f"/file/{video_id}/events"
    stream = await _open(client, info["eventsUrl"])
    first = await stream.next()
    assert first is not None and first.event == "video"
    assert first.json() == info  # at once: the GET shape as it is
    assert first.id and re.fullmatch(r"[0-9a-f]{16}", first.id)

    started = time.monotonic()
    assert (await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})).status == 200
    events = await stream.until(lambda e: not e.json()["processing"])
    took_s = time.monotonic() - started
    shapes = [event.json() for event in events]
    assert shapes[0]["processing"] is True and shapes[0]["job"]["state"] in ("queued", "running")
    assert any(shape["job"]["state"] == "running" for shape in shapes)
    progress = [shape["progress"] for shape in shapes if shape["progress"] is not None]
    assert progress and progress == sorted(progress) and 0 <= progress[0] < 100
    # Progress is told at most twice a second (plus the state changes around it).
    assert len(progress) <= took_s * 2 + 3
    assert shapes[-1] == await get_video(client, video_id)
    assert (shapes[-1]["width"], shapes[-1]["processingSuccess"]) == (1920, True)
    assert len({event.id for event in events}) == len(events)  # each snapshot its own id


async def test_a_deleted_video_ends_its_streams_with_a_last_event(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video())
    streams = [await _open(client, f"/file/{video_id}/events") for _ in range(3)]
    for stream in streams:
        assert await stream.next() is not None
    assert (await client.delete(f"/file/{video_id}/")).status == 200
    for stream in streams:
        last = await stream.next()
        assert last is not None and last.event == "deleted"
        assert last.json() == {"id": video_id, "deleted": True}
        assert await stream.next() is None  # the server ended the stream


async def test_last_event_id_skips_the_snapshot_the_client_has(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video())
    url = f"/file/{video_id}/events"
    stream = await _open(client, url)
    first = await stream.next()
    assert first is not None and first.id
    stream.response.close()

    # A reconnect that has seen the current snapshot is sent nothing until the next change.
    again = await _open(client, url, **{"Last-Event-ID": first.id})
    stale = await _open(client, url, **{"Last-Event-ID": "0123456789abcdef"})
    assert (await stale.next()).json() == first.json()  # type: ignore[union-attr]
    assert (await client.delete(f"/file/{video_id}/")).status == 200
    assert (await again.next()).event == "deleted"  # type: ignore[union-attr]


async def test_an_idle_stream_gets_heartbeats(make_client, samples: Samples) -> None:
    client = await make_client(stream_heartbeat_s=0.2)
    video_id = await upload(client, samples.video())
    stream = await _open(client, f"/file/{video_id}/events")
    assert await stream.next() is not None
    with pytest.raises(TimeoutError):
        await stream.next(timeout_s=1.0)  # no change: no event...
    assert stream.comments >= 2  # ...but comment lines, which EventSource ignores


async def test_streams_of_unknown_videos_are_404_and_head_opens_none(
    client: Client, samples: Samples
) -> None:
    for url in ("/file/00000000-0000-4000-8000-000000000000/events", "/file/x/events"):
        response = await client.get(url)
        assert response.status == 404 and "error" in await response.json()
    video_id = await upload(client, samples.video())
    head = await client.head(f"/file/{video_id}/events")
    assert head.status == 200 and head.content_type == "text/event-stream"


async def test_a_signed_events_url_opens_the_stream_without_the_key(make_client, samples: Samples) -> None:
    client = await make_client(api_keys=("k",), url_signing_key="sign-me")
    key = {"Authorization": "Bearer k"}
    response = await client.post(
        "/file/", data=samples.video().read_bytes(), headers={**key, "Content-Type": "video/mp4"}
    )
    video_id = (await response.json())["id"]
    info = await get_video(client, video_id, **key)
    url = info["eventsUrl"]
    assert url.startswith(f"/file/{video_id}/events?expires=") and "&signature=" in url
    stream = await _open(client, url)  # EventSource: no Authorization header
    assert (await stream.next()).json()["id"] == video_id  # type: ignore[union-attr]
    assert (await client.get(f"/file/{video_id}/events")).status == 401
    tampered = re.sub(r"signature=(.)", lambda m: "signature=" + ("A" if m[1] != "A" else "B"), url)
    assert (await client.get(tampered)).status == 403


async def test_streams_over_max_live_streams_are_429_until_one_closes(make_client, samples: Samples) -> None:
    client = await make_client(max_live_streams=2, stream_heartbeat_s=0.2)
    video_id = await upload(client, samples.video())
    url = f"/file/{video_id}/events"
    streams = [await _open(client, url) for _ in range(2)]
    refused = await client.get(url)
    assert refused.status == 429 and "max_live_streams" in (await refused.json())["error"]
    assert int(refused.headers["Retry-After"]) > 0
    streams[0].response.close()  # the client goes away; the next heartbeat notices
    await _until_a_stream_opens(client, url, 5, every_s=0.05)


async def test_many_streams_read_the_video_once_per_change_not_once_per_stream(
    client: Client, samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    video_id = await upload(client, samples.video())
    service = client.server.app[SERVICE]
    reads: list[str] = []
    get = service.get

    async def counted(video_id: str) -> Any:
        reads.append(video_id)
        return await get(video_id)

    monkeypatch.setattr(service, "get", counted)  # a spy: every read still reads
    # A session of their own: the test client's pool holds 100 connections.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(str(client.make_url("")), connector=connector) as browsers:
        streams = [await _open(browsers, f"/file/{video_id}/events") for _ in range(100)]
        for stream in streams:
            assert await stream.next() is not None
        assert len(reads) == 100  # one snapshot for each new stream

        await asyncio.sleep(1.5)  # idle: nobody polls
        assert len(reads) == 100

        # A resize to the size it has: queued and ended at once, with no encoding.
        info = await get_video(client, video_id)
        size = {"width": info["width"], "height": info["height"]}
        assert (await client.patch(f"/file/{video_id}/", json=size)).status == 200
        for stream in streams:
            events = await stream.until(lambda e: e.json()["job"] and not e.json()["processing"])
            assert events[-1].json()["processingSuccess"] is True
        assert len(reads) - 100 <= 1 + 3  # the GET above, one read per commit: not one per stream


async def test_sigterm_ends_open_streams_at_once(data_dir: Path, samples: Samples) -> None:
    with ServerProcess(data_dir, shutdown_grace_s=120) as server:
        async with aiohttp.ClientSession(server.url) as client:
            video_id = await upload(client, samples.video())
            stream = await _open(client, f"/file/{video_id}/events")
            assert await stream.next() is not None
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            assert await stream.next(timeout_s=30) is None  # ended by the server, not cut off
        # Well inside shutdown_grace_s: an open stream is not a request to wait for.
        assert server.stop(timeout_s=30) == 0


async def test_a_stream_sees_a_job_that_fails(make_client, samples: Samples) -> None:
    client = await make_client(x264_preset="veryslow", job_timeout_s=1)
    video_id = await upload(client, samples.video(1280, 720, duration_s=5))
    stream = await _open(client, f"/file/{video_id}/events")
    assert await stream.next() is not None
    assert (await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})).status == 200
    events = await stream.until(lambda e: not e.json()["processing"])
    last = events[-1].json()
    assert last == await wait_for_job(client, video_id)
    assert last["processingSuccess"] is False and "timed out" in last["processingError"]


async def test_a_queued_job_with_nothing_new_sends_nothing(
    make_client, samples: Samples, data_dir: Path
) -> None:
    """Progress is looked at twice a second, but only what changed is sent."""
    client = await make_client(workers=1, x264_preset="veryslow", job_timeout_s=5)
    source = samples.video(1280, 720, duration_s=5)
    first, second = await upload(client, source), await upload(client, source)
    stream = await _open(client, f"/file/{second}/events")
    assert await stream.next() is not None
    for video_id in (first, second):
        assert (await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})).status == 200
    await wait_until_running(data_dir)  # the first runs; the second waits for the one worker
    queued = await stream.next()
    assert queued is not None and queued.json()["job"]["state"] == "queued"
    with pytest.raises(TimeoutError):
        await stream.next(timeout_s=2.0)  # four ticks, nothing new: no event


async def test_an_app_shutdown_ends_open_streams(make_client, samples: Samples) -> None:
    client = await make_client()
    video_id = await upload(client, samples.video())
    stream = await _open(client, f"/file/{video_id}/events")
    assert await stream.next() is not None
    closing = asyncio.create_task(client.server.close())
    assert await stream.next(timeout_s=5) is None  # ended at once, not when the shutdown times out
    await closing


async def test_a_stream_whose_client_went_away_frees_its_place_within_a_second(
    make_client, samples: Samples
) -> None:
    """Finding 7: closed sockets kept max_live_streams full until the next heartbeat (15 s)."""
    client = await make_client(max_live_streams=50, stream_heartbeat_s=30)
    video_id = await upload(client, samples.video())
    request = f"GET /file/{video_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    sockets = []
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(request)
        await reader.readuntil(b"event: video")  # the stream is open and counted
        sockets.append(writer)
    assert (await client.get(f"/file/{video_id}/events")).status == 429
    for writer in sockets:
        writer.transport.abort()  # gone at once, as a closed tab or a dropped network is
    # Within a second, not at the next heartbeat: a gone client no longer holds its stream's place.
    await _until_a_stream_opens(client, f"/file/{video_id}/events", 1.0, every_s=0.02)


async def test_one_address_cannot_hold_every_live_stream(make_client, samples: Samples) -> None:
    """Without keys, a client is its address: it gets its share, not all (SPEC §12)."""
    client = await make_client(max_live_streams=10, max_live_streams_per_client=3)
    video_id = await upload(client, samples.video())
    url = f"/file/{video_id}/events"
    streams = [await _open(client, url) for _ in range(3)]
    refused = await client.get(url)
    assert refused.status == 429 and "max_live_streams_per_client" in (await refused.json())["error"]
    streams[0].response.close()
    await _until_a_stream_opens(client, url, 2, every_s=0.02)
