"""Faults caused for real: a dying worker, a stalled client, a full disk, races, hostile input."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from videosvc.app import create_app
from videosvc.logs import AccessLogger
from videosvc.web.keys import DISK

from .helpers import (
    Client,
    Samples,
    chunked,
    ffmpeg_processes,
    get_video,
    leftovers,
    poll_until,
    rows,
    stored_ids,
    upload,
    wait_for_job,
)


def _worker_of(data_dir: Path, job_dir_name: str) -> int:
    """The worker process running the ffmpeg of one job (ffmpeg's parent)."""
    for pid in ffmpeg_processes(data_dir):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if f"/jobs/{job_dir_name}/".encode() in cmdline:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(stat[1])
    raise AssertionError(f"no ffmpeg for job {job_dir_name}")


async def test_a_dying_worker_fails_only_its_job_and_the_pool_is_replaced(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(x264_preset="veryslow", job_max_attempts=1)
    victim = await upload(client, samples.video(1280, 720, duration_s=5))
    bystander = await upload(client, samples.video(640, 360, duration_s=3))
    await client.patch(f"/file/{victim}/", json={"width": 1920, "height": 1080})
    await client.patch(f"/file/{bystander}/", json={"width": 320, "height": 180})
    await poll_until(lambda: len(ffmpeg_processes(data_dir)) >= 2, "two ffmpeg processes")

    os.kill(_worker_of(data_dir, "1"), signal.SIGKILL)  # job 1 is the victim's

    failed = await wait_for_job(client, victim)
    assert failed["processingSuccess"] is False
    assert "worker process died" in failed["processingError"]
    assert (failed["width"], failed["height"]) == (1280, 720)
    # The bystander's worker was taken down by the pool, but its job is retried and succeeds.
    survived = await wait_for_job(client, bystander)
    assert survived["processingSuccess"] is True, survived
    # The new pool takes the next job.
    assert (await client.patch(f"/file/{victim}/", json={"width": 64, "height": 36})).status == 200
    assert (await wait_for_job(client, victim))["processingSuccess"] is True
    assert leftovers(data_dir) == []


async def test_a_job_whose_worker_another_jobs_crash_took_down_is_not_charged_an_attempt(
    make_client, samples: Samples, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pool stops every worker when one dies: the other jobs run again, and that loss is not
    one of their attempts (job_max_attempts): the database counts the one attempt that ran."""
    client = await make_client(x264_preset="veryslow", job_max_attempts=1)
    victim = await upload(client, samples.video(1280, 720, duration_s=5))
    bystander = await upload(client, samples.video(640, 360, duration_s=3))
    await client.patch(f"/file/{victim}/", json={"width": 1920, "height": 1080})
    await client.patch(f"/file/{bystander}/", json={"width": 320, "height": 180})
    await poll_until(lambda: len(ffmpeg_processes(data_dir)) >= 2, "two ffmpeg processes")

    with caplog.at_level(logging.WARNING, logger="videosvc"):
        os.kill(_worker_of(data_dir, "1"), signal.SIGKILL)  # job 1 is the victim's
        survived = await wait_for_job(client, bystander)
    assert survived["processingSuccess"] is True, survived
    # It was running, and was taken down with the pool: not its fault.
    assert "another job's crash took this worker down" in caplog.text
    assert rows(data_dir, f"SELECT state, attempts FROM jobs WHERE video_id = '{bystander}'") == [
        ("succeeded", 1)
    ]
    assert (await wait_for_job(client, victim))["processingSuccess"] is False
    assert client.app[DISK].reserved_bytes == 0  # one output reservation per job, however often it ran


async def test_a_stalled_upload_is_cut_off_and_its_temp_file_removed(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(upload_idle_timeout_s=0.5)
    data = samples.video().read_bytes()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data[: len(data) // 2]
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)  # then nothing more is sent
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()
    await asyncio.sleep(0.1)
    assert leftovers(data_dir) == []
    assert stored_ids(data_dir) == []


async def test_a_full_disk_answers_507_and_leaves_nothing(
    aiohttp_client, make_settings, small_disk: Path, samples: Samples
) -> None:
    data_dir = small_disk / "data"
    settings = make_settings(data_dir=data_dir)
    client = await aiohttp_client(create_app(settings))
    big = b"\x00\x00\x00\x18ftypisom" + os.urandom(40 * 1024**2)

    # No Content-Length: only the write itself can find the disk full.
    response = await client.post("/file/", data=chunked(big, 1024**2), headers={"Content-Type": "video/mp4"})
    assert response.status == 507, await response.text()
    assert "disk" in (await response.json())["error"]
    # Declared too large for the free space: refused before reading.
    response = await client.post("/file/", data=io.BytesIO(big), headers={"Content-Type": "video/mp4"})
    assert response.status == 507
    assert leftovers(data_dir) == []
    assert stored_ids(data_dir) == []
    # The space is back: a normal upload still works.
    await upload(client, samples.video())


async def test_twenty_parallel_uploads_get_distinct_ids(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    path = samples.video()
    ids = await asyncio.gather(*(upload(client, path) for _ in range(20)))
    assert len(set(ids)) == 20
    assert stored_ids(data_dir) == sorted(ids)


async def test_ten_parallel_patches_give_one_200_and_nine_409(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video())
    responses = await asyncio.gather(
        *(client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120}) for _ in range(10))
    )
    assert sorted(r.status for r in responses) == [200] + [409] * 9
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True


async def test_patch_and_delete_racing_leave_nothing_behind(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(workers=1)
    path = samples.video(640, 360)
    for round_ in range(8):
        video_id = await upload(client, path)
        patch = client.patch(f"/file/{video_id}/", json={"width": 320, "height": 180})
        delete = client.delete(f"/file/{video_id}/")
        pair = (patch, delete) if round_ % 2 else (delete, patch)
        statuses = sorted(r.status for r in await asyncio.gather(*pair))
        assert statuses in ([200, 200], [200, 404]), statuses
    await asyncio.sleep(0.5)
    assert stored_ids(data_dir) == []
    assert rows(data_dir, "SELECT * FROM videos") == []
    assert rows(data_dir, "SELECT * FROM jobs") == []
    assert leftovers(data_dir) == []
    assert ffmpeg_processes(data_dir) == []


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("a" * 1000 + ".mp4", "a" * 251 + ".mp4"),
        ("..\\..\\windows\\evil.mp4", "evil.mp4"),
        ("-i evil.mp4; rm -rf $HOME", "-i evil.mp4; rm -rf $HOME"),
        ("tab\there.mp4", "tab_here.mp4"),
    ],
)
async def test_hostile_filenames_become_safe_display_names(
    client: Client, samples: Samples, data_dir: Path, sent: str, expected: str
) -> None:
    response = await client.post(
        "/file/",
        data=samples.video().read_bytes(),
        headers={
            "Content-Type": "video/mp4",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(sent)}",
        },
    )
    video_id = (await response.json())["id"]
    assert (await get_video(client, video_id))["filename"] == expected
    assert stored_ids(data_dir) == [video_id]  # stored by id, whatever the name


async def test_non_utf8_filename_bytes_are_replaced(client: Client, samples: Samples) -> None:
    data = samples.video().read_bytes()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\nConnection: close\r\n"
        b'Content-Disposition: attachment; filename="caf\xe9\xff.mp4"\r\n'
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    response = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    video_id = response.rsplit(b'"id": "', 1)[1][:36].decode()
    name = (await get_video(client, video_id))["filename"]
    assert name.endswith(".mp4") and name.startswith("caf")
    name.encode("utf-8")  # valid UTF-8, whatever came in


async def test_client_text_never_reaches_the_ffmpeg_command_line(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(x264_preset="veryslow")
    video_id = await upload(client, samples.video(1280, 720, duration_s=5), filename="-vf evil=1 x.mp4")
    await client.patch(f"/file/{video_id}/", json={"width": 640, "height": 360})
    await poll_until(lambda: ffmpeg_processes(data_dir), "ffmpeg to start")
    (pid,) = ffmpeg_processes(data_dir)
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert not any(b"evil" in arg for arg in args)
    assert str(data_dir / "originals" / f"{video_id}.mp4").encode() in args  # resizes start from it
    assert any(b"scale=640:360" in arg for arg in args)
    await client.delete(f"/file/{video_id}/")


def test_access_log_lines_escape_what_the_client_sent(caplog: pytest.LogCaptureFixture) -> None:
    request = make_mocked_request("GET", "/file/%0D%0AFAKE%20200%20OK/")
    logger = AccessLogger(logging.getLogger("videosvc.access"), "")
    with caplog.at_level(logging.INFO, logger="videosvc.access"):
        logger.log(request, web.Response(status=404), 0.0012)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.endswith(" GET /file/%0D%0AFAKE%20200%20OK/ 404 0 1.2 ms")
