"""Who may reach the service from a browser (SPEC §12): the Host it answers to, and cross-site writes.

A web page can reach a service on loopback by DNS rebinding (its own name, resolved to
127.0.0.1) or by a plain cross-site form POST, which needs no CORS preflight. The Host
header and the browser's Origin / Sec-Fetch-Site headers tell those apart.
"""

from __future__ import annotations

import asyncio

import pytest

from .helpers import Client, Samples, rows
from .test_tus import TUS


async def _raw(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", ""])
async def test_a_host_this_service_is_not_is_refused(client: Client, host: str) -> None:
    """DNS rebinding: the page's own name, resolved to loopback, reaches the service."""
    status, answer = await _raw(
        client.port, f"GET /file/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    assert status == 400, answer
    assert b"allowed_hosts" in answer


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_the_loopback_names_are_answered_on_loopback(client: Client, host: str) -> None:
    status, _ = await _raw(
        client.port, f"GET /health HTTP/1.1\r\nHost: {host}:{client.port}\r\nConnection: close\r\n\r\n"
    )
    assert status == 200


async def test_allowed_hosts_and_public_url_are_what_links_use(make_client) -> None:
    client = await make_client(allowed_hosts=("videos.example",), public_url="https://videos.example/v")
    status, answer = await _raw(
        client.port,
        "POST /uploads/ HTTP/1.1\r\nHost: videos.example\r\nTus-Resumable: 1.0.0\r\n"
        "Upload-Length: 100\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert status == 201, answer
    assert b"\r\nLocation: https://videos.example/v/uploads/" in answer
    status, _ = await _raw(
        client.port, "GET /health HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n"
    )
    assert status == 400  # not named: not answered
    # The loopback names always are (health checks, curl on the machine): a page cannot send them.
    status, _ = await _raw(
        client.port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},  # a sandboxed frame or a file: page
        {"Sec-Fetch-Site": "same-site", "Origin": "http://other.localhost:9999"},
    ],
)
async def test_a_cross_site_write_from_a_browser_is_refused_without_keys(
    client: Client, samples: Samples, data_dir, headers: dict[str, str]
) -> None:
    """A form POST from any page needs no preflight: without keys, only the browser's headers tell."""
    response = await client.post(
        "/file/", data=samples.video().read_bytes(), headers={"Content-Type": "video/mp4", **headers}
    )
    assert response.status == 403, await response.text()
    assert "cors_origins" in (await response.json())["error"]
    response = await client.post("/uploads/", headers={**TUS, "Upload-Length": "100", **headers})
    assert response.status == 403
    assert rows(data_dir, "SELECT count(*) FROM videos") == [(0,)]
    assert rows(data_dir, "SELECT count(*) FROM uploads") == [(0,)]


async def test_same_origin_pages_command_line_clients_and_cors_origins_may_write(
    make_client, samples: Samples
) -> None:
    client = await make_client(cors_origins=("https://app.example",))
    same = {"Origin": f"http://127.0.0.1:{client.port}", "Sec-Fetch-Site": "same-origin"}
    for headers in ({}, same, {"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"}):
        response = await client.post("/uploads/", headers={**TUS, "Upload-Length": "100", **headers})
        assert response.status == 201, (headers, await response.text())
    # Reads stay open to any page: they need no protection from a forged request.
    response = await client.get("/file/", headers={"Origin": "https://evil.example"})
    assert response.status == 200


async def test_with_keys_the_key_is_the_guard(make_client) -> None:
    client = await make_client(api_keys=("k",))
    response = await client.post(
        "/uploads/",
        headers={
            **TUS,
            "Upload-Length": "100",
            "Origin": "https://elsewhere.example",
            "Authorization": "Bearer k",
        },
    )
    assert response.status == 201
