"""Hostile connections: slow and fat heads, idle keep-alives, connection floods, what the parser rejects.

The attacks of the hardening review on connections and request heads, reproduced against
the real server (docs/limits.md). Every test here is bounded: the limits are set low so that
an attack that once took minutes (or the host's memory) is refused in well under a second.
How fast the event loop stays during these attacks is measured by `python -m bench.hostile`,
not asserted here.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from .helpers import Client, Samples, exchange, json_body, leftovers, status_of, upload
from .server import ServerProcess


async def test_slowloris_connections_get_408_at_the_header_deadline(make_client) -> None:
    client = await make_client(header_timeout_s=0.5)
    streams = [await asyncio.open_connection("127.0.0.1", client.port) for _ in range(50)]
    for _, writer in streams:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 10) for r, _ in streams))
    for (_, writer), answer in zip(streams, answers, strict=True):
        writer.close()  # read() returned: the server closed the connection after its answer
        assert status_of(answer) == 408
        assert "header_timeout_s" in json_body(answer)["error"]


async def test_each_head_on_a_kept_alive_connection_has_a_deadline_of_its_own(make_client) -> None:
    client = await make_client(header_timeout_s=2.0, keepalive_timeout_s=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    await asyncio.sleep(1.5)
    # A second head, sent slowly: past the first head's deadline (2.0 s), 1 s inside its own.
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await asyncio.sleep(1.0)
    writer.write(b"\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert status_of(head) == 200
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    # A third that never ends is cut at its own deadline.
    writer.write(b"GET /health HTTP/1.1\r\nX-Slow: ")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert status_of(answer) == 408


async def test_idle_keep_alive_connections_are_closed(make_client) -> None:
    client = await make_client(keepalive_timeout_s=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert status_of(head) == 200
    # The body, then nothing more is sent: the server closes the connection.
    rest = await asyncio.wait_for(reader.read(), 10)
    assert rest.startswith(b"{") and reader.at_eof()
    writer.close()


async def test_a_connection_that_never_sends_a_byte_is_closed_silently(make_client) -> None:
    client = await make_client(header_timeout_s=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_headers_over_max_header_bytes_get_431(make_client) -> None:
    client = await make_client(max_header_bytes=16_384)
    fat = "".join(f"X-Pad-{i}: {'a' * 4000}\r\n" for i in range(5))  # each header within aiohttp's own limits
    answer = await exchange(client.port, f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{fat}\r\n".encode())
    assert status_of(answer) == 431
    assert "max_header_bytes" in json_body(answer)["error"]
    # A head that never ends is cut at the cap too, not buffered.
    endless = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"b" * 8000 + b"\r\n"
    answer = await exchange(client.port, endless * 3)
    assert status_of(answer) == 431
    # Below the cap, the same request is served.
    answer = await exchange(
        client.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert status_of(answer) == 200


async def test_connections_past_max_connections_are_refused_at_once(make_client, caplog) -> None:
    client = await make_client(max_connections=10)
    held = [await asyncio.open_connection("127.0.0.1", client.port) for _ in range(10)]
    await asyncio.sleep(0.1)
    refused = await asyncio.gather(*(exchange(client.port, b"GET /health HTTP/1.1\r\n") for _ in range(40)))
    for answer in refused:
        assert status_of(answer) == 503
        assert "max_connections" in json_body(answer)["error"]
    lines = [r for r in caplog.records if "refused a connection" in r.getMessage()]
    assert 1 <= len(lines) <= 2, "refusals are logged at most once a second"
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.1)
    assert (await client.get("/health")).status == 200


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_at_the_open_file_limit_connections_are_refused_cleanly_and_uploads_still_work(
    data_dir: Path, samples: Samples
) -> None:
    server = ServerProcess(data_dir, max_connections=1000, header_timeout_s=30)
    # A low open-file limit for the server alone: 300 files, so max_connections is lowered to 86.
    server.prefix = ["prlimit", "--nofile=300:300", "--"]
    with server:
        assert "max_connections lowered from 1000 to 86" in server.log()
        held = []
        for _ in range(200):
            held.append(await asyncio.open_connection("127.0.0.1", server.port))
        await asyncio.sleep(0.3)
        assert (
            status_of(await exchange(server.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")) == 503
        )
        for _, writer in held[:20]:
            writer.close()
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession(server.url) as session:
            video_id = await upload(session, samples.video())  # type: ignore[arg-type]
            assert (await session.get(f"/file/{video_id}")).status == 200
        for _, writer in held[20:]:
            writer.close()
    log = server.log()
    assert "Traceback" not in log and "Too many open files" not in log
    assert log.count("refused a connection") <= 5


async def test_four_hundred_fat_header_connections_cost_little_memory(data_dir: Path) -> None:
    # One address, as several clients behind one proxy would be: the per-client cap raised to match.
    with ServerProcess(data_dir, header_timeout_s=60, max_connections_per_client=1000) as server:
        assert server.process is not None
        before = _rss_kb(server.process.pid)
        streams = []
        for _ in range(400):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            # Just under max_header_bytes, never finished: each is held until its deadline.
            writer.write(
                b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"c" * 8000 + b"\r\n" * 1
            )
            writer.write(b"".join(b"X-Pad%d: %s\r\n" % (i, b"d" * 7000) for i in range(3)))
            streams.append((reader, writer))
        await asyncio.gather(*(w.drain() for _, w in streams))
        await asyncio.sleep(1.0)
        grown_mb = (_rss_kb(server.process.pid) - before) / 1024
        for _, writer in streams:
            writer.close()
        assert grown_mb < 100, f"{grown_mb:.0f} MB for 400 connections"
        # Heads far over the cap (450 KB each) are cut at it, not buffered.
        before = _rss_kb(server.process.pid)
        fat = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
            b"X-P%d: %s\r\n" % (i, b"e" * 7000) for i in range(64)
        )
        streams = []
        for _ in range(400):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(fat)
            streams.append((reader, writer))
        await asyncio.sleep(1.0)
        grown_mb = (_rss_kb(server.process.pid) - before) / 1024
        for _, writer in streams:
            writer.close()
        assert grown_mb < 100, f"{grown_mb:.0f} MB for 400 over-cap connections"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
        + b"\r\n",
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
    ],
    ids=["nul-in-header", "long-line", "many-headers", "bad-content-length"],
)
async def test_a_request_the_parser_rejects_is_a_json_400_and_one_warning(
    client: Client, caplog, head: bytes
) -> None:
    caplog.clear()
    answer = await exchange(client.port, head)
    assert status_of(answer) == 400
    assert "malformed" in json_body(answer)["error"]
    assert b"server: videosvc\r\n" in answer.lower()
    records = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelname == "WARNING" and records[0].exc_info is None


async def test_expect_continue_with_an_oversized_length_is_413_at_once(make_client, data_dir: Path) -> None:
    client = await make_client(max_upload_bytes=1000)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # no body was sent: no 100 first
    writer.close()
    assert status_of(head) == 413
    assert leftovers(data_dir) == []


async def test_expect_continue_without_a_key_is_401_at_once(make_client) -> None:
    client = await make_client(api_keys=("k",))
    answer = await exchange(
        client.port,
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5000\r\n\r\n",
    )
    assert status_of(answer) == 401


async def test_head_health_is_answered(client: Client) -> None:
    response = await client.head("/health")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
