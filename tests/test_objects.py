"""The object stores (SPEC §15): a folder, and a real S3 server (SeaweedFS), held to one contract.

Each test runs on both: what the service will rely on must hold on each store alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from videosvc.config import Settings
from videosvc.events.bus import EventBus
from videosvc.store.objects import FileObjects, ObjectMissing, ObjectStore, S3Objects
from videosvc.uploads.parted import MIN_PART_BYTES, PartedUpload, part_bytes_for
from videosvc.web.content import Presentation, content_disposition, redirect_to_object, send_object
from videosvc.web.keys import BUS, SETTINGS

from .seaweed import SeaweedServer


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "file":
        yield FileObjects(tmp_path / "objects")
        return
    seaweed: SeaweedServer = request.getfixturevalue("seaweed")
    s3 = S3Objects(seaweed.settings)
    await s3.open()
    prefix = f"{request.node.name}/".replace("[", "-").replace("]", "")
    try:
        yield _Prefixed(s3, prefix)
    finally:
        for item in await s3.list_objects(prefix):
            await s3.delete(item.key)
        await s3.close()


class _Prefixed:
    """The store under a prefix of its own: each test's objects apart from the others'."""

    def __init__(self, inner: S3Objects, prefix: str) -> None:
        self._inner, self._prefix = inner, prefix

    def __getattr__(self, name: str) -> object:
        method = getattr(self._inner, name)
        if name == "list_objects":
            return self._list

        def prefixed(key: str, *args: object, **kwargs: object) -> object:
            return method(self._prefix + key, *args, **kwargs)

        return prefixed

    def prefixed(self, key: str) -> str:
        return self._prefix + key

    async def _list(self, prefix: str) -> list[object]:
        from dataclasses import replace

        found = await self._inner.list_objects(self._prefix + prefix)
        return [replace(item, key=item.key.removeprefix(self._prefix)) for item in found]


async def read_all(store: ObjectStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, start, end)])


async def test_an_object_is_published_whole_read_in_ranges_listed_and_deleted(
    store: ObjectStore, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: several chunks
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    await store.put_file("originals/a.mp4", source)
    await store.put_file("pictures/a/poster.jpg", source)
    assert await read_all(store, "originals/a.mp4") == data
    assert await read_all(store, "originals/a.mp4", 1000, 1010) == data[1000:1010]
    assert await read_all(store, "originals/a.mp4", len(data) - 5) == data[-5:]
    assert await read_all(store, "originals/a.mp4", len(data) + 10) == b""  # past the end: nothing
    head = await store.head("originals/a.mp4")
    assert head is not None and head.size == len(data)

    source.write_bytes(data[:100])  # a new version: a new ETag
    await store.put_file("originals/a.mp4", source)
    again = await store.head("originals/a.mp4")
    assert again is not None and again.size == 100 and again.etag != head.etag

    assert [o.key for o in await store.list_objects("originals/")] == ["originals/a.mp4"]
    assert [o.key for o in await store.list_objects("")] == ["originals/a.mp4", "pictures/a/poster.jpg"]
    await store.delete("originals/a.mp4")
    await store.delete("originals/a.mp4")  # gone already: no error
    assert await store.head("originals/a.mp4") is None
    with pytest.raises(ObjectMissing):
        await read_all(store, "originals/a.mp4")
    for bad in ("/etc/passwd", "a/../../b", "", "a//b", ".multipart/x/1", "a/.hidden"):
        with pytest.raises(ValueError):
            await store.head(bad)
    with pytest.raises(ValueError):
        await read_all(store, "pictures/a/poster.jpg", -5)
    with pytest.raises(ObjectMissing):
        await read_all(store, "pictures/a")  # a "folder" of the file store is no object


async def test_a_multipart_upload_resumes_by_its_id_from_what_the_store_holds(
    store: ObjectStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    part = 5 * 1024 * 1024  # S3's smallest part but the last
    first, second, last = b"a" * part, b"b" * part, b"c" * 1000
    upload_id = await store.start_parts("uploads/x")
    await store.put_part("uploads/x", upload_id, 1, first)
    await store.put_part("uploads/x", upload_id, 2, second)
    # What a restarted service knows: the key and the upload's id; the store holds the rest.
    held = await store.parts("uploads/x", upload_id)
    assert [(p.number, p.size) for p in held] == [(1, part), (2, part)]
    held.append(await store.put_part("uploads/x", upload_id, 3, last))
    with pytest.raises(ObjectMissing):  # an upload belongs to its key
        await store.finish_parts("uploads/other", upload_id, held)
    assert await store.head("uploads/x") is None  # nothing is visible before it is finished
    assert await store.list_objects("") == []
    await store.finish_parts("uploads/x", upload_id, held)
    assert await read_all(store, "uploads/x") == first + second + last

    dropped = await store.start_parts("uploads/y")
    await store.put_part("uploads/y", dropped, 1, first)
    await store.abort_parts("uploads/y", dropped)  # what the expiry sweep does
    with pytest.raises(ObjectMissing):
        await store.parts("uploads/y", dropped)
    with pytest.raises(ObjectMissing):
        await store.finish_parts("uploads/y", dropped, [])
    assert await store.head("uploads/y") is None


async def test_a_presigned_url_reads_the_object_in_ranges_without_credentials(
    store: ObjectStore, tmp_path: Path
) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"0123456789" * 1000)
    await store.put_file("renditions/a.mp4", source)
    url = await store.presign("renditions/a.mp4", 60)
    if isinstance(store, FileObjects):
        assert url is None  # a folder has no URL of its own: the service serves it
        return
    assert url is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Range": "bytes=10-19"}) as response:
            assert response.status == 206 and await response.read() == b"0123456789"
        tampered = url.replace("renditions/a.mp4", "renditions/b.mp4")
        async with session.get(tampered) as response:
            assert response.status == 403


def object_app(store: ObjectStore) -> web.Application:
    """Proxy delivery alone: GET/HEAD /o/{key} answered by `send_object` from the store."""

    async def get(request: web.Request) -> web.StreamResponse:
        missing = web.HTTPNotFound(text="no such object")
        return await send_object(request, store, request.match_info["key"], Presentation(), False, missing)

    async def redirect(request: web.Request) -> web.StreamResponse:
        missing = web.HTTPNotFound(text="no such object")
        download = "download" in request.query
        shown = Presentation(disposition=content_disposition("holiday video.mp4", download=download))
        return await redirect_to_object(request, store, request.match_info["key"], shown, False, missing)

    app = web.Application()
    app[SETTINGS] = Settings()
    app[BUS] = EventBus()
    app.router.add_get("/o/{key:.+}", get)
    app.router.add_get("/r/{key:.+}", redirect)
    return app


async def test_proxy_delivery_answers_ranges_and_validators_from_either_store(
    store: ObjectStore, tmp_path: Path, aiohttp_client: Any
) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB
    source = tmp_path / "video.mp4"
    source.write_bytes(data)
    await store.put_file("originals/v.mp4", source)
    client = await aiohttp_client(object_app(store))
    url = "/o/originals/v.mp4"

    whole = await client.get(url)
    assert whole.status == 200 and await whole.read() == data
    etag = whole.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2  # a strong validator
    assert whole.headers["Accept-Ranges"] == "bytes" and "Last-Modified" in whole.headers
    part = await client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status == 206 and await part.read() == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = await client.get(url, headers={"Range": "bytes=-5"})
    assert tail.status == 206 and await tail.read() == data[-5:]
    past = await client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert past.status == 416
    assert (await client.get(url, headers={"If-None-Match": etag})).status == 304
    stale = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"another"'})
    assert stale.status == 200 and len(await stale.read()) == len(data)  # a changed copy: all of it
    head = await client.head(url)
    assert head.status == 200 and head.headers["Content-Length"] == str(len(data))
    assert (await client.get("/o/originals/none.mp4")).status == 404

    # Replaced while it is sent: the old version whole, or a cut-off answer; never a mix.
    async with client.get(url) as response:
        first = await response.content.readexactly(64 * 1024)
        source.write_bytes(b"x" * len(data))
        await store.put_file("originals/v.mp4", source)
        try:
            rest = await response.read()
        except aiohttp.ClientPayloadError:
            rest = None
    if rest is not None:
        assert first + rest == data
    again = await client.get(url)
    assert await again.read() == b"x" * len(data) and again.headers["ETag"] != etag


async def test_a_read_of_a_replaced_version_is_refused(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "a"
    source.write_bytes(b"old")
    await store.put_file("k", source)
    old = await store.head("k")
    assert old is not None and await read_all_version(store, "k", old.etag) == b"old"
    source.write_bytes(b"new")
    await store.put_file("k", source)
    with pytest.raises(ObjectMissing):
        await read_all_version(store, "k", old.etag)


async def read_all_version(store: ObjectStore, key: str, etag: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, etag=etag)])


PART = MIN_PART_BYTES


async def test_an_upload_in_parts_resumes_from_what_the_store_holds_and_publishes_whole(
    store: ObjectStore,
) -> None:
    data = bytes(range(256)) * (PART * 5 // 2 // 256)  # two and a half parts
    upload = await PartedUpload.start(store, "uploads/u", PART)
    for at in range(0, PART + 1000, 700_000):  # a first request: a part and a bit, in odd chunks
        await upload.append(data[at : min(at + 700_000, PART + 1000)])
    await upload.save()
    assert await upload.offset() == PART + 1000
    # Another process (a restart, another node) knows the key, the id and the part size only.
    resumed = PartedUpload(store, "uploads/u", upload.upload_id, PART)
    assert await resumed.offset() == PART + 1000
    await resumed.append(data[PART + 1000 :])
    await resumed.save()  # the last request ends as every one does
    await resumed.finish()
    assert await read_all(store, "uploads/u") == data
    assert [o.key for o in await store.list_objects("uploads/")] == ["uploads/u"]  # no tail left


async def test_a_crash_between_a_part_and_its_tail_counts_no_byte_twice(store: ObjectStore) -> None:
    data = bytes(range(256)) * (PART * 2 // 256)
    upload = await PartedUpload.start(store, "uploads/c", PART)
    await upload.append(data[:1000])
    await upload.save()  # a first request: its tail (part 1-to-be) in the store
    await upload.append(data[1000 : PART + 10])  # part 1 sent; the process dies before save()
    resumed = PartedUpload(store, "uploads/c", upload.upload_id, PART)
    assert await resumed.offset() == PART  # part 1; the old tail (its bytes in it) not counted
    await resumed.append(data[PART:])
    await resumed.finish()
    assert await read_all(store, "uploads/c") == data
    assert [o.key for o in await store.list_objects("uploads/")] == ["uploads/c"]


async def test_an_abandoned_upload_in_parts_leaves_nothing(store: ObjectStore) -> None:
    upload = await PartedUpload.start(store, "uploads/a", PART)
    await upload.append(b"x" * (PART + 5))
    await upload.save()
    await upload.abort()
    assert await store.list_objects("uploads/") == []
    with pytest.raises(ObjectMissing):
        await store.parts("uploads/a", upload.upload_id)
    empty = await PartedUpload.start(store, "uploads/e", PART)  # an empty upload is an empty object
    await empty.finish()
    assert await read_all(store, "uploads/e") == b""


def test_an_upload_s_parts_are_equal_and_fewer_than_ten_thousand() -> None:
    assert part_bytes_for(10 * 1024**3) == 8 * 1024**2  # the default where it suffices
    for largest in (80 * 1024**3, 100 * 1024**3, 5 * 1024**4):
        size = part_bytes_for(largest)
        assert size % 1024**2 == 0 and math.ceil(largest / size) < 10_000


async def test_an_upload_in_parts_killed_at_any_moment_resumes_to_the_same_bytes(
    store: ObjectStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = os.urandom(PART * 3 + 12345)
    data_file = tmp_path / "data.bin"
    data_file.write_bytes(data)
    upload = await PartedUpload.start(store, "uploads/k", PART)
    if isinstance(store, FileObjects):
        where, key, env = str(tmp_path / "objects"), "uploads/k", dict(os.environ)
    else:
        settings = request.getfixturevalue("seaweed").settings
        where, key = settings.endpoint_url, store.prefixed("uploads/k")  # type: ignore[attr-defined]
        env = {**os.environ, "VIDEOSVC_TEST_S3_BUCKET": settings.bucket, "VIDEOSVC_TEST_S3_KEY":
               settings.access_key_id, "VIDEOSVC_TEST_S3_SECRET": settings.secret_access_key}  # fmt: skip
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    rng = random.Random(7)
    for _ in range(4):  # four processes, each killed (SIGKILL) after a few of its requests
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.parted_child", where, key, upload.upload_id, str(PART),
            str(data_file), env=env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert child.stdout is not None
        for _ in range(rng.randint(1, 6)):
            if not await child.stdout.readline():
                break
        await asyncio.sleep(rng.uniform(0, 0.05))  # somewhere inside its next request
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
    resumed = PartedUpload(store, "uploads/k", upload.upload_id, PART)
    offset = await resumed.offset()
    assert 0 < offset <= len(data)
    await resumed.append(data[offset:])
    await resumed.finish()
    assert await read_all(store, "uploads/k") == data  # nothing lost, nothing twice


async def test_redirect_delivery_sends_the_client_to_the_store_which_answers_its_ranges(
    store: ObjectStore, tmp_path: Path, aiohttp_client: Any
) -> None:
    data = bytes(range(256)) * 4096
    source = tmp_path / "video.mp4"
    source.write_bytes(data)
    await store.put_file("originals/r.mp4", source)
    client = await aiohttp_client(object_app(store))
    answer = await client.get("/r/originals/r.mp4", allow_redirects=False)
    assert (await client.get("/r/originals/none.mp4", allow_redirects=False)).status == 404
    if isinstance(store, FileObjects):  # a folder has no URLs: served by the service itself
        assert answer.status == 200 and await answer.read() == data
        return
    assert answer.status == 307 and answer.headers["Cache-Control"] == "private, no-store"
    location = answer.headers["Location"]
    async with (
        aiohttp.ClientSession() as direct,
        direct.get(location, headers={"Range": "bytes=100-199"}) as at,
    ):
        # The store, asked with no credentials of ours: the range, and the type stored with it.
        assert at.status == 206 and await at.read() == data[100:200]
        assert at.headers["Content-Type"] == "video/mp4"
    segment_file = tmp_path / "0.m4s"
    segment_file.write_bytes(data[:1000])
    await store.put_file("packages/r/0.m4s", segment_file)  # a type the store would not guess
    segment = await client.get("/r/packages/r/0.m4s", allow_redirects=False)
    async with aiohttp.ClientSession() as direct, direct.get(segment.headers["Location"]) as at:
        assert await at.read() == data[:1000] and at.headers["Content-Type"] == "video/iso.segment"
    saved = await client.get("/r/originals/r.mp4?download=1", allow_redirects=False)
    assert saved.status == 200 and await saved.read() == data  # a download, named: by proxy
    assert saved.headers["Content-Disposition"].startswith('attachment; filename="holiday video.mp4"')
