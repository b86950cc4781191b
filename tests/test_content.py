"""GET/HEAD /file/{id}/content: the bytes, ranges, validators, names, variants and signed links."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

import pytest

from videosvc.signing import LinkFamily, Signer

from .helpers import Client, Samples, get_video, upload, wait_for_job


async def _stored(client: Client, samples: Samples, name: str = "cat.mp4") -> tuple[str, bytes]:
    path = samples.video(320, 240)
    return await upload(client, path, filename=name), path.read_bytes()


async def test_the_whole_video_with_every_header_a_player_needs(client: Client, samples: Samples) -> None:
    video_id, data = await _stored(client, samples)
    response = await client.get(f"/file/{video_id}/content")
    assert response.status == 200
    assert await response.read() == data
    headers = response.headers
    assert headers["Content-Type"] == "video/mp4"
    assert int(headers["Content-Length"]) == len(data)
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', headers["ETag"])  # strong: no W/
    assert headers["Last-Modified"].endswith(" GMT")
    assert headers["Content-Disposition"] == "inline; filename=\"cat.mp4\"; filename*=UTF-8''cat.mp4"
    # GET /file/{id}/ says where it is.
    info = await get_video(client, video_id)
    assert info["contentUrl"] == f"/file/{video_id}/content"


async def test_head_has_the_same_headers_and_no_body(client: Client, samples: Samples) -> None:
    video_id, _ = await _stored(client, samples)
    get = await client.get(f"/file/{video_id}/content")
    head = await client.head(f"/file/{video_id}/content")
    assert head.status == 200 and await head.read() == b""
    for name in (
        "Content-Type",
        "Content-Length",
        "ETag",
        "Last-Modified",
        "Accept-Ranges",
        "Content-Disposition",
    ):
        assert head.headers[name] == get.headers[name], name


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-500", -500, None), ("bytes=10-10", 10, 10)],
)
async def test_one_range_is_a_206(
    client: Client, samples: Samples, header: str, first: int, last: int | None
) -> None:
    video_id, data = await _stored(client, samples)
    response = await client.get(f"/file/{video_id}/content", headers={"Range": header})
    assert response.status == 206
    start = first if first >= 0 else len(data) + first
    end = last if last is not None else len(data) - 1
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert int(response.headers["Content-Length"]) == end - start + 1
    assert await response.read() == data[start : end + 1]


async def test_a_range_past_the_end_is_a_416_with_the_size(client: Client, samples: Samples) -> None:
    video_id, data = await _stored(client, samples)
    for header in (f"bytes={len(data)}-", f"bytes={len(data) + 5}-{len(data) + 10}", "bytes=-0"):
        response = await client.get(f"/file/{video_id}/content", headers={"Range": header})
        assert response.status == 416, header
        assert response.headers["Content-Range"] == f"bytes */{len(data)}"
        assert "error" in await response.json()


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=10-5", "items=0-1", "bytes=abc"])
async def test_several_or_unreadable_ranges_get_the_whole_file(
    client: Client, samples: Samples, header: str
) -> None:
    video_id, data = await _stored(client, samples)
    response = await client.get(f"/file/{video_id}/content", headers={"Range": header})
    assert response.status == 200 and await response.read() == data


async def test_validators_give_304_and_if_range_is_honoured(client: Client, samples: Samples) -> None:
    video_id, data = await _stored(client, samples)
    url = f"/file/{video_id}/content"
    first = await client.get(url)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for inm in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        not_modified = await client.get(url, headers={"If-None-Match": inm})
        assert not_modified.status == 304, inm
        assert await not_modified.read() == b"" and not_modified.headers["ETag"] == etag
    assert (await client.get(url, headers={"If-None-Match": '"stale"'})).status == 200
    assert (await client.get(url, headers={"If-Modified-Since": modified})).status == 304
    # If-Range: the range only for the very same version.
    ranged = {"Range": "bytes=0-9"}
    assert (await client.get(url, headers={**ranged, "If-Range": etag})).status == 206
    assert (await client.get(url, headers={**ranged, "If-Range": modified})).status == 206
    stale = await client.get(url, headers={**ranged, "If-Range": '"stale"'})
    assert stale.status == 200 and await stale.read() == data
    weak = await client.get(url, headers={**ranged, "If-Range": f"W/{etag}"})
    assert weak.status == 200
    old_date = formatdate(time.time() - 86400, usegmt=True)
    assert (await client.get(url, headers={**ranged, "If-Range": old_date})).status == 200


async def test_a_new_rendition_has_a_new_etag_and_old_validators_get_it_whole(
    client: Client, samples: Samples
) -> None:
    video_id, _ = await _stored(client, samples)
    url = f"/file/{video_id}/content"
    before = await client.get(url)
    etag = before.headers["ETag"]
    await client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True
    after = await client.get(url, headers={"If-None-Match": etag})
    assert after.status == 200 and after.headers["ETag"] != etag
    assert await after.read() != await before.read()
    stale_range = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert stale_range.status == 200


async def test_the_name_is_given_for_any_script_and_download_makes_it_an_attachment(
    client: Client, samples: Samples
) -> None:
    name = "кот и «мышь».mp4"
    response = await client.post(
        "/file/",
        data=samples.video().read_bytes(),
        headers={
            "Content-Type": "video/mp4",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
        },
    )
    video_id = (await response.json())["id"]
    response = await client.get(f"/file/{video_id}/content", params={"download": "1"})
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="')
    ascii_part = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert ascii_part.isascii() and ascii_part.endswith(".mp4")
    assert disposition.endswith("filename*=UTF-8''" + quote("кот и «мышь».mp4", safe=""))


async def test_variant_original_serves_the_upload_as_it_came(client: Client, samples: Samples) -> None:
    video_id, data = await _stored(client, samples)
    await client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})
    await wait_for_job(client, video_id)
    current = await (await client.get(f"/file/{video_id}/content")).read()
    original = await (await client.get(f"/file/{video_id}/content", params={"variant": "original"})).read()
    assert original == data and current != data
    bad = await client.get(f"/file/{video_id}/content", params={"variant": "thumbnail"})
    assert bad.status == 400 and "variant" in (await bad.json())["error"]


async def test_a_download_in_flight_when_a_resize_lands_gets_the_old_version_whole(
    make_client, samples: Samples, data_dir: Path
) -> None:
    """Without originals the resize replaces the only file; the download holds the old one open."""
    client = await make_client(keep_original="false")
    source = samples.noisy(10)  # ~57 MB: far more than the socket buffers hold
    data = source.read_bytes()
    video_id = await upload(client, source)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        f"GET /file/{video_id}/content HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"200 OK" in head
    received = await reader.readexactly(1_000_000)  # then stop reading: the server blocks in sendfile

    await client.patch(f"/file/{video_id}/", json={"width": 64, "height": 36})
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True
    assert (data_dir / "videos" / f"{video_id}.mp4").stat().st_size < len(data) // 10  # replaced on disk

    received += await reader.read()  # the rest, to the end
    writer.close()
    assert received == data  # the old version, whole
    new = await client.get(f"/file/{video_id}/content")
    assert await new.read() == (data_dir / "videos" / f"{video_id}.mp4").read_bytes()


async def test_a_signed_content_url_works_without_the_key_and_nowhere_else(
    make_client, samples: Samples
) -> None:
    client = await make_client(api_keys=("k",), url_signing_key="sign-me")
    key = {"Authorization": "Bearer k"}
    with samples.video().open("rb") as f:
        video_id = (
            await (await client.post("/file/", data=f, headers={**key, "Content-Type": "video/mp4"})).json()
        )["id"]
    other_id = (
        await (
            await client.post(
                "/file/", data=samples.video().read_bytes(), headers={**key, "Content-Type": "video/mp4"}
            )
        ).json()
    )["id"]
    info = await get_video(client, video_id, **key)
    url = info["contentUrl"]
    assert url.startswith(f"/file/{video_id}/content?expires=") and "&signature=" in url
    # A browser's <video src>: no Authorization header.
    response = await client.get(url)
    assert response.status == 200 and await response.read() == samples.video().read_bytes()
    ranged = await client.get(url, headers={"Range": "bytes=0-9"})
    assert ranged.status == 206
    # Altered, for another video, expired, or without any credential.
    tampered = re.sub(r"signature=(.)", lambda m: "signature=" + ("A" if m[1] != "A" else "B"), url)
    for bad in (tampered, url.replace(video_id, other_id)):
        refused = await client.get(bad)
        assert refused.status == 403 and "not valid" in (await refused.json())["error"]
    expires, signature = Signer("sign-me").sign(LinkFamily.CONTENT, video_id, ttl_s=-10, variant="current")
    expired = await client.get(f"/file/{video_id}/content?expires={expires}&signature={signature}")
    assert expired.status == 403 and "expired" in (await expired.json())["error"]
    assert (await client.get(f"/file/{video_id}/content")).status == 401
    # The signature opens this route only.
    query = url.split("?", 1)[1]
    assert (await client.get(f"/file/{video_id}/?{query}")).status == 401
    assert (await client.delete(f"/file/{video_id}/?{query}")).status == 401


async def test_unknown_or_deleted_videos_are_404(client: Client, samples: Samples) -> None:
    video_id, _ = await _stored(client, samples)
    await client.delete(f"/file/{video_id}/")
    for url in (
        f"/file/{video_id}/content",
        "/file/00000000-0000-4000-8000-000000000000/content",
        "/file/x/content",
    ):
        response = await client.get(url)
        assert response.status == 404 and "error" in await response.json()


@pytest.mark.parametrize(
    ("range_header", "status"),
    [
        ("bytes=" + "9" * 5000 + "-", 416),  # past any end
        ("bytes=0-" + "9" * 5000, 206),  # to the end
        ("bytes=-" + "9" * 5000, 206),  # the whole file, as a suffix
        ("bytes=\u0661-\u0662", 200),  # other scripts' digits: not a range
        ("bytes=1_0-20", 200),
    ],
)
async def test_numbers_in_a_range_are_ascii_digits_and_bounded(
    client: Client, samples: Samples, range_header: str, status: int
) -> None:
    video_id, _ = await _stored(client, samples)
    response = await client.get(f"/file/{video_id}/content", headers={"Range": range_header})
    assert response.status == status, (range_header[:20], response.status)


async def test_a_client_that_stops_reading_a_download_is_cut_off(make_client, samples: Samples) -> None:
    """A slow reader of /content would hold its connection (and a file) forever: send_timeout_s."""
    client = await make_client(send_timeout_s=1)
    video_id = await upload(client, samples.noisy(2))  # ~11 MB: far more than the socket buffers hold
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port, limit=1024)
    writer.write(f"GET /file/{video_id}/content HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(3)  # reads nothing for three times send_timeout_s
    received = 0
    with contextlib.suppress(ConnectionResetError):  # the server aborted the connection
        async with asyncio.timeout(10):
            while chunk := await reader.read(1 << 20):
                received += len(chunk)
    writer.close()
    assert received < samples.noisy(2).stat().st_size, "the server waited for the stalled reader"
