"""Free disk is reserved, not only checked (SPEC §12), and a full disk never wedges the service.

Every test runs on a real small filesystem (tmpfs): the numbers are what the
kernel says, not what a mock would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from videosvc.store.disk import overhead
from videosvc.web.keys import DISK

from .helpers import Samples, chunked, get_video, poll_until, rows, upload, wait_for_job
from .server import ServerProcess
from .test_tus import OCTETS, TUS, create, offset_of, patch

MiB = 1024**2


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def fill(disk: Path, leave_bytes: int = 0) -> Path:
    """Another process fills the disk (to `leave_bytes` free, or to the last byte): the service did not."""
    stranger = disk / "someone-elses-file"
    with open(stranger, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while (free := free_bytes(disk)) > leave_bytes:
            f.write(b"\1" * max(4096, min(MiB, free - leave_bytes)))
    return stranger


async def test_declared_lengths_are_reserved_and_small_patches_cannot_fill_the_disk(
    make_client, make_disk, samples: Samples
) -> None:
    """Finding 2: creations each checked alone, then sub-8 MiB PATCHes, took free space to 0."""
    disk = make_disk(96)
    min_free = 32 * MiB
    client = await make_client(data_dir=disk / "data", min_free_bytes=min_free)
    room = free_bytes(disk) - min_free
    first = await create(client, room - 8 * MiB)
    # The first upload's declared bytes are spoken for, though none has arrived.
    response = await client.post("/uploads/", headers={**TUS, "Upload-Length": str(16 * MiB)})
    assert response.status == 507, await response.text()
    refused = await client.post(
        "/file/",
        data=chunked(b"\0\0\0\x18ftypisom" + b"\0" * 16 * MiB, MiB),
        headers={"Content-Type": "video/mp4"},
    )
    assert refused.status == 507
    # Many small PATCHes at once, at every offset: never past the line, never a 500.
    second = await create(client, 4 * MiB)
    lengths = {first: room - 8 * MiB, second: 4 * MiB}
    block = b"\0" * (MiB // 2)

    async def attack(upload_id: str, offset: int) -> int:
        if offset + len(block) >= lengths[upload_id]:
            return 0  # the last byte would publish (and refuse) it: the disk is what is under attack here
        try:
            return (await patch(client, upload_id, offset, block)).status
        except aiohttp.ClientError:
            return 0  # taken over by a newer PATCH

    statuses = await asyncio.gather(
        *(attack(upload_id, i * len(block)) for upload_id in (first, second) for i in range(20))
    )
    assert 500 not in statuses and 204 in statuses, statuses
    for _ in range(80):  # keep going the way a client does: HEAD, then PATCH at the offset
        for upload_id in (first, second):
            assert await attack(upload_id, await offset_of(client, upload_id)) in (0, 204)
    assert free_bytes(disk) >= min_free - MiB  # the database's own pages may take a little
    assert await offset_of(client, second) == 4 * MiB - len(block)


async def test_a_checksummed_chunk_is_copied_only_if_the_copy_fits_beside_it(make_client, make_disk) -> None:
    """The chunk waits in a file of its own until verified: appending it needs its size once more."""
    disk = make_disk(96)
    min_free = 32 * MiB
    client = await make_client(data_dir=disk / "data", min_free_bytes=min_free)
    room = free_bytes(disk) - min_free
    upload_id = await create(client, room - 8 * MiB)
    chunk = b"\0" * 16 * MiB  # held by the upload's reservation, but its copy is not: 8 MiB are left
    digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
    response = await client.patch(
        f"/uploads/{upload_id}",
        data=io.BytesIO(chunk),
        headers={**OCTETS, "Upload-Offset": "0", "Upload-Checksum": f"sha256 {digest}"},
    )
    assert response.status == 507, await response.text()
    assert await offset_of(client, upload_id) == 0  # all or nothing
    assert not list((disk / "data" / "uploads").glob("*.chunk"))
    assert free_bytes(disk) >= min_free


@pytest.mark.parametrize("size", [3 * MiB, 16 * MiB], ids=["less-than-a-block", "whole-blocks"])
async def test_each_block_of_a_body_without_length_is_checked_before_it_is_written(
    make_client, make_disk, size: int
) -> None:
    """No Content-Length: nothing is reserved ahead, so each 4 MiB block, and the last short one,
    is checked against the disk before it is written (507, not a disk past its margin)."""
    disk = make_disk(96)
    min_free = 32 * MiB
    client = await make_client(data_dir=disk / "data", min_free_bytes=min_free)
    await create(client, free_bytes(disk) - min_free - 2 * MiB)  # about 1.5 MiB of room is left
    data = b"\0\0\0\x18ftypisom" + b"\0" * (size - 12)
    response = await client.post("/file/", data=chunked(data, MiB), headers={"Content-Type": "video/mp4"})
    assert response.status == 507, await response.text()
    assert free_bytes(disk) >= min_free


async def test_reserved_bytes_per_client_are_capped(make_client) -> None:
    client = await make_client(api_keys=("a", "b"), max_reserved_bytes_per_client=10 * MiB)
    a, b = {"Authorization": "Bearer a"}, {"Authorization": "Bearer b"}
    await create(client, 6 * MiB, **a)
    response = await client.post("/uploads/", headers={**TUS, "Upload-Length": str(6 * MiB), **a})
    assert response.status == 429 and "max_reserved_bytes_per_client" in (await response.json())["error"]
    assert int(response.headers["Retry-After"]) >= 1
    await create(client, 6 * MiB, **b)  # another key's share is its own


async def test_a_running_resize_reserves_its_output(make_client, make_disk, samples: Samples) -> None:
    """Uploads cannot take the room a running resize will write its output into."""
    disk = make_disk(96)
    source = samples.video(640, 360, duration_s=3)
    client = await make_client(data_dir=disk / "data", min_free_bytes=8 * MiB, x264_preset="veryslow")
    budget = client.app[DISK]
    video_id = await upload(client, source)
    # What the job may write, as the service reckons it: the source's bytes per pixel at 1920x1080.
    expected = source.stat().st_size * (1920 * 1080) // (640 * 360) * 3 // 2
    assert expected > 2 * MiB  # far more than a reservation's own overhead
    room = budget.room()
    assert (await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})).status == 200
    await poll_until(
        lambda: get_video(client, video_id),
        "the job to run",
        5,
        every_s=0.01,
        until=lambda body: body["job"]["state"] == "running",
    )
    # An upload that would fit in the room the job does not hold: refused while the job holds it.
    fits_without_the_job = room - expected // 2 - overhead(room)
    response = await client.post("/uploads/", headers={**TUS, "Upload-Length": str(fits_without_the_job)})
    assert response.status == 507, await response.text()
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True
    assert budget.reserved_bytes == 0  # given back when it ended


async def test_on_a_disk_filled_by_someone_else_deletion_still_works_and_nothing_is_a_500(
    make_client, make_disk, samples: Samples
) -> None:
    disk = make_disk(48)
    data_dir = disk / "data"
    client = await make_client(data_dir=data_dir, min_free_bytes=MiB)
    video_id = await upload(client, samples.video())
    upload_id = await create(client, 200_000)
    assert (await patch(client, upload_id, 0, b"\0" * 50_000)).status == 204
    # Half the margin left: a write would still fit, but must not be made.
    stranger = fill(disk, leave_bytes=MiB // 2)
    response = await patch(client, upload_id, 50_000, b"\0" * 50_000)
    assert response.status == 507 and await offset_of(client, upload_id) == 50_000
    fill(disk)  # and now to the last byte
    assert free_bytes(disk) == 0

    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded" and "disk" in health["problems"][0]
    statuses = [
        (await patch(client, upload_id, 50_000, b"\0" * 50_000)).status,
        (await client.post("/uploads/", headers={**TUS, "Upload-Length": "1000"})).status,
        (
            await client.post(
                "/file/", data=samples.video().read_bytes(), headers={"Content-Type": "video/mp4"}
            )
        ).status,
    ]
    assert statuses == [507, 507, 507]
    # Deleting frees space, and needs none to do it.
    assert (await client.delete(f"/uploads/{upload_id}", headers=TUS)).status == 204
    assert (await client.delete(f"/file/{video_id}/")).status == 200
    assert rows(data_dir, "SELECT count(*) FROM videos") == [(0,)]
    assert rows(data_dir, "SELECT count(*) FROM uploads") == [(0,)]
    assert not list((data_dir / "videos").glob("*")) and not list((data_dir / "uploads").glob("*"))
    os.unlink(stranger)
    await asyncio.sleep(0.1)
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok"
    await upload(client, samples.video())  # and the service goes on as before


async def test_after_a_restart_unfinished_uploads_hold_their_disk_again_whatever_is_left(
    make_disk,
) -> None:
    disk = make_disk(96)
    data_dir = disk / "data"
    min_free = 32 * MiB
    with ServerProcess(data_dir, min_free_bytes=min_free) as server:
        async with aiohttp.ClientSession(server.url) as session:
            length = free_bytes(disk) - min_free - 8 * MiB
            response = await session.post("/uploads/", headers={**TUS, "Upload-Length": str(length)})
            assert response.status == 201, await response.text()
            upload_id = response.headers["Location"].rsplit("/", 1)[1]
            response = await session.patch(
                f"/uploads/{upload_id}", data=b"\0" * 1000, headers={**OCTETS, "Upload-Offset": "0"}
            )
            assert response.status == 204
        server.stop()
    with ServerProcess(data_dir, min_free_bytes=min_free) as server:
        async with aiohttp.ClientSession(server.url) as session:
            # Its declared bytes are still spoken for, though no PATCH came since the start.
            response = await session.post("/uploads/", headers={**TUS, "Upload-Length": str(16 * MiB)})
            assert response.status == 507, await response.text()
    # Someone else takes most of the room meanwhile: what was promised to the upload is still held.
    stranger = fill(disk, leave_bytes=min_free + 16 * MiB)
    try:
        with ServerProcess(data_dir, min_free_bytes=min_free) as server:
            async with aiohttp.ClientSession(server.url) as session:
                response = await session.head(f"/uploads/{upload_id}", headers=TUS)
                assert (response.status, response.headers["Upload-Offset"]) == (200, "1000")
    finally:
        os.unlink(stranger)


async def test_after_a_restart_on_a_full_disk_termination_still_works(make_disk, samples: Samples) -> None:
    """The red team's wedge: once full, DELETE /uploads/{id} answered 500, also after a restart."""
    disk = make_disk(48)
    data_dir = disk / "data"
    with ServerProcess(data_dir, min_free_bytes=MiB) as server:
        async with aiohttp.ClientSession(server.url) as session:
            response = await session.post("/uploads/", headers={**TUS, "Upload-Length": "100000"})
            upload_id = response.headers["Location"].rsplit("/", 1)[1]
            response = await session.patch(
                f"/uploads/{upload_id}", data=b"\0" * 5000, headers={**OCTETS, "Upload-Offset": "0"}
            )
            assert response.status == 204
        server.stop()
    stranger = fill(disk)
    try:
        with ServerProcess(data_dir, min_free_bytes=MiB) as server:
            async with aiohttp.ClientSession(server.url) as session:
                response = await session.delete(f"/uploads/{upload_id}", headers=TUS)
                assert response.status == 204, await response.text()
                response = await session.head(f"/uploads/{upload_id}", headers=TUS)
                assert response.status == 404
            assert "Traceback" not in server.log()
    finally:
        os.unlink(stranger)
