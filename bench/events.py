"""Events: 500 live streams open while jobs run, and webhook delivery throughput.

    python -m bench.events            # 3 runs; about three minutes
    python -m bench.events --quick    # 1 run

Streams: both workers resize in a loop (two 5 s 1280x720 clips, so progress
events flow) while GET /file/{id}/ is measured with 20 connections for 5 s,
first with no stream open, then with 500 streams open over 10 videos (50 each,
two of them the videos being resized). The streams are read by a process of
their own (`--stream-client`), so their reading does not slow the load
generator. The server's RSS is sampled from before the streams open to the end.

Webhooks: a backlog of 300 `video.stored` deliveries (made by real uploads
while the receiver was down, then made due at once) is drained into a local
aiohttp receiver that verifies each signature; against the same receiver fed
the same 300 payloads by a plain aiohttp client with the same concurrency,
signing with the same package: the service's own cost per delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bench.load import LoadSpec, get_load
from bench.media import make_clip
from bench.report import Row, median, progress, publish, render_table
from bench.rss import RssSampler
from bench.servers import HOST, ServiceClient, free_port, running_service, service_env

STREAMS = 500
STREAM_VIDEOS = 10
MAX_P99_MS = 50.0
MAX_RSS_GROWTH_MB = 100.0
WEBHOOKS = 300
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
JOB_TIMEOUT_S = 600.0


# -- the stream reader, a process of its own --------------------------------------------------


async def stream_client(base_url: str, video_ids: list[str], count: int) -> None:
    """Opens `count` streams round-robin over the videos; prints "ready" once each has its first
    event, then the number of events seen when stdin closes."""
    events = 0
    opened = asyncio.Event()
    first_events = 0

    async def one(session: aiohttp.ClientSession, video_id: str) -> None:
        nonlocal events, first_events
        async with session.get(f"{base_url}/file/{video_id}/events") as response:
            if response.status != 200:
                raise RuntimeError(f"stream refused: {response.status} {await response.text()}")
            async for line in response.content:
                if line.startswith(b"data:"):
                    events += 1
                    if events <= count:
                        first_events += 1
                        if first_events == count:
                            opened.set()

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout()) as session:
        tasks = [asyncio.create_task(one(session, video_ids[i % len(video_ids)])) for i in range(count)]
        await asyncio.wait_for(opened.wait(), 60)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes it
        print(events, flush=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def streams_open(base_url: str, video_ids: list[str], count: int) -> AsyncIterator[list[int]]:
    """Yields a list that holds, once the block ends, the number of events the streams received."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.events", "--stream-client", base_url, ",".join(video_ids), str(count),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    seen: list[int] = []
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 90)
        if line.strip() != b"ready":
            raise RuntimeError(f"the stream client failed: {line!r}")
        yield seen
        process.stdin.close()
        seen.append(int((await asyncio.wait_for(process.stdout.readline(), 30)).strip() or 0))
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        await process.wait()


# -- streams while jobs run -------------------------------------------------------------------


async def keep_resizing(client: ServiceClient, video_id: str, stop: asyncio.Event) -> int:
    """Resizes back and forth until `stop`; returns the number of jobs run."""
    jobs = 0
    while not stop.is_set():
        await client.resize(video_id, *((640, 360) if jobs % 2 == 0 else (1280, 720)))
        await client.wait_until_done(video_id, JOB_TIMEOUT_S, poll_s=0.2)
        jobs += 1
    return jobs


async def measure_streams(tmp: Path, runs: int) -> list[Row]:
    clip = tmp / "clip.mp4"
    await make_clip("ffmpeg", clip, 5, 300)
    env = service_env(tmp / "data-streams", 2) | {"VIDEOSVC_MAX_LIVE_STREAMS": str(STREAMS + 100)}
    quiet, busy, growth, events = [], [], [], []
    async with (
        running_service(env, tmp / "service-streams.log") as server,
        aiohttp.ClientSession() as session,
    ):
        client = ServiceClient(session, server.base_url)
        ids = [await client.upload(clip) for _ in range(STREAM_VIDEOS)]
        url = client.file_url(ids[-1])
        stop = asyncio.Event()
        resizers = [asyncio.create_task(keep_resizing(client, video_id, stop)) for video_id in ids[:2]]
        await asyncio.sleep(1.0)  # both workers busy
        for run in range(runs):
            quiet.append(await get_load(url, LoadSpec()))
            with RssSampler(server.pid) as rss:
                async with streams_open(server.base_url, ids, STREAMS) as seen:
                    busy.append(await get_load(url, LoadSpec()))
            growth.append(rss.growth_mb)
            events.append(seen[0])
            progress(
                f"run {run + 1}: p99 {quiet[-1].p99_ms:.1f} → {busy[-1].p99_ms:.1f} ms, {seen[0]} events"
            )
        stop.set()
        jobs = sum(await asyncio.gather(*resizers))
    p99_quiet = median([r.p99_ms for r in quiet])
    p99_busy = median([r.p99_ms for r in busy])
    errors = sum(r.errors.total() for r in busy)
    return [
        Row(
            f"GET p99 with {STREAMS} live streams open, both workers resizing",
            f"{p99_busy:.1f} ms (p50 {median([r.p50_ms for r in busy]):.1f})",
            f"no streams: {p99_quiet:.1f} ms (p50 {median([r.p50_ms for r in quiet]):.1f})",
            f"{p99_busy / p99_quiet:.2f}x",
            f"< {MAX_P99_MS:.0f} ms",
            p99_busy < MAX_P99_MS and errors == 0,
        ),
        Row(
            f"GET throughput with {STREAMS} streams open, both workers resizing",
            f"{median([r.rps for r in busy]):.0f} req/s",
            f"no streams: {median([r.rps for r in quiet]):.0f} req/s",
            f"{median([r.rps for r in busy]) / median([r.rps for r in quiet]):.2f}x",
        ),
        Row(
            f"Server peak RSS growth while {STREAMS} streams are open (worst run)",
            f"{max(growth):.1f} MB",
            f"{max(growth) * 1024 / STREAMS:.0f} KB a stream",
            target=f"< {MAX_RSS_GROWTH_MB:.0f} MB",
            met=max(growth) < MAX_RSS_GROWTH_MB,
        ),
        Row(
            "Events received by the streams during a 5 s load (median)",
            f"{median(events):.0f}",
            f"{jobs} jobs ran in all",
        ),
    ]


# -- webhooks -----------------------------------------------------------------------------------


class Receiver:
    """Verifies every delivery, as a user's endpoint would, and notes when each arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[float] = []
        self.ids: set[str] = set()
        self._verifier = Webhook(SECRET)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hooks"

    async def handle(self, request: web.Request) -> web.Response:
        self._verifier.verify(await request.read(), dict(request.headers))
        self.ids.add(request.headers["webhook-id"])
        self.arrivals.append(time.perf_counter())
        return web.Response(status=204)

    def rate(self) -> float:
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, self.port).start()
        try:
            yield
        finally:
            await runner.cleanup()

    async def wait_for(self, count: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.ids) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.ids)} of {count} webhooks arrived")
            await asyncio.sleep(0.01)


async def plain_client(url: str, payloads: list[tuple[str, str]], concurrency: int) -> None:
    """The baseline: the same payloads, signed the same way, posted by a bare aiohttp client."""
    signer = Webhook(SECRET)
    queue = list(payloads)

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            message_id, payload = queue.pop()
            now = datetime.now(UTC)
            headers = {
                "Content-Type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(message_id, now, payload),
            }
            async with session.post(url, data=payload.encode(), headers=headers) as response:
                await response.read()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


async def measure_webhooks(tmp: Path, runs: int) -> list[Row]:
    clip = tmp / "small.mp4"
    await make_clip("ffmpeg", clip, 1, 300)
    service_rates, plain_rates = [], []
    for run in range(runs):
        receiver = Receiver()
        data_dir = tmp / f"data-webhooks-{run}"
        env = service_env(data_dir, 2) | {
            "VIDEOSVC_WEBHOOK_URLS": receiver.url,
            "VIDEOSVC_WEBHOOK_SECRET": SECRET,
        }
        log = tmp / f"service-webhooks-{run}.log"
        async with running_service(env, log) as server, aiohttp.ClientSession() as session:
            client = ServiceClient(session, server.base_url)
            for _ in range(WEBHOOKS):  # the receiver is down: each delivery fails and waits
                await client.upload(clip)
        with sqlite3.connect(data_dir / "videosvc.sqlite3") as db:
            payloads = [
                (row[0], row[1]) for row in db.execute("SELECT message_id, payload FROM webhook_outbox")
            ]
            db.execute("UPDATE webhook_outbox SET next_attempt_at = 0")  # all due at the next start
        if len(payloads) != WEBHOOKS:
            raise RuntimeError(f"the outbox holds {len(payloads)} deliveries, not {WEBHOOKS}")
        async with receiver.listening():
            async with running_service(env, log):
                await receiver.wait_for(WEBHOOKS)
            service_rates.append(receiver.rate())
            receiver.arrivals, receiver.ids = [], set()  # the same receiver, now fed by a bare client
            await plain_client(receiver.url, payloads, concurrency=4)
            await receiver.wait_for(WEBHOOKS)
            plain_rates.append(receiver.rate())
        progress(f"run {run + 1}: service {service_rates[-1]:.0f}/s, plain client {plain_rates[-1]:.0f}/s")
    service, plain = median(service_rates), median(plain_rates)
    return [
        Row(
            f"Webhook deliveries, a backlog of {WEBHOOKS} to a local verifying receiver (4 at once)",
            f"{service:.0f}/s",
            f"a bare aiohttp client, same payloads and signing: {plain:.0f}/s",
            f"{service / plain:.2f}x",
        )
    ]


async def measure(runs: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="videosvc-events-") as name:
        tmp = Path(name)
        return [*await measure_streams(tmp, runs), *await measure_webhooks(tmp, runs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run instead of three")
    parser.add_argument("--stream-client", nargs=3, metavar=("URL", "IDS", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stream_client:
        url, ids, count = args.stream_client
        asyncio.run(stream_client(url, ids.split(","), int(count)))
        return 0
    rows = asyncio.run(measure(1 if args.quick else 3))
    table = "# videosvc: live streams and webhooks\n\n" + render_table(rows)
    publish(table, "events.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
