"""Logs: one line per request and per job event, as text or as JSON."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest

from videosvc.logs import Access, JsonFormatter, TextFormatter

from .helpers import Samples, poll_until, upload, wait_for_job
from .server import ServerProcess


async def test_json_logs_have_a_line_per_request_and_per_job_event(data_dir: Path, samples: Samples) -> None:
    with ServerProcess(data_dir, log_format="json") as server:
        async with aiohttp.ClientSession(server.url) as client:
            video_id = await upload(client, samples.video())
            await client.patch(f"/file/{video_id}/", json={"width": 64, "height": 48})
            await wait_for_job(client, video_id)
            await client.get("/nope")
        assert server.stop() == 0
    entries = [json.loads(line) for line in server.log().splitlines() if line.strip()]

    requests = [e for e in entries if e["logger"] == "videosvc.access"]
    assert {"method": "POST", "status": 200} in [{k: e[k] for k in ("method", "status")} for e in requests]
    assert any(e["method"] == "GET" and e["status"] == 404 for e in requests)
    assert all(isinstance(e["duration_ms"], int | float) for e in requests)

    jobs = {e["message"]: e for e in entries if e["logger"].startswith("videosvc.jobs.")}
    assert {"job queued", "job started", "job finished"} <= set(jobs)
    assert jobs["job finished"]["video_id"] == video_id
    assert jobs["job finished"]["elapsed_s"] > 0


async def test_failed_job_logs_ffmpegs_last_words(make_client, samples: Samples, caplog) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(x264_preset="veryslow", job_timeout_s=0.5)
    video_id = await upload(client, samples.video(1280, 720, duration_s=5))
    await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})
    await wait_for_job(client, video_id)
    (failure,) = [r for r in caplog.records if r.getMessage() == "job failed"]
    assert "timed out" in failure.error  # type: ignore[attr-defined]


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
@pytest.mark.parametrize("created", [1_790_000_000.0, 1_790_000_000.9995, 1_790_000_001.25])
def test_an_access_line_made_directly_is_the_line_its_record_makes(
    formatter: TextFormatter | JsonFormatter, created: float
) -> None:
    access = Access(
        "videosvc.access",
        created,
        "127.0.0.1",
        "GET",
        "/file/%E2%80%AE/",
        "a=%22",
        404,
        69,
        12.34567,
        "key:0a1b2c3d",
    )
    assert formatter.format_access(access) == formatter.format(access.record())


async def test_text_logs_have_every_access_line_in_order(data_dir: Path) -> None:
    paths = [f"/nope-{n}" for n in range(200)]
    with ServerProcess(data_dir, log_format="text") as server:
        async with aiohttp.ClientSession(server.url) as client:
            for path in paths:
                assert (await client.get(path)).status == 404
            # Written within FLUSH_DELAY_S, not held until the next line or the exit.
            await poll_until(lambda: " GET /nope-199 " in server.log(), "the last access line", 5)
            # Several in one turn of the loop, from many connections at once.
            await asyncio.gather(*(client.head(f"/many-{n}") for n in range(50)))
        assert server.stop() == 0
    lines = [line for line in server.log().splitlines() if " videosvc.access: " in line]
    gets = [line for line in lines if " GET /nope-" in line]
    assert [line.split(" GET ")[1].split()[0] for line in gets] == paths
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(
        stamp + r" INFO videosvc.access: 127\.0\.0\.1 GET /nope-0 404 \d+ \d+\.\d ms", gets[0]
    )
    assert sorted(line.split(" HEAD ")[1].split()[0] for line in lines if " HEAD " in line) == sorted(
        f"/many-{n}" for n in range(50)
    )


async def test_an_access_line_says_who_what_and_how_much_but_never_a_secret(
    data_dir: Path, samples: Samples
) -> None:
    key = "the-secret-key"
    with ServerProcess(data_dir, log_format="json", api_keys=key) as server:
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(server.url, headers=headers) as client:
            for _ in range(2):
                await upload(client, samples.video())
            page = await (await client.get("/file/?limit=1")).json()
            cursor = page["next"]
            assert (await client.get(f"/file/?limit=1&cursor={cursor}")).status == 200
        async with aiohttp.ClientSession(server.url) as browser:  # a <video src>: no key, a signed link
            content_url = page["items"][0]["contentUrl"]
            signature = content_url.split("signature=")[1]
            response = await browser.get(content_url)
            assert response.status == 200 and len(await response.read()) == samples.video().stat().st_size
        assert server.stop() == 0
    log = server.log()
    for secret in (key, cursor, signature):
        assert secret not in log
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "videosvc.access"]
    listing = next(e for e in access if e["path"] == "/file/" and "cursor" in e["query"])
    assert listing["client"] == "127.0.0.1"
    assert re.fullmatch(r"key:[0-9a-f]{8}", listing["key"])
    assert listing["bytes"] > 0
    download = next(e for e in access if e["path"].endswith("/content"))
    assert "signature=" in download["query"] and signature not in download["query"]
    assert download["bytes"] == samples.video().stat().st_size and download["key"] is None
    # ISO 8601 with its zone, for log collectors.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)", listing["time"])
