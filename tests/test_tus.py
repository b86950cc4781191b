"""Resumable uploads (tus 1.0.0) at /uploads/: a real client (tuspy), and the protocol's every status.

Where the tus text leaves a choice, tusd's behaviour was followed (its handler
tests: pkg/handler/*_test.go), except where noted.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import io
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage

from videosvc.store.disk import overhead
from videosvc.store.storage import FileSink
from videosvc.web.keys import DISK, UPLOADS
from videosvc.web.keys import SETTINGS as SETTINGS_KEY

from .helpers import Client, Samples, get_video, leftovers, poll_until, rows, stored_ids
from .server import ServerProcess

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


class KeptOpen(io.BytesIO):
    """A file's bytes for tuspy, which closes the streams it is given (and leaks those it opens)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.read_bytes())

    def close(self) -> None:
        pass


def raw_patch_head(upload_id: str, offset: int, length: int) -> bytes:
    """The head of a tus PATCH, for a client that then sends (part of) its body by hand."""
    return (
        f"PATCH /uploads/{upload_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def create(client: Client, length: int, metadata: str | None = None, **headers: str) -> str:
    response = await client.post(
        "/uploads/",
        headers={
            **TUS,
            "Upload-Length": str(length),
            **({"Upload-Metadata": metadata} if metadata else {}),
            **headers,
        },
    )
    assert response.status == 201, await response.text()
    location = response.headers["Location"]
    assert location.startswith("http://") and "/uploads/" in location
    return location.rsplit("/", 1)[1]


async def offset_of(client: Client, upload_id: str, **headers: str) -> int:
    response = await client.head(f"/uploads/{upload_id}", headers={**TUS, **headers})
    assert response.status == 200, response.status
    return int(response.headers["Upload-Offset"])


async def until_offset(
    client: Client, upload_id: str, offset: int, timeout_s: float = 5.0, every_s: float = 0.01, **headers: str
) -> None:
    """Until HEAD says the upload is at `offset` (a PATCH's bytes are on disk as they arrive)."""
    await poll_until(
        lambda: offset_of(client, upload_id, **headers),
        f"offset {offset}",
        timeout_s,
        every_s=every_s,
        until=lambda now: now == offset,
    )


async def patch(
    client: Client, upload_id: str, offset: int, data: bytes, **headers: str
) -> aiohttp.ClientResponse:
    return await client.patch(
        f"/uploads/{upload_id}", data=data, headers={**OCTETS, "Upload-Offset": str(offset), **headers}
    )


# -- a real client


async def test_tuspy_uploads_in_chunks_with_checksums_and_the_video_is_stored(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    source = samples.video(320, 240, duration_s=2)
    tus = tus_client.TusClient(str(client.make_url("/uploads/")))
    uploader = tus.async_uploader(
        file_stream=KeptOpen(source),
        chunk_size=40_000,
        metadata={"filename": "кот.mp4"},
        upload_checksum=True,
    )
    await uploader.upload()
    video_id = uploader.url.rsplit("/", 1)[1]
    info = await get_video(client, video_id)  # at once: the last PATCH waited for it
    assert (info["filename"], info["width"], info["size"]) == ("кот.mp4", 320, source.stat().st_size)
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == source.read_bytes()
    # The finished upload still answers: a client that lost the last response learns it is complete.
    assert await offset_of(client, video_id) == source.stat().st_size
    assert leftovers(data_dir) == [] and not list((data_dir / "uploads").glob("*"))
    assert client.app[DISK].reserved_bytes == 0  # the disk its Upload-Length held is free again


async def test_an_interrupted_upload_resumes_from_its_stored_url(
    client: Client, samples: Samples, data_dir: Path, tmp_path: Path
) -> None:
    source = samples.noisy(2)  # ~11 MB
    storage = FileStorage(str(tmp_path / "tus-urls.json"))
    url = str(client.make_url("/uploads/"))
    first = tus_client.TusClient(url).async_uploader(
        file_stream=KeptOpen(source), chunk_size=1_000_000, store_url=True, url_storage=storage
    )
    await first.upload(stop_at=4_000_000)  # the train goes into a tunnel
    upload_id = first.url.rsplit("/", 1)[1]
    assert await offset_of(client, upload_id) == 4_000_000

    # Made in a thread: the constructor looks the URL up and HEADs it with blocking requests.
    second = await asyncio.to_thread(
        tus_client.TusClient(url).async_uploader,
        file_stream=KeptOpen(source),
        chunk_size=1_000_000,
        store_url=True,
        url_storage=storage,
    )
    assert second.url == first.url and second.offset == 4_000_000  # found by the file's fingerprint
    await second.upload()
    storage.close()
    assert sha256((data_dir / "videos" / f"{upload_id}.mp4").read_bytes()) == sha256(source.read_bytes())


async def test_tuspy_with_an_api_key(make_client, samples: Samples) -> None:
    client = await make_client(api_keys=("k",))
    url = str(client.make_url("/uploads/"))
    anonymous = tus_client.TusClient(url).async_uploader(
        file_stream=KeptOpen(samples.video()), chunk_size=100_000
    )
    with pytest.raises(Exception, match="401"):
        await anonymous.upload()
    keyed = tus_client.TusClient(url, headers={"Authorization": "Bearer k"})
    uploader = keyed.async_uploader(file_stream=KeptOpen(samples.video()), chunk_size=100_000)
    await uploader.upload()
    video_id = uploader.url.rsplit("/", 1)[1]
    assert (await client.get(f"/file/{video_id}/", headers={"Authorization": "Bearer k"})).status == 200


# -- the protocol, status by status


async def test_options_advertises_the_version_extensions_size_and_checksums(make_client) -> None:
    client = await make_client(max_upload_bytes=123456789)
    for path in ("/uploads/", "/uploads/00000000-0000-4000-8000-000000000000"):
        response = await client.options(path)
        assert response.status == 204
        headers = response.headers
        assert headers["Tus-Version"] == "1.0.0"
        assert headers["Tus-Extension"] == "creation,creation-with-upload,expiration,checksum,termination"
        assert headers["Tus-Max-Size"] == "123456789"
        assert {"sha1", "md5", "sha256"} <= set(headers["Tus-Checksum-Algorithm"].split(","))


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0"])
async def test_other_tus_versions_get_412_with_tus_version(client: Client, version: str | None) -> None:
    headers = {"Upload-Length": "100", **({"Tus-Resumable": version} if version else {})}
    response = await client.post("/uploads/", headers=headers)
    assert response.status == 412
    assert response.headers["Tus-Version"] == "1.0.0" and response.headers["Tus-Resumable"] == "1.0.0"
    assert "Tus-Resumable" in (await response.json())["error"]
    assert not list((client.app[SETTINGS_KEY].storage.data_dir / "uploads").glob("*"))


async def test_creation_and_head(client: Client) -> None:
    upload_id = await create(client, 5000, f"filename {b64('cat.mp4')},note")
    response = await client.head(f"/uploads/{upload_id}", headers=TUS)
    assert response.status == 200
    headers = response.headers
    assert (headers["Upload-Offset"], headers["Upload-Length"]) == ("0", "5000")
    assert headers["Upload-Metadata"] == f"filename {b64('cat.mp4')},note"
    assert headers["Cache-Control"] == "no-store" and headers["Tus-Resumable"] == "1.0.0"
    assert headers["Upload-Expires"].endswith(" GMT")


@pytest.mark.parametrize(
    ("headers", "status", "said"),
    [
        ({}, 400, "Upload-Length"),
        ({"Upload-Length": "-5"}, 400, "Upload-Length"),
        ({"Upload-Length": "12abc"}, 400, "Upload-Length"),
        ({"Upload-Length": "0"}, 400, "empty"),
        ({"Upload-Defer-Length": "1"}, 400, "Upload-Defer-Length"),
        ({"Upload-Length": "10", "Upload-Defer-Length": "1"}, 400, "Upload-Defer-Length"),
        ({"Upload-Length": str(10**12)}, 413, "max_upload_bytes"),
        ({"Upload-Length": "10", "Upload-Metadata": "filename not*base64"}, 400, "base64"),
        ({"Upload-Length": "10", "Upload-Metadata": "filename Y2F0*"}, 400, "base64"),  # "cat" + junk
        ({"Upload-Length": "10", "Upload-Metadata": f"a {b64('x')},a {b64('y')}"}, 400, "twice"),
        ({"Upload-Length": "10", "Upload-Metadata": "kéy " + b64("x")}, 400, "printable"),
        ({"Upload-Length": "10", "Upload-Metadata": "k " + "QUFB" * 1200}, 400, "longer than"),
    ],
)
async def test_creation_refusals(
    client: Client, data_dir: Path, headers: dict[str, str], status: int, said: str
) -> None:
    response = await client.post("/uploads/", headers={**TUS, **headers})
    assert response.status == status, await response.text()
    assert said in (await response.json())["error"]
    assert rows(data_dir, "SELECT count(*) FROM uploads") == [(0,)]


async def test_an_upload_of_exactly_max_upload_bytes_may_be_created(make_client) -> None:
    client = await make_client(max_upload_bytes=1000)
    await create(client, 1000)
    response = await client.post("/uploads/", headers={**TUS, "Upload-Length": "1001"})
    assert response.status == 413 and "max_upload_bytes" in (await response.json())["error"]


async def test_hostile_filenames_in_metadata_are_cleaned(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    data = samples.video().read_bytes()
    upload_id = await create(
        client, len(data), "filename " + base64.b64encode("../\x00e\u202evil\x85.mp4".encode()).decode()
    )
    assert rows(data_dir, f"SELECT filename FROM uploads WHERE id = '{upload_id}'") == [("_e_vil_.mp4",)]
    assert (await patch(client, upload_id, 0, data)).status == 204
    info = await get_video(client, upload_id)
    assert info["filename"] == "_e_vil_.mp4"


async def test_patch_refusals_write_nothing(client: Client, samples: Samples) -> None:
    data = samples.video().read_bytes()
    upload_id = await create(client, len(data))
    assert (await patch(client, upload_id, 0, data[:1000])).status == 204
    cases = [
        (await patch(client, upload_id, 0, data[:10]), 409, "Upload-Offset"),  # the wrong offset
        (await patch(client, upload_id, 2000, data[:10]), 409, "1000"),
        (
            await patch(client, upload_id, 1000, data[1000:1010], **{"Content-Type": "video/mp4"}),
            415,
            "offset+octet-stream",
        ),
        (await client.patch(f"/uploads/{upload_id}", data=b"x", headers=OCTETS), 400, "Upload-Offset"),
        (await patch(client, upload_id, -1, b"x"), 400, "Upload-Offset"),
        (await patch(client, upload_id, 1000, data[1000:] + b"extra"), 413, "Upload-Length"),
    ]
    for response, status, said in cases:
        assert response.status == status, (status, await response.text())
        assert said in (await response.json())["error"]
        assert response.headers["Tus-Resumable"] == "1.0.0"
    assert await offset_of(client, upload_id) == 1000


async def test_a_declared_length_past_the_end_is_413_before_the_body(client: Client) -> None:
    upload_id = await create(client, 1000)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(raw_patch_head(upload_id, 0, 1001))  # the head only: no body byte is sent
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)  # upload_idle_timeout_s is 60
    writer.close()
    assert status_line.split()[1] == b"413", status_line
    assert await offset_of(client, upload_id) == 0


async def test_a_chunked_body_past_the_end_is_413_and_leaves_nothing(
    client: Client, samples: Samples
) -> None:
    data = samples.video().read_bytes()
    upload_id = await create(client, len(data))

    async def too_much() -> Any:  # no Content-Length: only the end can tell
        yield data[:50_000]
        await until_offset(client, upload_id, 50_000, timeout_s=2)  # on disk before the overflow is sent
        yield data[50_000:] + b"\0" * 20_000

    response = await client.patch(
        f"/uploads/{upload_id}", data=too_much(), headers={**OCTETS, "Upload-Offset": "0"}
    )
    assert response.status == 413
    assert await offset_of(client, upload_id) == 0
    # The bytes cut back are held for the upload again: all of its Upload-Length is still reserved.
    assert client.app[DISK].reserved_bytes == len(data) + overhead(len(data))


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
async def test_checksums_accept_a_good_chunk_and_discard_a_bad_one(
    client: Client, samples: Samples, algorithm: str
) -> None:
    data = samples.video().read_bytes()
    upload_id = await create(client, len(data))
    chunk = data[:5000]

    def checksum(payload: bytes) -> str:
        return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, payload).digest()).decode()}"

    bad = await patch(client, upload_id, 0, chunk, **{"Upload-Checksum": checksum(chunk[:-1] + b"X")})
    assert bad.status == 460 and bad.reason == "Checksum Mismatch"
    assert "checksum" in (await bad.json())["error"]
    assert await offset_of(client, upload_id) == 0  # discarded
    good = await patch(client, upload_id, 0, chunk, **{"Upload-Checksum": checksum(chunk)})
    assert good.status == 204 and good.headers["Upload-Offset"] == "5000"
    rest = await patch(client, upload_id, 5000, data[5000:], **{"Upload-Checksum": checksum(data[5000:])})
    assert rest.status == 204
    assert (await client.get(f"/file/{upload_id}/")).status == 200


async def test_an_unknown_checksum_algorithm_is_400(client: Client) -> None:
    upload_id = await create(client, 100)
    for header in ("crc32 AAAA", "sha256 not-base64!"):
        response = await patch(client, upload_id, 0, b"x" * 10, **{"Upload-Checksum": header})
        assert response.status == 400, header
    assert await offset_of(client, upload_id) == 0


async def test_creation_with_upload_and_method_override(client: Client, samples: Samples) -> None:
    data = samples.video().read_bytes()
    response = await client.post(
        "/uploads/", data=data[:3000], headers={**OCTETS, "Upload-Length": str(len(data))}
    )
    assert response.status == 201 and response.headers["Upload-Offset"] == "3000"
    upload_id = response.headers["Location"].rsplit("/", 1)[1]
    # A client or proxy that can only POST.
    overridden = await client.post(
        f"/uploads/{upload_id}",
        data=data[3000:],
        headers={**OCTETS, "Upload-Offset": "3000", "X-HTTP-Method-Override": "PATCH"},
    )
    assert overridden.status == 204
    assert (await client.get(f"/file/{upload_id}/")).status == 200
    other = await create(client, 100)
    deleted = await client.post(f"/uploads/{other}", headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert deleted.status == 204
    assert (await client.head(f"/uploads/{other}", headers=TUS)).status == 404


async def test_termination(client: Client, data_dir: Path) -> None:
    upload_id = await create(client, 1000)
    assert (await patch(client, upload_id, 0, b"\0" * 100)).status == 204
    assert (await client.delete(f"/uploads/{upload_id}", headers=TUS)).status == 204
    for method in ("HEAD", "PATCH", "DELETE"):
        response = await client.request(
            method, f"/uploads/{upload_id}", headers={**OCTETS, "Upload-Offset": "100"}
        )
        assert response.status == 404, method
    assert not list((data_dir / "uploads").glob("*"))
    assert client.app[DISK].reserved_bytes == 0  # the disk its Upload-Length held is free again


async def test_termination_ends_a_patch_still_sending_and_nothing_is_stored(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    data = samples.video().read_bytes()
    upload_id = await create(client, len(data))
    go_on = asyncio.Event()

    async def body() -> Any:  # the PATCH is still sending when the upload is terminated
        yield data[:10_000]
        await go_on.wait()
        yield data[10_000:]

    patching = asyncio.create_task(
        client.patch(f"/uploads/{upload_id}", data=body(), headers={**OCTETS, "Upload-Offset": "0"})
    )
    await until_offset(client, upload_id, 10_000)
    assert (await client.delete(f"/uploads/{upload_id}", headers=TUS)).status == 204
    go_on.set()
    try:
        status = (await patching).status
    except aiohttp.ClientError:
        status = 0  # ended by the termination
    assert status in (0, 404, 410), status
    assert stored_ids(data_dir) == [] and not list((data_dir / "uploads").glob("*"))
    assert client.app[DISK].reserved_bytes == 0


async def test_refused_content_at_the_last_byte_is_415_and_the_upload_is_gone(
    client: Client, data_dir: Path
) -> None:
    data = b"just some text, not a video\n" * 100
    upload_id = await create(client, len(data))
    assert (await patch(client, upload_id, 0, data[:1000])).status == 204
    response = await patch(client, upload_id, 1000, data[1000:])
    assert response.status == 415 and "looks like text" in (await response.json())["error"]
    assert (await client.head(f"/uploads/{upload_id}", headers=TUS)).status == 404
    assert (await client.get(f"/file/{upload_id}/")).status == 404
    assert (
        stored_ids(data_dir) == []
        and leftovers(data_dir) == []
        and not list((data_dir / "uploads").glob("*"))
    )


async def test_free_disk_is_checked_against_the_upload_length_at_creation(make_client) -> None:
    client = await make_client(min_free_bytes=10**18)
    response = await client.post("/uploads/", headers={**TUS, "Upload-Length": "1000"})
    assert response.status == 507 and "not enough free disk" in (await response.json())["error"]


async def test_an_upload_belongs_to_the_key_that_made_it(make_client) -> None:
    client = await make_client(api_keys=("a", "b"))
    upload_id = await create(client, 100, Authorization="Bearer a")
    assert await offset_of(client, upload_id, Authorization="Bearer a") == 0
    for method in ("HEAD", "PATCH", "DELETE"):
        response = await client.request(
            method,
            f"/uploads/{upload_id}",
            headers={**OCTETS, "Upload-Offset": "0", "Authorization": "Bearer b"},
        )
        assert response.status == 403, method
    assert (await client.head(f"/uploads/{upload_id}", headers=TUS)).status == 401


async def test_unfinished_uploads_are_capped(make_client) -> None:
    client = await make_client(max_pending_uploads=2)
    await create(client, 10)
    await create(client, 10)
    response = await client.post("/uploads/", headers={**TUS, "Upload-Length": "10"})
    assert response.status == 429 and "max_pending_uploads" in (await response.json())["error"]
    assert int(response.headers["Retry-After"]) > 0


async def test_expired_uploads_answer_410_and_are_swept_in_the_background(
    make_client, data_dir: Path
) -> None:
    client = await make_client(upload_expiry_s=0.6)
    upload_id = await create(client, 1000)
    assert (await patch(client, upload_id, 0, b"\0" * 10)).status == 204
    await asyncio.sleep(0.65)
    response = await patch(client, upload_id, 10, b"\0" * 10)
    assert response.status in (404, 410)  # 410 until the sweep, 404 after
    if response.status == 410:
        assert "expired" in (await response.json())["error"]
    uploads = data_dir / "uploads"
    await poll_until(lambda: list(uploads.glob("*")), "the sweep", 2, until=lambda left: not left)
    assert rows(data_dir, "SELECT count(*) FROM uploads") == [(0,)]
    assert client.app[DISK].reserved_bytes == 0  # the disk its Upload-Length held is free again


async def test_a_patch_takes_over_from_one_stalled_on_a_dead_connection(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(upload_idle_timeout_s=60)
    data = samples.video(640, 360, duration_s=2).read_bytes()
    upload_id = await create(client, len(data))
    # Client A sends 100 KB of the rest, then nothing: its network died without a FIN.
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(raw_patch_head(upload_id, 0, len(data)) + data[:100_000])
    await writer.drain()
    # Each byte that arrived is on disk.
    await until_offset(client, upload_id, 100_000, timeout_s=2, every_s=0.02)
    # Client B (the same user, new network) resumes at once: no 423, no wait for A's timeout.
    started = time.monotonic()
    response = await patch(client, upload_id, 100_000, data[100_000:])
    assert response.status == 204, await response.text()
    assert time.monotonic() - started < 30  # far below upload_idle_timeout_s (60 s)
    assert await reader.read() == b""  # A's connection was ended
    writer.close()
    assert (data_dir / "videos" / f"{upload_id}.mp4").read_bytes() == data


async def test_a_takeover_cuts_back_what_the_older_patch_was_still_writing(
    client: Client, samples: Samples, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The older PATCH's last bytes were still on their way to the disk when the newer one was judged
    at the offset HEAD gave: the newer waits until they landed, they are cut back, and it writes where
    it said it would. The one thing faked: a disk that stalls one write for two seconds."""
    data = samples.video().read_bytes()
    upload_id = await create(client, len(data))
    stall = threading.Event()  # set: the next write stalls
    write = FileSink._write

    def stalled_write(self: FileSink, blocks: list[bytes]) -> None:
        if stall.is_set():
            stall.clear()
            time.sleep(2)
        write(self, blocks)

    monkeypatch.setattr(FileSink, "_write", stalled_write)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(raw_patch_head(upload_id, 0, len(data)) + data[:10_000])
    await writer.drain()
    await until_offset(client, upload_id, 10_000)
    stall.set()
    writer.write(data[10_000:15_000])  # received, then stalled on its way to the disk
    await writer.drain()
    await poll_until(lambda: not stall.is_set(), "the stalled write", 2, every_s=0.01)
    assert await offset_of(client, upload_id) == 10_000
    response = await patch(client, upload_id, 10_000, data[10_000:])
    assert response.status == 204, await response.text()
    assert await reader.read() == b""  # the older PATCH was ended
    writer.close()
    assert (data_dir / "videos" / f"{upload_id}.mp4").read_bytes() == data


async def test_cors_for_tus_clients_in_another_origin(make_client) -> None:
    client = await make_client(cors_origins=("https://app.example",), api_keys=("k",))
    preflight = await client.options(
        "/uploads/",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "tus-resumable,upload-length,upload-metadata,authorization",
        },
    )
    assert preflight.status == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert {"tus-resumable", "upload-length", "upload-metadata", "authorization"} <= set(allowed.split(","))
    created = await client.post(
        "/uploads/",
        headers={**TUS, "Upload-Length": "100", "Origin": "https://app.example", "Authorization": "Bearer k"},
    )
    assert created.status == 201
    exposed = created.headers["Access-Control-Expose-Headers"].lower().split(",")
    assert {"location", "upload-offset", "upload-expires", "tus-resumable"} <= set(exposed)
    elsewhere = await client.post(
        "/uploads/",
        headers={
            **TUS,
            "Upload-Length": "100",
            "Origin": "https://evil.example",
            "Authorization": "Bearer k",
        },
    )
    assert "Access-Control-Allow-Origin" not in elsewhere.headers


# -- across restarts and crashes


def _head(server: ServerProcess, upload_id: str) -> int:
    import urllib.request

    request = urllib.request.Request(f"{server.url}/uploads/{upload_id}", method="HEAD", headers=TUS)
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.headers["Upload-Offset"])


async def test_kill_9_mid_patch_then_resume_gives_the_same_bytes(
    data_dir: Path, samples: Samples, tmp_path: Path
) -> None:
    source = samples.noisy(2)
    data = source.read_bytes()
    server = ServerProcess(data_dir).start()
    try:
        async with aiohttp.ClientSession(server.url) as session:
            response = await session.post("/uploads/", headers={**TUS, "Upload-Length": str(len(data))})
            upload_id = response.headers["Location"].rsplit("/", 1)[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw_patch_head(upload_id, 0, len(data)))
        for start in range(0, 3_000_000, 100_000):  # 3 MB of the body, then the server dies mid-PATCH
            writer.write(data[start : start + 100_000])
            await writer.drain()
        await asyncio.sleep(0.3)
        server.kill9()
        writer.close()
    finally:
        server.__exit__()
    with ServerProcess(data_dir) as server:
        offset = await asyncio.to_thread(_head, server, upload_id)
        assert 0 < offset <= 3_000_000
        tus = tus_client.TusClient(f"{server.url}/uploads/")
        uploader = await asyncio.to_thread(
            tus.async_uploader,
            file_stream=KeptOpen(source),
            url=f"{server.url}/uploads/{upload_id}",
            chunk_size=1_000_000,
        )
        assert uploader.offset == offset
        await uploader.upload()
    assert sha256((data_dir / "videos" / f"{upload_id}.mp4").read_bytes()) == sha256(data)


async def test_partial_uploads_survive_a_restart_and_expired_ones_are_swept_at_start(
    data_dir: Path, samples: Samples
) -> None:
    data = samples.video().read_bytes()
    with ServerProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as session:
            ids = []
            for _ in range(2):
                response = await session.post("/uploads/", headers={**TUS, "Upload-Length": str(len(data))})
                ids.append(response.headers["Location"].rsplit("/", 1)[1])
            for upload_id in ids:
                response = await session.patch(
                    f"/uploads/{upload_id}", data=data[:1000], headers={**OCTETS, "Upload-Offset": "0"}
                )
                assert response.status == 204
        assert server.stop(signal.SIGTERM) == 0
    with ServerProcess(data_dir) as server:
        assert [await asyncio.to_thread(_head, server, upload_id) for upload_id in ids] == [1000, 1000]
        async with aiohttp.ClientSession(server.url) as session:
            response = await session.patch(
                f"/uploads/{ids[0]}", data=data[1000:], headers={**OCTETS, "Upload-Offset": "1000"}
            )
            assert response.status == 204
        server.stop(signal.SIGTERM)
    # ids[1] expires while the service is down: the test moves its clock, rather than wait and race it.
    with sqlite3.connect(data_dir / "videosvc.sqlite3") as db:
        db.execute("UPDATE uploads SET expires_at = ? WHERE id = ?", (time.time() - 1, ids[1]))
    with ServerProcess(data_dir) as server:
        assert "upload expired; removed" in server.log()
    assert sorted(p.name for p in (data_dir / "uploads").glob("*")) == []
    assert stored_ids(data_dir) == [ids[0]]


async def test_at_start_partial_files_without_a_row_and_rows_without_a_file_are_dropped(
    data_dir: Path,
) -> None:
    with ServerProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as session:
            ids = []
            for _ in range(2):
                response = await session.post("/uploads/", headers={**TUS, "Upload-Length": "5000"})
                ids.append(response.headers["Location"].rsplit("/", 1)[1])
                response = await session.patch(
                    f"/uploads/{ids[-1]}", data=b"\0" * 1000, headers={**OCTETS, "Upload-Offset": "0"}
                )
                assert response.status == 204
    # While it is down: one upload loses its bytes, and bytes appear that no upload owns.
    kept, lost = ids
    (data_dir / "uploads" / f"{lost}.part").unlink()
    (data_dir / "uploads" / "f4c5e2b0-0000-4000-8000-000000000000.part").write_bytes(b"\0" * 100)
    with ServerProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as session:
            statuses = [(await session.head(f"/uploads/{i}", headers=TUS)).status for i in (kept, lost)]
    assert statuses == [200, 404]
    assert rows(data_dir, "SELECT id FROM uploads") == [(kept,)]
    assert sorted(p.name for p in (data_dir / "uploads").glob("*")) == [f"{kept}.part"]


async def test_uploads_owned_by_a_key_named_by_its_place_still_belong_to_it_after_the_upgrade(
    data_dir: Path,
) -> None:
    b = {"Authorization": "Bearer b"}
    with ServerProcess(data_dir, api_keys="a,b") as server:
        async with aiohttp.ClientSession(server.url) as session:
            response = await session.post("/uploads/", headers={**TUS, "Upload-Length": "5000", **b})
            upload_id = response.headers["Location"].rsplit("/", 1)[1]
    # An older version named the owner by the key's place in api_keys.
    with sqlite3.connect(data_dir / "videosvc.sqlite3") as db:
        db.execute("UPDATE uploads SET owner = 'key-1' WHERE id = ?", (upload_id,))
    with ServerProcess(data_dir, api_keys="a,b") as server:
        async with aiohttp.ClientSession(server.url) as session:
            statuses = [
                (await session.head(f"/uploads/{upload_id}", headers={**TUS, **key})).status
                for key in (b, {"Authorization": "Bearer a"})
            ]
    assert statuses == [200, 403]


# -- refused requests change nothing (SPEC §12): takeovers, caps, sweeps


def slow_ffprobe(tmp_path: Path, tools: Any, seconds: float) -> str:
    """An ffprobe that takes `seconds` before it starts: a publish that lasts long enough to be hit."""
    slow = tmp_path / "slow-ffprobe"
    slow.write_text(f'#!/bin/sh\nsleep {seconds}\nexec {tools.ffprobe} "$@"\n')
    slow.chmod(0o755)
    return str(slow)


async def test_refused_patches_never_interrupt_the_final_patch_while_it_receives_or_publishes(
    make_client, samples: Samples, tools: Any, tmp_path: Path, data_dir: Path
) -> None:
    """A proxy retrying the last PATCH, or another key's PATCH, must not cost the upload (finding 1)."""
    client = await make_client(api_keys=("a", "b"), ffprobe_path=slow_ffprobe(tmp_path, tools, 1.5))
    a = {"Authorization": "Bearer a"}
    data = samples.video(640, 360, duration_s=2).read_bytes()
    upload_id = await create(client, len(data), **a)
    half = len(data) // 2
    assert (await patch(client, upload_id, 0, data[:half], **a)).status == 204
    go_on = asyncio.Event()

    async def rest() -> Any:  # the final PATCH: a first piece, then the rest when told
        yield data[half : half + 10_000]
        await go_on.wait()
        yield data[half + 10_000 :]

    final = asyncio.create_task(
        client.patch(
            f"/uploads/{upload_id}", data=rest(), headers={**OCTETS, **a, "Upload-Offset": str(half)}
        )
    )
    await until_offset(client, upload_id, half + 10_000, **a)
    # While it receives: a stale offset (a retry), and another key's PATCH at the right offset.
    while_receiving = [
        await patch(client, upload_id, half, b"x" * 10, **a),
        await patch(client, upload_id, half + 10_000, b"x" * 10, Authorization="Bearer b"),
    ]
    assert [r.status for r in while_receiving] == [409, 403]
    assert not final.done()
    go_on.set()
    await until_offset(client, upload_id, len(data), **a)  # every byte is in: the slow probe runs now
    # While it publishes: the retried final PATCH, whole (a stale offset), and one at the end, empty.
    while_publishing = [
        await patch(client, upload_id, half, data[half:], **a),
        await patch(client, upload_id, len(data), b"x", Authorization="Bearer b"),
    ]
    assert [r.status for r in while_publishing] == [409, 403]
    assert not final.done()
    at_the_end = await patch(client, upload_id, len(data), b"", **a)  # acceptable: waits for the publish
    assert at_the_end.status == 204 and at_the_end.headers["Upload-Offset"] == str(len(data))
    response = await final
    assert response.status == 204, await response.text()
    assert (await client.get(f"/file/{upload_id}/", headers=a)).status == 200
    assert (data_dir / "videos" / f"{upload_id}.mp4").read_bytes() == data


async def test_concurrent_checksummed_patches_never_take_each_others_chunk(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    """Three PATCHes of one checksummed chunk at once: one wins, none answers 500 (finding 3)."""
    data = samples.video(640, 360, duration_s=2).read_bytes()
    upload_id = await create(client, len(data))
    chunk = data[:300_000]
    digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()

    async def slowly() -> Any:
        for start in range(0, len(chunk), 30_000):
            yield chunk[start : start + 30_000]
            await asyncio.sleep(0.02)

    async def send() -> int:
        try:
            response = await client.patch(
                f"/uploads/{upload_id}",
                data=slowly(),
                headers={**OCTETS, "Upload-Offset": "0", "Upload-Checksum": f"sha256 {digest}"},
            )
            return response.status
        except aiohttp.ClientError:
            return 0  # taken over: its connection was ended

    statuses = []
    for _ in range(3):
        tasks = [asyncio.create_task(send())]
        await asyncio.sleep(0.05)
        tasks += [asyncio.create_task(send()) for _ in range(2)]
        statuses += await asyncio.gather(*tasks)
        offset = await offset_of(client, upload_id)
        assert offset in (0, len(chunk)), offset
        if offset:
            break
    assert 500 not in statuses and 204 in statuses, statuses
    assert (data_dir / "uploads" / f"{upload_id}.part").read_bytes() == chunk
    assert not list((data_dir / "uploads").glob("*.chunk"))


async def test_the_sweep_never_removes_an_upload_a_patch_just_extended(make_client, data_dir: Path) -> None:
    """The sweep lists expired uploads, then (paused by the test) a PATCH that began before the expiry
    ends and extends it: the sweep must not remove it from its stale list (finding 4)."""
    client = await make_client(upload_expiry_s=1.0, upload_first_byte_timeout_s=1.0)
    uploads = client.app[UPLOADS]
    upload_id = await create(client, 100_000)
    listed = asyncio.Event()

    async def body() -> Any:
        yield b"\0" * 1000
        await listed.wait()  # the sweep has its list: only now does this PATCH end
        yield b"\0" * 1000

    patching = asyncio.create_task(
        client.patch(f"/uploads/{upload_id}", data=body(), headers={**OCTETS, "Upload-Offset": "0"})
    )
    await until_offset(client, upload_id, 1000)
    await asyncio.sleep(1.1)  # the upload's expiry (set when the PATCH began) is past

    async def after_listing() -> None:
        listed.set()
        assert (await patching).status == 204

    await uploads.sweeper.sweep(after_listing=after_listing)
    assert await offset_of(client, upload_id) == 2000
    assert (data_dir / "uploads" / f"{upload_id}.part").stat().st_size == 2000


async def test_the_sweep_passes_over_an_upload_a_stalled_patch_holds(make_client) -> None:
    """Expired while a PATCH is still sending: the sweep leaves it to the PATCH, and is not held up."""
    client = await make_client(upload_expiry_s=1.0, upload_first_byte_timeout_s=1.0)
    uploads = client.app[UPLOADS]
    held, idle = await create(client, 100_000), await create(client, 100_000)
    go_on = asyncio.Event()

    async def body() -> Any:
        yield b"\0" * 1000
        await go_on.wait()

    patching = asyncio.create_task(
        client.patch(f"/uploads/{held}", data=body(), headers={**OCTETS, "Upload-Offset": "0"})
    )
    await until_offset(client, held, 1000)
    await asyncio.sleep(1.1)  # both expired
    await asyncio.wait_for(uploads.sweeper.sweep(), 5)
    assert (await client.head(f"/uploads/{idle}", headers=TUS)).status == 404
    go_on.set()
    assert (await patching).status == 204
    assert await offset_of(client, held) == 1000


async def test_the_unfinished_upload_caps_hold_against_a_burst(make_client, data_dir: Path) -> None:
    """Counting and inserting in one transaction: 40 creations at once cannot pass a cap of 5 (finding 5)."""
    client = await make_client(max_pending_uploads=5)
    responses = await asyncio.gather(
        *(client.post("/uploads/", headers={**TUS, "Upload-Length": "1000"}) for _ in range(40))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] * 5 + [429] * 35, statuses
    assert rows(data_dir, "SELECT count(*) FROM uploads") == [(5,)]
    assert len(list((data_dir / "uploads").glob("*.part"))) == 5
    # The 35 refused creations gave back the disk they reserved: only the 5 uploads hold any.
    assert client.app[DISK].reserved_bytes == 5 * (1000 + overhead(1000))


async def test_the_per_key_cap_holds_against_a_burst(make_client) -> None:
    client = await make_client(api_keys=("a", "b"), max_pending_uploads_per_key=3)
    headers = {**TUS, "Upload-Length": "1000", "Authorization": "Bearer a"}
    responses = await asyncio.gather(*(client.post("/uploads/", headers=headers) for _ in range(20)))
    assert sorted(r.status for r in responses) == [201] * 3 + [429] * 17
    other = await client.post("/uploads/", headers={**headers, "Authorization": "Bearer b"})
    assert other.status == 201  # another key's share is its own


@pytest.mark.parametrize(
    ("extra", "body_of", "status"),
    [
        ({}, lambda data: data + b"past the end", 413),
        ({"Upload-Checksum": "sha256 " + base64.b64encode(b"\0" * 32).decode()}, lambda d: d[:1000], 460),
        ({"Upload-Checksum": "crc32 AAAA"}, lambda data: data[:1000], 400),
    ],
)
async def test_a_creation_with_upload_refused_for_its_body_leaves_no_upload(
    client: Client, samples: Samples, data_dir: Path, extra: dict[str, str], body_of: Any, status: int
) -> None:
    """Nobody could end an upload whose creation answered an error without a Location (finding 6)."""
    data = samples.video().read_bytes()
    response = await client.post(
        "/uploads/", data=body_of(data), headers={**OCTETS, "Upload-Length": str(len(data)), **extra}
    )
    assert response.status == status, await response.text()
    assert "Location" not in response.headers
    assert rows(data_dir, "SELECT count(*) FROM uploads") == [(0,)]
    assert not list((data_dir / "uploads").glob("*"))


async def test_an_upload_that_gets_no_byte_expires_early_and_frees_its_place(
    make_client, data_dir: Path
) -> None:
    """Declaring lengths must not hold places (and disk) for a day: no first byte, no upload."""
    client = await make_client(max_pending_uploads=1, upload_first_byte_timeout_s=0.5)
    idle = await create(client, 1000)
    assert (await patch(client, idle, 0, b"")).status == 204  # an empty PATCH is no first byte
    assert (await client.post("/uploads/", headers={**TUS, "Upload-Length": "1000"})).status == 429
    response = await client.head(f"/uploads/{idle}", headers=TUS)
    expires = email.utils.parsedate_to_datetime(response.headers["Upload-Expires"]).timestamp()
    assert expires <= time.time() + 2  # not upload_expiry_s (a day) away
    await asyncio.sleep(0.6)
    active = await create(client, 1000)  # the idle one no longer counts
    assert (await patch(client, idle, 0, b"\0" * 10)).status in (404, 410)
    # Once a byte arrives, the whole upload_expiry_s applies.
    assert (await patch(client, active, 0, b"\0" * 10)).status == 204
    response = await client.head(f"/uploads/{active}", headers=TUS)
    expires = email.utils.parsedate_to_datetime(response.headers["Upload-Expires"]).timestamp()
    assert expires > time.time() + 3600


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Upload-Length", "9" * 5000),
        ("Upload-Length", "1_000"),
        ("Upload-Length", "\u0661\u0662"),  # Arabic-Indic digits: int() takes them
        ("Upload-Length", " 1000 0"),
    ],
)
async def test_numbers_in_tus_headers_are_ascii_digits_and_bounded(
    client: Client, data_dir: Path, header: str, value: str
) -> None:
    response = await client.post("/uploads/", headers={**TUS, header: value})
    assert response.status in (400, 413), response.status
    assert (
        header in (await response.json())["error"] or "max_upload_bytes" in (await response.json())["error"]
    )
    assert rows(data_dir, "SELECT count(*) FROM uploads") == [(0,)]


async def test_a_huge_upload_offset_is_a_400_not_a_500(client: Client) -> None:
    upload_id = await create(client, 1000)
    for value in ("9" * 5000, "1_0", "\u0661"):
        response = await patch(client, upload_id, 0, b"x", **{"Upload-Offset": value})
        assert response.status == 400, (value[:10], response.status)
        assert "Upload-Offset" in (await response.json())["error"]


async def test_concatenation_is_refused_and_overrides_mean_nothing_on_the_collection(
    client: Client, data_dir: Path
) -> None:
    response = await client.post(
        "/uploads/", headers={**TUS, "Upload-Length": "100", "Upload-Concat": "partial"}
    )
    assert response.status == 400 and "Upload-Concat" in (await response.json())["error"]
    response = await client.post(
        "/uploads/", headers={**TUS, "Upload-Length": "100", "X-HTTP-Method-Override": "DELETE"}
    )
    assert response.status == 405 and "X-HTTP-Method-Override" in (await response.json())["error"]
    assert rows(data_dir, "SELECT count(*) FROM uploads") == [(0,)]
