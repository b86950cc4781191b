"""Resumable uploads (tus 1.0.0) at /uploads/: a real client (tuspy), and the protocol's every status.

Where the tus text leaves a choice, tusd's behaviour was followed (its handler
tests: pkg/handler/*_test.go), except where noted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage

from videosvc.web.keys import SETTINGS as SETTINGS_KEY

from .helpers import Client, Samples, leftovers, rows, stored_ids
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
        f"PATCH /uploads/{upload_id} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
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
    info = await (await client.get(f"/file/{video_id}/")).json()  # at once: the last PATCH waited for it
    assert (info["filename"], info["width"], info["size"]) == ("кот.mp4", 320, source.stat().st_size)
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == source.read_bytes()
    # The finished upload still answers: a client that lost the last response learns it is complete.
    assert await offset_of(client, video_id) == source.stat().st_size
    assert leftovers(data_dir) == [] and not list((data_dir / "uploads").glob("*"))


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


async def test_hostile_filenames_in_metadata_are_cleaned(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    data = samples.video().read_bytes()
    upload_id = await create(
        client, len(data), "filename " + base64.b64encode("../\x00e\u202evil\x85.mp4".encode()).decode()
    )
    assert rows(data_dir, f"SELECT filename FROM uploads WHERE id = '{upload_id}'") == [("_e_vil_.mp4",)]
    assert (await patch(client, upload_id, 0, data)).status == 204
    info = await (await client.get(f"/file/{upload_id}/")).json()
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
        for _ in range(200):  # the first bytes are on disk before the overflow is sent
            if await offset_of(client, upload_id) == 50_000:
                break
            await asyncio.sleep(0.01)
        assert await offset_of(client, upload_id) == 50_000
        yield data[50_000:] + b"\0" * 20_000

    response = await client.patch(
        f"/uploads/{upload_id}", data=too_much(), headers={**OCTETS, "Upload-Offset": "0"}
    )
    assert response.status == 413
    assert await offset_of(client, upload_id) == 0


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
    for _ in range(40):
        if not list((data_dir / "uploads").glob("*")):
            break
        await asyncio.sleep(0.05)
    assert not list((data_dir / "uploads").glob("*"))
    assert rows(data_dir, "SELECT count(*) FROM uploads") == [(0,)]


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
    for _ in range(100):
        if await offset_of(client, upload_id) == 100_000:
            break
        await asyncio.sleep(0.02)
    assert await offset_of(client, upload_id) == 100_000  # each byte that arrived is on disk
    # Client B (the same user, new network) resumes at once: no 423, no wait for A's timeout.
    started = time.monotonic()
    response = await patch(client, upload_id, 100_000, data[100_000:])
    assert response.status == 204, await response.text()
    assert time.monotonic() - started < 30  # far below upload_idle_timeout_s (60 s)
    assert await reader.read() == b""  # A's connection was ended
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
    with ServerProcess(data_dir, upload_expiry_s=3) as server:
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
    with ServerProcess(data_dir, upload_expiry_s=3) as server:
        assert [await asyncio.to_thread(_head, server, upload_id) for upload_id in ids] == [1000, 1000]
        async with aiohttp.ClientSession(server.url) as session:
            response = await session.patch(
                f"/uploads/{ids[0]}", data=data[1000:], headers={**OCTETS, "Upload-Offset": "1000"}
            )
            assert response.status == 204
        server.stop(signal.SIGTERM)
    await asyncio.sleep(3.2)  # ids[1] expires while the service is down
    with ServerProcess(data_dir, upload_expiry_s=3) as server:
        assert "upload expired; removed" in server.log()
    assert sorted(p.name for p in (data_dir / "uploads").glob("*")) == []
    assert stored_ids(data_dir) == [ids[0]]
