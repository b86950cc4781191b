"""Webhooks (SPEC §10): signed per Standard Webhooks, from an outbox written with the change.

A real aiohttp receiver verifies every delivery with the `standardwebhooks`
package; the service runs in-process, or as a process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from videosvc.config import ConfigError

from .helpers import Samples, get_video, poll_until, rows, upload, wait_for_job, wait_until_running
from .receiver import WebhookReceiver, new_secret
from .server import ServerProcess, free_port


def _outbox(data_dir: Path) -> list[tuple]:
    return rows(data_dir, "SELECT message_id, event_type, attempts FROM webhook_outbox")


async def _until_outbox_empty(data_dir: Path) -> None:
    """A receiver has its 204 a moment before the service removes the row."""
    await poll_until(lambda: _outbox(data_dir), "an empty outbox", 10, until=lambda queued: not queued)


async def test_each_change_is_posted_signed_with_the_get_shape(make_client, samples: Samples) -> None:
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        client = await make_client(webhook_urls=(receiver.url,), webhook_secret=secret)
        video_id = await upload(client, samples.video())
        stored = await get_video(client, video_id)
        await receiver.wait_for(lambda r: len(r.accepted) == 1)
        assert receiver.accepted[0].type == "video.stored"
        assert receiver.accepted[0].data == stored

        assert (await client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})).status == 200
        resized = await wait_for_job(client, video_id)
        await receiver.wait_for(lambda r: len(r.accepted) == 2)
        succeeded = receiver.accepted[1]
        assert succeeded.type == "job.succeeded"
        assert succeeded.data == resized
        assert (succeeded.data["width"], succeeded.data["processingSuccess"]) == (160, True)

        assert (await client.delete(f"/file/{video_id}/")).status == 200
        await receiver.wait_for(lambda r: len(r.accepted) == 3)
        deleted = receiver.accepted[2]
        assert deleted.type == "video.deleted"
        assert deleted.data == resized  # the last shape it had
        assert deleted.payload["timestamp"].endswith("Z")

        assert receiver.invalid == 0
        assert len({attempt.webhook_id for attempt in receiver.attempts}) == 3
        assert all(attempt.webhook_id.startswith("msg_") for attempt in receiver.attempts)


async def test_a_failed_job_is_posted_as_job_failed(make_client, samples: Samples) -> None:
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        client = await make_client(
            webhook_urls=(receiver.url,), webhook_secret=secret, x264_preset="veryslow", job_timeout_s=1
        )
        video_id = await upload(client, samples.video(1280, 720, duration_s=5))
        assert (await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})).status == 200
        failed = await wait_for_job(client, video_id)
        await receiver.wait_for(lambda r: [a.type for a in r.accepted] == ["video.stored", "job.failed"])
        data = receiver.accepted[1].data
        assert data == failed
        assert data["processingSuccess"] is False and "timed out" in data["processingError"]


async def test_a_receiver_answering_500_gets_the_same_webhook_id_again(
    make_client, samples: Samples, data_dir: Path
) -> None:
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        receiver.fail_first = 2
        client = await make_client(webhook_urls=(receiver.url,), webhook_secret=secret)
        await upload(client, samples.video())
        # The first retry waits up to 5 s, the second up to 10 s (jittered backoff).
        await receiver.wait_for(lambda r: len(r.accepted) == 1, timeout_s=30)
        assert [a.status for a in receiver.attempts] == [500, 500, 204]
        assert len({a.webhook_id for a in receiver.attempts}) == 1  # at least once, one identity
        await _until_outbox_empty(data_dir)  # delivered: gone from the outbox
        metrics = await (await client.get("/metrics")).text()
        assert 'videosvc_webhook_deliveries_total{result="failed"} 2.0' in metrics
        assert 'videosvc_webhook_deliveries_total{result="delivered"} 1.0' in metrics


async def test_each_url_gets_each_event(make_client, samples: Samples) -> None:
    secret = new_secret()
    async with WebhookReceiver(secret) as first, WebhookReceiver(secret) as second:
        client = await make_client(webhook_urls=(first.url, second.url), webhook_secret=secret)
        await upload(client, samples.video())
        for receiver in (first, second):
            await receiver.wait_for(lambda r: len(r.accepted) == 1)
        assert first.accepted[0].webhook_id == second.accepted[0].webhook_id  # one event, one id


async def test_a_webhook_is_given_up_after_webhook_max_age_s(
    make_client, samples: Samples, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        receiver.fail_first = 1000
        client = await make_client(webhook_urls=(receiver.url,), webhook_secret=secret, webhook_max_age_s=1)
        with caplog.at_level(logging.ERROR, logger="videosvc.webhooks"):
            await upload(client, samples.video())
            await receiver.wait_for(lambda r: len(r.attempts) == 2, timeout_s=30)
            await _until_outbox_empty(data_dir)
        assert "given up after 2 attempts" in caplog.text
        await asyncio.sleep(6)  # past the next retry it would have had
        assert len(receiver.attempts) == 2
        metrics = await (await client.get("/metrics")).text()
        assert 'videosvc_webhook_deliveries_total{result="dropped"} 1.0' in metrics


async def test_a_hanging_receiver_delays_no_request_and_no_job(
    make_client, samples: Samples, data_dir: Path
) -> None:
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        receiver.hang = True
        client = await make_client(
            webhook_urls=(receiver.url,), webhook_secret=secret, webhook_timeout_s=60, webhook_concurrency=2
        )
        ids = [await upload(client, samples.video()) for _ in range(4)]
        await receiver.wait_for(lambda r: r.in_flight == 2)
        # Deliveries hang; uploads, reads, jobs and deletes go on.
        for video_id in ids[:2]:
            assert (
                await client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})
            ).status == 200
        for video_id in ids[:2]:
            assert (await wait_for_job(client, video_id))["processingSuccess"] is True
        assert (await client.delete(f"/file/{ids[3]}/")).status == 200
        assert (await client.get("/file/")).status == 200
        # At most webhook_concurrency deliveries wait on it; the rest wait in the outbox.
        assert receiver.max_in_flight == 2
        assert len(_outbox(data_dir)) == 4 + 2 + 1
        assert "videosvc_webhook_backlog 7.0" in await (await client.get("/metrics")).text()


async def test_a_timed_out_delivery_is_retried(make_client, samples: Samples) -> None:
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        receiver.hang = True
        client = await make_client(webhook_urls=(receiver.url,), webhook_secret=secret, webhook_timeout_s=0.5)
        await upload(client, samples.video())
        await receiver.wait_for(lambda r: len(r.attempts) == 1)
        receiver.hang = False
        await receiver.wait_for(lambda r: len(r.attempts) == 2, timeout_s=30)
        assert receiver.attempts[0].webhook_id == receiver.attempts[1].webhook_id


async def test_webhooks_survive_a_kill_9_between_commit_and_delivery(
    data_dir: Path, samples: Samples
) -> None:
    secret, port = new_secret(), free_port()
    receiver = WebhookReceiver(secret, port)  # not listening yet: deliveries fail
    settings = {"webhook_urls": receiver.url, "webhook_secret": secret}
    with ServerProcess(data_dir, **settings) as server:
        async with aiohttp.ClientSession(server.url) as client:
            video_id = await upload(client, samples.video())
        server.kill9()
    queued = _outbox(data_dir)
    assert [row[1] for row in queued] == ["video.stored"]
    async with receiver:
        with ServerProcess(data_dir, **settings):
            await receiver.wait_for(lambda r: len(r.accepted) == 1, timeout_s=30)
            assert receiver.accepted[0].webhook_id == queued[0][0]  # the same event, not a new one
            assert receiver.accepted[0].data["id"] == video_id
            await _until_outbox_empty(data_dir)


async def test_a_job_ended_by_the_recovery_at_start_is_posted(data_dir: Path, samples: Samples) -> None:
    """A job interrupted more often than job_max_attempts fails at start: its webhook goes too."""
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        settings = {
            "webhook_urls": receiver.url, "webhook_secret": secret,
            "x264_preset": "veryslow", "job_max_attempts": 1,
        }  # fmt: skip
        with ServerProcess(data_dir, **settings) as server:
            async with aiohttp.ClientSession(server.url) as client:
                video_id = await upload(client, samples.video(1280, 720, duration_s=5))
                response = await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})
                assert response.status == 200
                await wait_until_running(data_dir)
            server.kill9()
        with ServerProcess(data_dir, **settings):
            await receiver.wait_for(lambda r: [a.type for a in r.accepted] == ["video.stored", "job.failed"])
        data = receiver.accepted[1].data
        assert data["processingSuccess"] is False and "interrupted 1 time(s)" in data["processingError"]


def test_webhook_settings_are_checked_at_start(make_settings) -> None:
    with pytest.raises(ConfigError, match="webhook_secret"):
        make_settings(webhook_urls=("http://127.0.0.1:1/hooks",), webhook_secret="not-a-secret")


# -- outbound calls are bounded like inbound ones (SPEC §12)


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_a_receivers_answer_is_read_only_a_little(data_dir: Path, samples: Samples) -> None:
    """Finding 9: one 1 GiB answer took the service from 53 MiB to 2.1 GB."""
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        receiver.answer_bytes = 512 * 1024**2
        settings = {"webhook_urls": receiver.url, "webhook_secret": secret}
        with ServerProcess(data_dir, **settings) as server:
            assert server.process is not None
            before = _peak_rss_bytes(server.process.pid)
            async with aiohttp.ClientSession(server.url) as client:
                await upload(client, samples.video())
                await receiver.wait_for(lambda r: len(r.attempts) == 1)
                await _until_outbox_empty(data_dir)  # a 2xx, whatever followed it
                growth = _peak_rss_bytes(server.process.pid) - before
                assert growth < 50 * 1024**2, f"peak RSS grew by {growth / 1024**2:.0f} MiB"
                health = await client.get("/health")
                assert health.status == 200


@pytest.mark.parametrize("status", [301, 307])
async def test_redirects_are_failed_deliveries_not_followed(
    make_client, samples: Samples, data_dir: Path, status: int
) -> None:
    """Finding 10: a 301 became a GET whose 204 marked the event delivered; a 307 re-posted it elsewhere."""
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver, WebhookReceiver(secret) as elsewhere:
        receiver.status = status
        receiver.headers = {"Location": elsewhere.url}
        client = await make_client(webhook_urls=(receiver.url,), webhook_secret=secret)
        await upload(client, samples.video())
        await receiver.wait_for(lambda r: len(r.attempts) == 1)
        await asyncio.sleep(0.5)
        assert elsewhere.attempts == [] and elsewhere.invalid == 0
        assert [row[1:] for row in _outbox(data_dir)] == [("video.stored", 1)]  # failed once, kept
        metrics = await (await client.get("/metrics")).text()
        assert 'videosvc_webhook_deliveries_total{result="delivered"} 0.0' in metrics


async def test_the_outbox_has_a_cap_past_which_the_oldest_events_are_dropped(
    make_client, samples: Samples, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 11: upload and delete against a hanging receiver grew the outbox without bound."""
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver:
        receiver.hang = True
        client = await make_client(
            webhook_urls=(receiver.url,), webhook_secret=secret, webhook_max_backlog=5, webhook_concurrency=1
        )
        with caplog.at_level(logging.WARNING, logger="videosvc"):
            for _ in range(6):
                video_id = await upload(client, samples.video())
                assert (await client.delete(f"/file/{video_id}/")).status == 200
        queued = _outbox(data_dir)
        assert len(queued) == 5
        assert [row[1] for row in queued][-1] == "video.deleted"  # the newest are kept
        assert "webhook_max_backlog" in caplog.text
        metrics = await (await client.get("/metrics")).text()
        assert 'videosvc_webhook_deliveries_total{result="dropped"} 7.0' in metrics


async def test_a_410_disables_the_url_until_it_is_configured_anew(data_dir: Path, samples: Samples) -> None:
    """Standard Webhooks: 410 Gone means the endpoint is gone; the service stops, across restarts."""
    secret = new_secret()
    async with WebhookReceiver(secret) as receiver, WebhookReceiver(secret) as other:
        receiver.status = 410
        both = {"webhook_urls": f"{receiver.url},{other.url}", "webhook_secret": secret}
        with ServerProcess(data_dir, **both) as server:
            async with aiohttp.ClientSession(server.url) as client:
                await upload(client, samples.video())
                await receiver.wait_for(lambda r: len(r.attempts) == 1)
                await other.wait_for(lambda r: len(r.accepted) == 1)
                await _until_outbox_empty(data_dir)  # the 410 ended its delivery
                await upload(client, samples.video())
                await other.wait_for(lambda r: len(r.accepted) == 2)
            assert "410" in server.log()
        with ServerProcess(data_dir, **both) as server:
            async with aiohttp.ClientSession(server.url) as client:
                await upload(client, samples.video())
                await other.wait_for(lambda r: len(r.accepted) == 3)
                await _until_outbox_empty(data_dir)  # nothing else is owed: none was made for it
        assert len(receiver.attempts) == 1  # disabled, across a restart
        # Removed from the configuration, then named again: enabled again.
        receiver.status = None
        with ServerProcess(data_dir, webhook_urls=other.url, webhook_secret=secret):
            pass
        with ServerProcess(data_dir, **both) as server:
            async with aiohttp.ClientSession(server.url) as client:
                await upload(client, samples.video())
                await receiver.wait_for(lambda r: len(r.accepted) == 1)


async def test_urls_removed_from_the_configuration_get_no_more_deliveries(
    data_dir: Path, samples: Samples
) -> None:
    secret, port = new_secret(), free_port()
    gone = WebhookReceiver(secret, port)  # not listening: its deliveries wait in the outbox
    async with WebhookReceiver(secret) as kept:
        settings = {"webhook_urls": f"{gone.url},{kept.url}", "webhook_secret": secret}
        with ServerProcess(data_dir, **settings) as server:
            async with aiohttp.ClientSession(server.url) as client:
                await upload(client, samples.video())
            await kept.wait_for(lambda r: len(r.accepted) == 1)
            # The kept URL's row goes a moment after its 204.
            await poll_until(lambda: _outbox(data_dir), "one row", 5, until=lambda queued: len(queued) == 1)
        assert [row[1] for row in _outbox(data_dir)] == ["video.stored"]
        async with gone:
            with ServerProcess(data_dir, webhook_urls=kept.url, webhook_secret=secret):
                await _until_outbox_empty(data_dir)
                await asyncio.sleep(0.5)
            assert gone.attempts == []
