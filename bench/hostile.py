"""How the service holds up under hostile clients: /health latency and memory during each attack.

    python -m bench.hostile            # about a minute
    python -m bench.hostile --quick    # a smoke run

The real service runs as a subprocess with its default settings (config.toml);
each attack runs for a few seconds from this process while a probe sends
`GET /health` every 10 ms on its own connection. The baseline is the same
probe against the idle service, in the same run. Targets (SPEC §11): /health
p99 under 100 ms during every attack; 400 fat-header connections add under
100 MB of server memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.media import make_clip
from bench.report import Row, percentile, publish, render_table
from bench.rss import read_status_kb
from bench.servers import HOST, running_service, service_env

PROBE_INTERVAL_S = 0.01
P99_TARGET_MS = 100.0
RSS_TARGET_MB = 100.0


@dataclass(frozen=True)
class Probe:
    latencies_ms: list[float]
    failures: int

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)


async def probe_health(port: int, duration_s: float) -> Probe:
    """GET /health every 10 ms on one keep-alive connection; latencies of the answers."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + duration_s
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                async with asyncio.timeout(5):
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                latencies.append((time.perf_counter() - sent) * 1000)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, IndexError):
                failures += 1
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
            await asyncio.sleep(PROBE_INTERVAL_S)
    finally:
        writer.close()
    return Probe(latencies or [float("nan")], failures)


async def send_and_drop(port: int, data: bytes, chunk: int = 65536) -> None:
    """Send a request and read whatever comes back, then close."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for start in range(0, len(data), chunk):
                writer.write(data[start : start + chunk])
                await writer.drain()
            async with asyncio.timeout(10):
                await reader.read(65536)
        finally:
            writer.close()


def post(body: bytes, content_type: str, extra: bytes = b"") -> bytes:
    return (
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + b"Content-Type: " + content_type.encode()
        + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body
    )  # fmt: skip


def form_fields(count: int) -> bytes:
    parts = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(count)
    )
    return post(parts + b"--b--\r\n", "multipart/form-data; boundary=b")


async def attack_form_fields(port: int, stop: asyncio.Event, _: Path) -> None:
    """Four clients sending 20,000-field bodies (1.2 MB each) over and over."""
    body = form_fields(20_000)

    async def one() -> None:
        while not stop.is_set():
            await send_and_drop(port, body)

    await asyncio.gather(*(one() for _ in range(4)))


async def attack_preamble(port: int, stop: asyncio.Event, _: Path) -> None:
    """Multipart bodies whose preamble is a megabyte of empty lines, parsed line by line."""
    body = post(b"\r\n" * 500_000 + b"--b--\r\n", "multipart/form-data; boundary=b")

    async def one() -> None:
        while not stop.is_set():
            await send_and_drop(port, body)

    await asyncio.gather(*(one() for _ in range(4)))


async def attack_one_byte_chunks(port: int, stop: asyncio.Event, clip: Path) -> None:
    """Raw uploads in chunked encoding with 1-byte chunks: the parser's worst case per byte."""
    data = (await asyncio.to_thread(clip.read_bytes))[:200_000]
    chunks = b"".join(b"1\r\n" + data[i : i + 1] + b"\r\n" for i in range(len(data))) + b"0\r\n\r\n"
    head = (
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )

    async def one() -> None:
        while not stop.is_set():
            await send_and_drop(port, head + chunks)

    await asyncio.gather(*(one() for _ in range(4)))


async def hold_connections(port: int, stop: asyncio.Event, count: int, payload: bytes, trickle: bool) -> None:
    streams = []
    with contextlib.suppress(OSError):
        for _ in range(count):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(payload[:1] if trickle else payload)
            streams.append((reader, writer))
    position = 1
    while not stop.is_set():
        await asyncio.sleep(0.5)
        if trickle and position < len(payload):
            for _, writer in streams:
                writer.write(payload[position : position + 1])
            position += 1
    for _, writer in streams:
        writer.close()


async def attack_fat_headers(port: int, stop: asyncio.Event, _: Path) -> None:
    """400 connections each holding ~29 KB of headers that never end (just under max_header_bytes)."""
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
        b"X-Pad%d: %s\r\n" % (i, b"p" * 7000) for i in range(4)
    )
    await hold_connections(port, stop, 400, head, trickle=False)


async def attack_slowloris(port: int, stop: asyncio.Event, _: Path) -> None:
    """500 connections sending their headers a byte every half second."""
    await hold_connections(
        port, stop, 500, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 100, True
    )


Attack = Callable[[int, asyncio.Event, Path], Coroutine[None, None, None]]
ATTACKS: list[tuple[str, Attack]] = [
    ("20,000 form fields per body, 4 clients", attack_form_fields),
    ("1 MB multipart preambles, 4 clients", attack_preamble),
    ("uploads in 1-byte chunks, 4 clients", attack_one_byte_chunks),
    ("400 fat-header connections", attack_fat_headers),
    ("500 slowloris connections", attack_slowloris),
]


async def run(duration_s: float) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="videosvc-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        clip = tmp / "clip.mp4"
        await make_clip("ffmpeg", clip, 2, 120)
        async with running_service(service_env(tmp / "data", 2), tmp / "service.log") as server:
            port = int(server.base_url.rsplit(":", 1)[1])
            idle = await probe_health(port, duration_s)
            rows = [Row("GET /health, idle: p50 / p99", f"{idle.p50:.1f} / {idle.p99:.1f} ms")]
            for name, attack in ATTACKS:
                stop = asyncio.Event()
                rss_before = read_status_kb(server.pid)["VmRSS"]
                task = asyncio.create_task(attack(port, stop, clip))
                await asyncio.sleep(1.0)  # the attack is under way
                during = await probe_health(port, duration_s)
                rss_during = read_status_kb(server.pid)["VmRSS"]
                stop.set()
                await task
                rows.append(
                    Row(
                        f"GET /health during {name}: p99 (p50 {during.p50:.1f} ms, {during.failures} failed)",
                        f"{during.p99:.1f} ms",
                        f"idle p99 {idle.p99:.1f} ms",
                        f"{during.p99 / idle.p99:.1f}x",
                        f"< {P99_TARGET_MS:g} ms",
                        during.p99 < P99_TARGET_MS and during.failures == 0,
                    )
                )
                if attack is attack_fat_headers:
                    grown = (rss_during - rss_before) / 1024
                    rows.append(
                        Row(
                            f"server RSS growth, {name}",
                            f"{grown:.1f} MB",
                            f"{rss_before / 1024:.0f} MB before",
                            "—",
                            f"< {RSS_TARGET_MB:g} MB",
                            grown < RSS_TARGET_MB,
                        )
                    )
                await asyncio.sleep(1.0)  # let the service settle before the next one
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 s per attack instead of 5")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(2.0 if args.quick else 5.0))
    table = "# videosvc under hostile clients\n\n" + render_table(rows)
    publish(table, "hostile.md")
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
