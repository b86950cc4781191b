"""Crashes and signals, caused for real on the real server process.

After each, a restart on the same data dir must find: no temp or orphan files,
every stored video playable, no row stuck in `processing: true`.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from videosvc.media.probe import Toolchain, probe

from .helpers import (
    Samples,
    chunked,
    ffmpeg_processes,
    get_video,
    json_body,
    leftovers,
    poll_until,
    read_response,
    rows,
    status_of,
    stored_ids,
    upload,
    wait_for_job,
)
from .server import ServerProcess


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _assert_consistent(data_dir: Path, tools: Toolchain) -> None:
    """What every restart must leave: no leftovers, rows == files, every video plays."""
    assert leftovers(data_dir) == []
    ids = stored_ids(data_dir)
    assert sorted(r[0] for r in rows(data_dir, "SELECT id FROM videos")) == ids
    for video_id in ids:
        probe(str(data_dir / "videos" / f"{video_id}.mp4"), tools)


async def test_kill_mid_upload_leaves_nothing_after_restart(data_dir: Path, samples: Samples, tools) -> None:
    with ServerProcess(data_dir) as server:
        data = samples.video(duration_s=2).read_bytes()
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
            + f"Content-Length: {len(data) * 10}\r\n\r\n".encode()
            + data
        )
        await poll_until(lambda: any((data_dir / "tmp").iterdir()), "the upload's temp file")
        server.kill9()
        sock.close()
    with ServerProcess(data_dir):
        _assert_consistent(data_dir, tools)
        assert stored_ids(data_dir) == []


async def test_kill_while_ffmpeg_runs_then_the_job_resumes(data_dir: Path, samples: Samples, tools) -> None:
    with ServerProcess(data_dir, x264_preset="veryslow") as server:
        async with aiohttp.ClientSession(server.url) as client:
            video_id = await upload(client, samples.video(1280, 720, duration_s=5))
            # An upscale at veryslow: minutes of work, so only the crash can stop it.
            assert (
                await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})
            ).status == 200
            await poll_until(lambda: ffmpeg_processes(data_dir), "ffmpeg to start")
        family = _descendants(server.process.pid)  # type: ignore[union-attr]
        assert len(family) >= 3  # forkserver, workers, ffmpeg
        server.kill9()
    # The pool, its forkserver and ffmpeg die with the server: nobody encodes for a dead process.
    await poll_until(lambda: not any(_alive(pid) for pid in family), "the pool to exit", 5)
    assert not ffmpeg_processes(data_dir)

    with ServerProcess(data_dir, x264_preset="ultrafast") as server:
        async with aiohttp.ClientSession(server.url) as client:
            done = await wait_for_job(client, video_id)
        assert done["processingSuccess"] is True, done
        assert (done["width"], done["height"]) == (1920, 1080)
        assert "resuming interrupted job" in server.log()
    assert rows(data_dir, "SELECT attempts, state FROM jobs") == [(2, "succeeded")]
    _assert_consistent(data_dir, tools)


async def test_a_job_interrupted_too_often_is_marked_failed_with_a_reason(
    data_dir: Path, samples: Samples, tools
) -> None:
    with ServerProcess(data_dir, x264_preset="veryslow") as server:
        async with aiohttp.ClientSession(server.url) as client:
            video_id = await upload(client, samples.video(1280, 720, duration_s=5))
            await client.patch(f"/file/{video_id}/", json={"width": 640, "height": 360})
            await poll_until(lambda: ffmpeg_processes(data_dir), "ffmpeg to start")
        server.kill9()

    with ServerProcess(data_dir, job_max_attempts=1) as server:
        async with aiohttp.ClientSession(server.url) as client:
            body = await get_video(client, video_id)
    assert body["processing"] is False
    assert body["processingSuccess"] is False
    assert "interrupted 1 time(s)" in body["processingError"]
    assert (body["width"], body["height"]) == (1280, 720)
    _assert_consistent(data_dir, tools)


async def test_kill_after_the_output_replaced_the_video_but_before_the_row_was_updated(
    data_dir: Path, samples: Samples, tools
) -> None:
    video_path = None
    with ServerProcess(data_dir, module="tests.paused_server") as server:
        async with aiohttp.ClientSession(server.url) as client:
            video_id = await upload(client, samples.video(320, 240))
            video_path = data_dir / "videos" / f"{video_id}.mp4"
            await client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})
            # Inside the window: the file on disk is the new one, the row still says processing.
            await poll_until(lambda: probe(str(video_path), tools).width == 160, "the file to be replaced")
            assert (await get_video(client, video_id))["processing"] is True
        server.kill9()

    # Even with no attempt left, the finished video is recognised and recorded, not failed or redone.
    with ServerProcess(data_dir, job_max_attempts=1) as server:
        async with aiohttp.ClientSession(server.url) as client:
            done = await wait_for_job(client, video_id)
        assert "job had finished before the restart" in server.log()
    assert done["processingSuccess"] is True
    assert (done["width"], done["height"]) == (160, 120)
    assert done["size"] == video_path.stat().st_size
    assert rows(data_dir, "SELECT attempts, state FROM jobs") == [(1, "succeeded")]
    _assert_consistent(data_dir, tools)


async def test_orphans_are_reconciled_at_start_and_logged(data_dir: Path, samples: Samples, tools) -> None:
    with ServerProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as client:
            kept = await upload(client, samples.video())
            lost = await upload(client, samples.video())
    # While it is down: a row loses its file, a file appears without a row, junk in tmp/.
    (data_dir / "videos" / f"{lost}.mp4").unlink()
    orphan = str(uuid.uuid4())
    (data_dir / "videos" / f"{orphan}.mp4").write_bytes(samples.video().read_bytes())
    (data_dir / "tmp" / "half.part").write_bytes(b"junk")

    with ServerProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as client:
            assert (await client.get(f"/file/{lost}/")).status == 404
            assert (await client.get(f"/file/{kept}/")).status == 200
        log = server.log()
    assert "stored video with no database row moved to quarantine/" in log and orphan in log
    assert "removing database row whose file is gone" in log and lost in log
    assert stored_ids(data_dir) == [kept]
    # Kept aside, not deleted: a database restored from its backup may be behind the files.
    assert (data_dir / "quarantine" / orphan / "videos").read_bytes() == samples.video().read_bytes()
    _assert_consistent(data_dir, tools)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_finishes_in_flight_requests_stops_ffmpeg_and_resumes_jobs_later(
    data_dir: Path, samples: Samples, tools, sig: int
) -> None:
    server = ServerProcess(data_dir, x264_preset="veryslow").start()
    try:
        async with aiohttp.ClientSession(server.url) as client:
            busy = await upload(client, samples.video(1280, 720, duration_s=5))
            await client.patch(f"/file/{busy}/", json={"width": 1920, "height": 1080})
            await poll_until(lambda: ffmpeg_processes(data_dir), "ffmpeg to start")

            data = samples.video().read_bytes()

            in_flight = asyncio.create_task(
                client.post(
                    "/file/",
                    data=chunked(data, len(data) // 10 + 1, pause_s=0.1),
                    headers={"Content-Type": "video/mp4"},
                )
            )
            await poll_until(lambda: any((data_dir / "tmp").iterdir()), "the upload to start")
            started = time.monotonic()
            server.process.send_signal(sig)  # type: ignore[union-attr]
            response = await in_flight
            assert response.status == 200, await response.text()
            uploaded = (await response.json())["id"]
        assert server.stop(timeout_s=15) == 0
        assert time.monotonic() - started < 12  # the long encode was not waited for
        assert not ffmpeg_processes(data_dir)
    finally:
        server.__exit__()
    assert rows(data_dir, "SELECT state, attempts FROM jobs") == [("queued", 0)]

    with ServerProcess(data_dir, x264_preset="ultrafast") as server:
        async with aiohttp.ClientSession(server.url) as client:
            done = await wait_for_job(client, busy)
            assert done["processingSuccess"] is True
            assert (await client.get(f"/file/{uploaded}/")).status == 200
    _assert_consistent(data_dir, tools)


async def test_a_shutdown_leaves_a_queued_job_queued_and_no_job_folder(
    data_dir: Path, samples: Samples
) -> None:
    """A job still waiting for the worker is dropped where it waits, its folder with it, and resumes later."""
    with ServerProcess(data_dir, workers=1, x264_preset="veryslow") as server:
        async with aiohttp.ClientSession(server.url) as client:
            busy = await upload(client, samples.video(1280, 720, duration_s=5))
            queued = await upload(client, samples.video(320, 240))
            await client.patch(f"/file/{busy}/", json={"width": 1920, "height": 1080})
            await poll_until(lambda: ffmpeg_processes(data_dir), "ffmpeg to start")
            assert (await client.patch(f"/file/{queued}/", json={"width": 160, "height": 120})).status == 200
        assert server.stop(signal.SIGTERM) == 0
    assert rows(data_dir, "SELECT state, attempts FROM jobs ORDER BY id") == [("queued", 0), ("queued", 0)]
    assert leftovers(data_dir) == []


async def test_patch_and_delete_racing_over_real_connections_never_wedge_the_database(
    data_dir: Path, samples: Samples, tools
) -> None:
    """DELETE right after PATCH lands while the job is being handed to a worker."""
    path = samples.video(320, 240)
    with ServerProcess(data_dir, workers=1) as server:
        async with aiohttp.ClientSession(server.url) as patcher, aiohttp.ClientSession(server.url) as deleter:
            for _ in range(30):
                video_id = await upload(patcher, path)
                patch, delete = await asyncio.gather(
                    patcher.patch(f"/file/{video_id}/", json={"width": 160, "height": 120}),
                    deleter.delete(f"/file/{video_id}/"),
                )
                assert patch.status in (200, 404), await patch.text()
                assert delete.status == 200, await delete.text()
            # The writer still works: uploads and resizes go on.
            video_id = await upload(patcher, path)
            await patcher.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})
            assert (await wait_for_job(patcher, video_id))["processingSuccess"] is True
        assert "Traceback" not in server.log()
    assert rows(data_dir, "SELECT id FROM videos") == [(video_id,)]
    assert rows(data_dir, "SELECT state FROM jobs") == [("succeeded",)]
    _assert_consistent(data_dir, tools)


async def test_uploads_still_running_at_the_end_of_the_grace_get_503_and_are_logged(
    data_dir: Path, samples: Samples
) -> None:
    server = ServerProcess(data_dir, shutdown_grace_s=1, upload_idle_timeout_s=30).start()
    video = samples.video(640, 360, duration_s=2).read_bytes()
    streams = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\nExpect: 100-continue\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(video)
        )
        assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)) == 100
        writer.write(video[:1000])  # then trickle: far from done when the signal comes
        streams.append((reader, writer))
    await asyncio.sleep(0.3)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    answers = await asyncio.gather(*(read_response(r, 15) for r, _ in streams))
    for (_, writer), answer in zip(streams, answers, strict=True):
        writer.close()
        assert status_of(answer) == 503
        assert "shutting down" in json_body(answer)["error"]
    assert server.stop(timeout_s=15) == 0
    assert server.log().count("POST /file/ 503") == 20
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []
