"""POST /file/: every row of the upload table, and nothing left behind on refusal."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import FormData

from .helpers import Client, Samples, chunked, get_video, leftovers, probe_stored, rows, stored_ids, upload


async def test_multipart_upload_is_stored_and_described(
    client: Client, samples: Samples, data_dir: Path, tools
) -> None:
    source = samples.video(320, 240)
    video_id = await upload(client, source, filename="cat.mp4")

    body = await get_video(client, video_id)
    assert body["id"] == video_id
    assert body["filename"] == "cat.mp4"
    assert body["processing"] is False
    assert body["processingSuccess"] is None
    assert (body["width"], body["height"]) == (320, 240)
    assert body["size"] == source.stat().st_size
    # Stored by id, byte for byte.
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == source.read_bytes()
    assert probe_stored(data_dir, video_id, tools).width == 320
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("form", [False, True], ids=["raw-chunked", "multipart"])
async def test_a_file_of_many_write_blocks_is_stored_byte_for_byte(
    client: Client, samples: Samples, data_dir: Path, form: bool
) -> None:
    source = samples.noisy(2)  # ~11 MB: several 4 MiB write blocks, each of many received pieces
    data = source.read_bytes()
    if form:
        body = FormData()
        body.add_field("file", io.BytesIO(data), filename="noise.mp4", content_type="video/mp4")
        response = await client.post("/file/", data=body)
    else:
        headers = {"Content-Type": "video/mp4"}
        response = await client.post("/file/", data=chunked(data, 65536), headers=headers)
    assert response.status == 200, await response.text()
    video_id = (await response.json())["id"]
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == data


async def test_any_single_file_part_is_accepted(client: Client, samples: Samples) -> None:
    form = FormData()
    form.add_field("comment", "not a file")
    form.add_field("video", samples.video().read_bytes(), filename="clip.mp4", content_type="video/mp4")
    response = await client.post("/file", data=form)
    assert response.status == 200, await response.text()
    video_id = (await response.json())["id"]
    assert (await (await client.get(f"/file/{video_id}")).json())["filename"] == "clip.mp4"


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"Content-Disposition": 'attachment; filename="dog.mp4"'}, "", "dog.mp4"),
        ({"Content-Disposition": "attachment; filename*=UTF-8''%D0%BA%D0%BE%D1%82.mp4"}, "", "кот.mp4"),
        ({}, "?filename=" + quote("holiday video.mp4"), "holiday video.mp4"),
        ({}, "", None),
    ],
)
async def test_raw_upload_takes_its_filename_from_headers_or_query(
    client: Client, samples: Samples, headers: dict[str, str], query: str, expected: str | None
) -> None:
    response = await client.post(
        "/file/" + query, data=samples.video().read_bytes(), headers={"Content-Type": "video/mp4", **headers}
    )
    assert response.status == 200, await response.text()
    video_id = (await response.json())["id"]
    body = await get_video(client, video_id)
    assert body["filename"] == (expected or f"{video_id}.mp4")


async def test_raw_upload_streams_a_chunked_body(client: Client, samples: Samples) -> None:
    data = samples.video().read_bytes()

    response = await client.post(
        "/file/", data=chunked(data, 7000), headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status == 200, await response.text()


async def test_quicktime_mov_counts_as_mp4_family(client: Client, samples: Samples) -> None:
    mov = samples.make(
        "clip.mov",
        ["-f", "lavfi", "-i", "testsrc2=size=160x120:duration=0.5", "-c:v", "libx264", "-f", "mov"],
    )
    response = await client.post("/file/", data=mov.read_bytes(), headers={"Content-Type": "video/quicktime"})
    assert response.status == 200, await response.text()


async def test_hostile_filename_is_kept_only_as_a_clean_display_name(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    # CR/LF cannot travel raw in a header; RFC 5987 encoding carries them.
    hostile = quote('../../etc/pa"ss\r\nwd.mp4', safe="")
    response = await client.post(
        "/file/",
        data=samples.video().read_bytes(),
        headers={
            "Content-Type": "video/mp4",
            "Content-Disposition": f"attachment; filename*=UTF-8''{hostile}",
        },
    )
    assert response.status == 200, await response.text()
    video_id = (await response.json())["id"]
    body = await get_video(client, video_id)
    assert body["filename"] == "pa_ss__wd.mp4"
    assert stored_ids(data_dir) == [video_id]


async def test_display_names_lose_c1_and_bidi_controls(client: Client, samples: Samples) -> None:
    name = "evil\x85\u202egnp.mp4\u200b"
    response = await client.post(
        "/file/",
        params={"filename": name},
        data=samples.video().read_bytes(),
        headers={"Content-Type": "video/mp4"},
    )
    video_id = (await response.json())["id"]
    shown = (await get_video(client, video_id))["filename"]
    assert shown == "evil__gnp.mp4_"


def _assert_nothing_stored(data_dir: Path) -> None:
    assert stored_ids(data_dir) == []
    assert leftovers(data_dir) == []
    assert rows(data_dir, "SELECT id FROM videos") == []


async def _error(response) -> str:  # type: ignore[no-untyped-def]
    assert response.content_type == "application/json"
    body = await response.json()
    assert list(body) == ["error"]
    return str(body["error"])


async def test_no_body_is_400(client: Client, data_dir: Path) -> None:
    response = await client.post("/file/")
    assert response.status == 400
    assert "no body" in await _error(response)
    _assert_nothing_stored(data_dir)


async def test_empty_file_is_400(client: Client, data_dir: Path) -> None:
    form = FormData()
    form.add_field("file", b"", filename="empty.mp4", content_type="video/mp4")
    response = await client.post("/file/", data=form)
    assert response.status == 400
    assert "empty" in await _error(response)
    _assert_nothing_stored(data_dir)


async def test_multipart_without_a_file_part_is_400(client: Client, data_dir: Path) -> None:
    form = FormData(default_to_multipart=True)
    form.add_field("comment", "hello")
    form.add_field("other", "world")
    response = await client.post("/file/", data=form())
    assert response.status == 400
    assert "file" in await _error(response)
    _assert_nothing_stored(data_dir)


async def test_declared_size_over_the_limit_is_413_before_reading(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(max_upload_bytes=1000)
    data = samples.video().read_bytes()
    response = await client.post("/file/", data=data, headers={"Content-Type": "video/mp4"})
    assert response.status == 413
    assert "1000 bytes" in await _error(response)
    _assert_nothing_stored(data_dir)


async def test_chunked_body_over_the_limit_is_413_while_reading(
    make_client, samples: Samples, data_dir: Path
) -> None:
    limit = 20_000
    client = await make_client(max_upload_bytes=limit)
    data = samples.video(duration_s=2).read_bytes()
    assert len(data) > limit

    response = await client.post("/file/", data=chunked(data, 4096), headers={"Content-Type": "video/mp4"})
    assert response.status == 413
    assert str(limit) in await _error(response)
    _assert_nothing_stored(data_dir)


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("random bytes", "not a known media format"),
        ("audio only", "no video stream"),
        ("truncated", "truncated"),
        ("matroska", "looks like WebM/Matroska"),
        ("text", "looks like text"),
        ("long text", "looks like text"),
    ],
)
async def test_not_an_mp4_with_video_is_415_saying_what_it_looks_like(
    client: Client, samples: Samples, data_dir: Path, kind: str, said: str
) -> None:
    data = {
        "random bytes": lambda: bytes(range(256)) * 64,
        "audio only": lambda: samples.audio_only().read_bytes(),
        "truncated": lambda: samples.truncated().read_bytes(),
        "matroska": lambda: samples.matroska().read_bytes(),
        "text": lambda: b"just some text",
        "long text": lambda: b"<html><body>not a video</body></html>\n" * 100,
    }[kind]()
    form = FormData()
    form.add_field("file", data, filename="x.mp4", content_type="video/mp4")
    response = await client.post("/file/", data=form)
    assert response.status == 415, await response.text()
    message = await _error(response)
    assert "MP4" in message and said in message, message
    _assert_nothing_stored(data_dir)


async def test_a_file_that_is_not_an_mp4_is_refused_before_it_is_all_sent(client: Client) -> None:
    """Its first KiB tells: a client sending 10 MB of something else learns it after 4 KB."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
        + f"Content-Length: {10 * 1024**2}\r\n\r\n".encode()
        + b"<!DOCTYPE html><html>"
        + b"x" * 4096
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)  # upload_idle_timeout_s is 60
    writer.close()
    assert status_line.split()[1] == b"415", status_line


async def test_a_file_shorter_than_an_mp4_header_is_415_saying_so(client: Client, data_dir: Path) -> None:
    response = await client.post("/file/", data=b"\0\0\0\x18ft", headers={"Content-Type": "video/mp4"})
    assert response.status == 415
    assert "too short" in await _error(response)
    _assert_nothing_stored(data_dir)


async def test_truncated_faststart_mp4_is_415(client: Client, samples: Samples, data_dir: Path) -> None:
    """With the index first, a cut file still probes fine: only its media box runs short."""
    source = samples.video(320, 240, duration_s=2)
    faststart = samples.make(
        "faststart.mp4", ["-i", str(source), "-c", "copy", "-movflags", "+faststart", "-f", "mp4"]
    )
    data = faststart.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    response = await client.post("/file/", data=data[: len(data) // 2], headers={"Content-Type": "video/mp4"})
    assert response.status == 415
    assert "truncated" in await _error(response)
    assert str(data_dir) not in await response.text()  # our paths stay ours
    _assert_nothing_stored(data_dir)


async def test_not_enough_disk_is_507(make_client, samples: Samples, data_dir: Path) -> None:
    # Ask for more free space than any disk has: the real check, refusing for real.
    client = await make_client(min_free_bytes=2**62)
    response = await client.post(
        "/file/", data=samples.video().read_bytes(), headers={"Content-Type": "video/mp4"}
    )
    assert response.status == 507
    assert "disk" in await _error(response)
    _assert_nothing_stored(data_dir)
