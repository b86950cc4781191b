"""Hostile request bodies: form floods, 1-byte chunks, gzip bombs, stalls, huge numbers, vanishing clients.

The attacks of the hardening review on what follows a request's head, reproduced against
the real server (docs/limits.md). Every test here is bounded: the limits are set low so that
an attack that once took minutes (or the host's memory) is refused in well under a second.
How fast the event loop stays during these attacks is measured by `python -m bench.hostile`,
not asserted here.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from pathlib import Path

import pytest

from .helpers import (
    Client,
    Samples,
    exchange,
    json_body,
    leftovers,
    read_response,
    status_of,
    stored_ids,
    upload,
)


def multipart(
    parts: list[tuple[str, bytes, str | None]], boundary: str = "b0undary", close: bool = True
) -> bytes:
    """A multipart/form-data body from (name, content, filename) parts."""
    out = b""
    for name, content, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def post(path: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


# -- multipart bodies and the event loop


async def test_a_body_of_twenty_thousand_form_fields_is_refused_at_the_part_cap(
    client: Client, data_dir: Path
) -> None:
    body = multipart([(f"f{i}", b"x", None) for i in range(20_000)])
    assert len(body) > 1_000_000
    answer = await exchange(client.port, post("/file/", body, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 400
    assert "max_form_parts" in json_body(answer)["error"]
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []


async def test_form_bytes_beyond_the_file_are_capped_preamble_included(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(max_form_bytes=4096)
    video = samples.video().read_bytes()
    # A megabyte of empty lines before the first boundary, parsed line by line.
    preamble = b"\r\n" * 500_000 + multipart([("file", video, "a.mp4")])
    big_field = multipart([("note", b"n" * 10_000, None), ("file", video, "a.mp4")])
    after_file = multipart([("file", video, "a.mp4"), ("note", b"n" * 10_000, None)])
    for body in (preamble, big_field, after_file):
        answer = await exchange(client.port, post("/file/", body, "multipart/form-data; boundary=b0undary"))
        assert status_of(answer) == 400, answer[:300]
        assert "max_form_bytes" in json_body(answer)["error"]
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []
    # Fields within the budget, before and after the file, are fine.
    ok = multipart([("note", b"hello", None), ("file", video, "a.mp4"), ("tag", b"x", None)])
    answer = await exchange(client.port, post("/file/", ok, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 200, answer


async def test_a_multipart_body_without_its_closing_boundary_is_refused(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    body = multipart([("file", samples.video().read_bytes(), "a.mp4")], close=False)
    answer = await exchange(client.port, post("/file/", body, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 400
    assert "malformed" in json_body(answer)["error"]
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []


async def test_a_charset_field_aiohttp_cannot_take_is_a_400(client: Client, samples: Samples) -> None:
    body = multipart([("_charset_", b"x" * 40, None), ("file", samples.video().read_bytes(), "a.mp4")])
    answer = await exchange(client.port, post("/file/", body, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 400 and "malformed" in json_body(answer)["error"]


async def test_a_second_file_part_or_a_nested_multipart_is_refused(client: Client, samples: Samples) -> None:
    video = samples.video().read_bytes()
    two = multipart([("file", video, "a.mp4"), ("other", video, "b.mp4")])
    answer = await exchange(client.port, post("/file/", two, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 400 and "more than one file" in json_body(answer)["error"]
    nested = (
        b"--outer\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n"
        + multipart([("file", video, "a.mp4")], boundary="inner")
        + b"\r\n--outer--\r\n"
    )
    answer = await exchange(client.port, post("/file/", nested, "multipart/form-data; boundary=outer"))
    assert status_of(answer) == 400 and "nested" in json_body(answer)["error"]


async def test_a_body_in_tiny_chunks_is_refused(client: Client, samples: Samples, data_dir: Path) -> None:
    """1-byte chunks make every byte a parser callback: the attack that held the loop longest."""
    data = samples.video().read_bytes()
    body = b"".join(b"1\r\n" + data[i : i + 1] + b"\r\n" for i in range(len(data))) + b"0\r\n\r\n"
    head = (
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = await exchange(client.port, head + body)
    assert status_of(answer) == 400
    assert "chunks smaller than" in json_body(answer)["error"]
    await asyncio.sleep(0.2)
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []


# -- content codings


async def test_content_coded_bodies_are_refused_not_decompressed(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    bomb = gzip.compress(b"\0" * 20_000_000)  # 20 MB behind 20 KB
    response = await client.post(
        "/file/", data=bomb, headers={"Content-Type": "video/mp4", "Content-Encoding": "gzip"}
    )
    assert response.status == 415
    assert "gzip" in (await response.json())["error"]
    video_id = await upload(client, samples.video())
    response = await client.patch(
        f"/file/{video_id}/",
        data=gzip.compress(b'{"width": 64, "height": 48}'),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 415
    part = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
        b"Content-Encoding: gzip\r\n\r\n" + bomb + b"\r\n--b0undary--\r\n"
    )
    answer = await exchange(client.port, post("/file/", part, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 415 and "gzip" in json_body(answer)["error"]
    assert stored_ids(data_dir) == [video_id] and leftovers(data_dir) == []


# -- stalls


async def _stalled(port: int, head_and_some: bytes) -> bytes:
    """Send the start of a request, then nothing: what does the server answer?"""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head_and_some)
    try:
        return await read_response(reader)
    finally:
        writer.close()


async def test_every_stalled_body_gets_408(make_client, samples: Samples, data_dir: Path) -> None:
    # The idle timeout is long: the form fields' own deadline (body_timeout_s) must cut them off.
    client = await make_client(body_timeout_s=0.5, upload_idle_timeout_s=30, header_timeout_s=0.5)
    video_id = await upload(client, samples.video())
    inside_a_field = (
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        b'Content-Length: 100000\r\n\r\n--b0undary\r\nContent-Disposition: form-data; name="note"\r\n\r\nsome'
    )
    answer = await _stalled(client.port, inside_a_field)
    assert status_of(answer) == 408 and "body_timeout_s" in json_body(answer)["error"]
    patch_head = f"PATCH /file/{video_id}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40\r\n\r\n".encode()
    answer = await _stalled(client.port, patch_head + b'{"width": 6')
    assert status_of(answer) == 408 and "body_timeout_s" in json_body(answer)["error"]
    answer = await _stalled(client.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert status_of(answer) == 408
    assert leftovers(data_dir) == []


# -- no 500s, and quiet logs


async def test_a_five_thousand_digit_integer_is_a_400(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video())
    response = await client.patch(f"/file/{video_id}/", data=b'{"width": ' + b"9" * 5000 + b', "height": 64}')
    assert response.status == 400
    assert "JSON" in (await response.json())["error"]


@pytest.mark.parametrize("form", ["raw", "multipart"])
async def test_a_client_that_goes_away_mid_upload_is_one_log_line_and_no_500(
    make_client, samples: Samples, data_dir: Path, caplog, form: str
) -> None:
    caplog.set_level(logging.INFO)
    client = await make_client()
    video = samples.video().read_bytes()
    if form == "raw":
        request = post("/file/", video, "video/mp4")
    else:
        request = post(
            "/file/", multipart([("file", video, "a.mp4")]), "multipart/form-data; boundary=b0undary"
        )
    _, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(request[: len(request) // 2])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()  # a reset, as when a phone loses its network
    await asyncio.sleep(0.5)
    messages = [(r.levelname, r.name, r.getMessage()) for r in caplog.records]
    assert [m for m in messages if "went away" in m[2]], messages
    assert not [m for m in messages if m[0] == "ERROR" or "Traceback" in m[2]], messages
    access = [m[2] for m in messages if m[1] == "videosvc.access"]
    assert access and all(" 500 " not in line for line in access), access
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []
