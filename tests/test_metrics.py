"""GET /metrics (SPEC §10): the Prometheus text format, read with prometheus-client's own parser."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .helpers import Client, Samples, upload, wait_for_job, wait_until_running


async def _scrape(client: Client, **headers: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    client: Client, samples: Samples
) -> None:
    ids = [await upload(client, samples.video()) for _ in range(3)]
    for video_id in ids:
        assert (await client.get(f"/file/{video_id}/")).status == 200
        assert (await client.get(f"/file/{video_id}")).status == 200  # the alias without the slash
    assert (await client.get("/file/00000000-0000-4000-8000-000000000000/")).status == 404
    for n in range(5):
        assert (await client.get(f"/wp-admin/{n}.php")).status == 404
    for method in ("PROPFIND", "MKCOL", "PURGE"):  # methods we do not serve are one label, not one each
        assert (await client.request(method, f"/file/{ids[0]}/")).status == 405
    scraped = await _scrape(client)

    requests = "videosvc_http_requests_total"
    assert _value(scraped, requests, route="/file/{id}", method="GET", status="200") == 6
    assert _value(scraped, requests, route="/file/{id}", method="GET", status="404") == 1
    assert _value(scraped, requests, route="/file", method="POST", status="200") == 3
    assert _value(scraped, requests, route="unmatched", method="GET", status="404") == 5
    assert (
        sum(v for (name, pairs), v in scraped.items() if name == requests and ("method", "other") in pairs)
        == 3
    )
    assert not any(("method", "PURGE") in pairs for _, pairs in scraped)
    # No label anywhere holds an id or a scanner's path.
    labels = {value for _, pairs in scraped for _, value in pairs}
    assert not any(video_id in label for video_id in ids for label in labels)
    assert not any("wp-admin" in label for label in labels)
    histogram = "videosvc_http_request_duration_seconds_count"
    assert _value(scraped, histogram, route="/file/{id}", method="GET") == 7
    assert (
        _value(
            scraped,
            "videosvc_http_request_duration_seconds_bucket",
            route="/file/{id}",
            method="GET",
            le="+Inf",
        )
        == 7
    )


async def test_video_bytes_in_and_out_are_counted(client: Client, samples: Samples) -> None:
    source = samples.video()
    video_id = await upload(client, source)
    assert len(await (await client.get(f"/file/{video_id}/content")).read()) == source.stat().st_size
    ranged = await client.get(f"/file/{video_id}/content", headers={"Range": "bytes=0-99"})
    assert ranged.status == 206 and len(await ranged.read()) == 100
    scraped = await _scrape(client)
    assert _value(scraped, "videosvc_video_bytes_total", direction="in") == source.stat().st_size
    assert _value(scraped, "videosvc_video_bytes_total", direction="out") == source.stat().st_size + 100


async def test_jobs_are_counted_by_outcome_with_queue_depth_and_durations(
    make_client, samples: Samples, data_dir: Path
) -> None:
    # One worker and slow encodes over a time limit: one job runs, one waits, both fail.
    client = await make_client(workers=1, x264_preset="veryslow", job_timeout_s=2)
    ids = [await upload(client, samples.video(1280, 720, duration_s=5)) for _ in range(2)]
    for video_id in ids:
        assert (await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})).status == 200
    await wait_until_running(data_dir)
    scraped = await _scrape(client)
    assert _value(scraped, "videosvc_jobs_running") == 1
    assert _value(scraped, "videosvc_jobs_queued") == 1
    for video_id in ids:
        assert (await wait_for_job(client, video_id))["processingSuccess"] is False

    fast = await upload(client, samples.video())
    assert (await client.patch(f"/file/{fast}/", json={"width": 64, "height": 48})).status == 200
    assert (await wait_for_job(client, fast))["processingSuccess"] is True
    scraped = await _scrape(client)
    assert _value(scraped, "videosvc_jobs_total", outcome="failed") == 2
    assert _value(scraped, "videosvc_jobs_total", outcome="succeeded") == 1
    assert _value(scraped, "videosvc_jobs_total", outcome="cancelled") == 0
    assert _value(scraped, "videosvc_job_duration_seconds_count") == 3
    assert _value(scraped, "videosvc_job_duration_seconds_sum") >= 2 * 2  # two ran to their time limit
    assert _value(scraped, "videosvc_jobs_running") == 0
    assert _value(scraped, "videosvc_jobs_queued") == 0


JOB_STEPS = ("queue", "start", "handover", "spawn", "ffmpeg", "verify", "fsync", "replace", "record")


async def test_each_step_of_a_job_that_succeeded_is_timed(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video(320, 240, duration_s=2))
    started = time.monotonic()
    assert (await client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})).status == 200
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True
    elapsed = time.monotonic() - started
    scraped = await _scrape(client)
    seconds = {step: _value(scraped, "videosvc_job_step_seconds_sum", step=step) for step in JOB_STEPS}
    for step in JOB_STEPS:
        assert _value(scraped, "videosvc_job_step_seconds_count", step=step) == 1, step
    # Steps in sequence: together no longer than the job as its client saw it.
    assert 0 < sum(seconds.values()) <= elapsed
    assert max(seconds, key=lambda step: seconds[step]) == "ffmpeg", seconds


async def test_a_job_deleted_while_it_runs_counts_as_cancelled(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(x264_preset="veryslow")
    video_id = await upload(client, samples.video(1280, 720, duration_s=5))
    assert (await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})).status == 200
    await wait_until_running(data_dir)
    assert (await client.delete(f"/file/{video_id}/")).status == 200
    scraped = await _scrape(client)
    assert _value(scraped, "videosvc_jobs_total", outcome="cancelled") == 1


async def test_open_live_streams_are_a_gauge(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video())
    streams = [await client.get(f"/file/{video_id}/events") for _ in range(3)]
    for stream in streams:
        await stream.content.readline()
    assert _value(await _scrape(client), "videosvc_live_streams") == 3


async def test_metrics_can_be_turned_off(make_client) -> None:
    client = await make_client(metrics_enabled=False)
    assert (await client.get("/metrics")).status == 404
    assert "/metrics" not in (await (await client.get("/swagger.json")).json())["paths"]


async def test_metrics_need_a_key_when_keys_are_set(make_client) -> None:
    client = await make_client(api_keys=("k",))
    assert (await client.get("/metrics")).status == 401
    assert _value(await _scrape(client, Authorization="Bearer k"), "videosvc_jobs_running") == 0


async def test_a_missing_static_file_is_counted_as_the_404_it_is(client: Client) -> None:
    """Finding 13: aiohttp's file response turns into a 404 after the handler returned."""
    response = await client.get("/static/no-such-file.js")
    assert response.status == 404 and "error" in await response.json()
    scraped = await _scrape(client)
    requests = "videosvc_http_requests_total"
    assert _value(scraped, requests, route="/static/{name}", method="GET", status="404") == 1
    assert not _value(scraped, requests, route="/static/{name}", method="GET", status="200")
