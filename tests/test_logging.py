"""Logs: one line per request and per job event, as text or as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from .helpers import Samples, upload, wait_for_job
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

    jobs = {e["message"]: e for e in entries if e["logger"] == "videosvc.jobs.runner"}
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
