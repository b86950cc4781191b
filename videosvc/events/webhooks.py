"""Delivering the webhook outbox: signed per Standard Webhooks, retried with backoff, at least once.

Each outbox row is one event for one URL, written in the same transaction as
the change it reports (see `events.outbox`), so a crash between the change and
its delivery loses nothing: the row is still there at the next start. The row
keeps the video as the change left it; its GET shape is rendered here, when
the delivery is made (`render`, given by the application). A row is
removed once the receiver answers 2xx, or once it is older than
`webhook_max_age_s`. Deliveries run in a task of their own, a few at a time,
each with a timeout: a slow or dead receiver never delays a request or a job.

Signatures come from the `standardwebhooks` package (webhook-id, the event's
stable id; webhook-timestamp, the attempt's time; webhook-signature, HMAC-SHA256
over the three), so receivers can verify them with the same package.

Outbound calls are bounded like inbound ones (SPEC §12): only the status of an
answer is read (its body is left unread, the connection closed); redirects are
not followed (a 3xx is a failed delivery, retried); a 410 Gone disables the URL
until the configuration names it again; URLs no longer configured get nothing
more; and the outbox has a row cap past which the oldest events are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks.webhooks import Webhook

from ..config import EventSettings
from ..store.outbox import OutboxRepository
from ..store.records import Delivery, VideoStatus, status_from_dict
from .bus import EventBus, OutboxDropped, OutboxQueued
from .outbox import Outbox

#: The GET shape of a video, as the webhooks carry it.
Render = Callable[[VideoStatus], dict[str, Any]]

log = logging.getLogger(__name__)

#: The first retry waits about this long; each next one twice as long, up to MAX_BACKOFF_S.
FIRST_BACKOFF_S = 5.0
MAX_BACKOFF_S = 3600.0
#: Rows fetched at a time.
BATCH = 50
USER_AGENT = "videosvc-webhooks"


def backoff_s(attempts: int) -> float:
    """Full jitter (AWS's advice): a random wait up to an exponentially growing cap."""
    cap = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(0, attempts))
    return random.uniform(cap / 2, cap)


class WebhookDispatcher:
    def __init__(
        self, settings: EventSettings, rows: OutboxRepository, bus: EventBus, outbox: Outbox, render: Render
    ) -> None:
        self._settings = settings
        self._rows = rows
        self._outbox = outbox
        self._render = render
        self._signer = Webhook(settings.webhook_secret) if settings.webhook_urls else None
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._in_flight: set[int] = set()
        #: Counters for the metrics: delivered, failed (an attempt), dropped (gave up).
        self.counts = {"delivered": 0, "failed": 0, "dropped": 0}
        #: Deliveries not yet made (the outbox's rows), kept without asking the database.
        self.backlog = 0
        bus.subscribe(OutboxQueued, self._on_queued)
        bus.subscribe(OutboxDropped, self._on_dropped)

    async def start(self) -> None:
        """Settle the outbox with the configuration: URLs no longer named get nothing more, and a URL
        disabled by a 410 stays disabled while it is still named (named anew after a removal: enabled)."""
        urls = self._settings.webhook_urls
        disabled = await self._rows.settle_urls(urls)
        self._outbox.disable(disabled)
        dropped = await self._rows.drop_except(tuple(url for url in urls if url not in disabled))
        if dropped:
            self.counts["dropped"] += dropped
            log.warning("dropped %d webhook deliveries to URLs no longer configured, or disabled", dropped)
        for url in sorted(disabled):
            log.warning("webhook URL %s is disabled (it answered 410 Gone); remove it and add it back to"
                        " enable it again", url)  # fmt: skip
        self.backlog = await self._rows.size()

    def _on_queued(self, event: OutboxQueued) -> None:
        """Committed just now: look now, not at the next retry."""
        self.backlog += event.count
        self._wake.set()

    def _on_dropped(self, event: OutboxDropped) -> None:
        self.backlog -= event.from_backlog
        self.counts["dropped"] += event.count
        log.warning(
            "dropped %d webhook deliveries (%s)", event.count, event.reason
        )  # rare: the cap is far away

    async def run(self) -> None:
        if self._signer is None:
            return
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT}) as session:
            tasks: set[asyncio.Task[None]] = set()
            try:
                while True:
                    self._wake.clear()
                    due = await self._rows.due(time.time(), BATCH, skip=self._in_flight)
                    for delivery in due:
                        await self._slots.acquire()  # at most webhook_concurrency at once
                        self._in_flight.add(delivery.id)
                        task = asyncio.create_task(self._deliver(session, delivery))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    await self._sleep_until_due()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _sleep_until_due(self) -> None:
        next_at = await self._rows.next_at(skip=self._in_flight)
        delay = 60.0 if next_at is None else max(0.05, min(60.0, next_at - time.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        try:
            status, error = await self._attempt(session, delivery)
            if error is None:
                if await self._rows.delivered(delivery.id):  # not trimmed by the cap meanwhile
                    self.backlog -= 1
                self.counts["delivered"] += 1
                log.info(
                    "webhook delivered",
                    extra={"event": delivery.event_type, "webhook_id": delivery.message_id},
                )
                return
            self.counts["failed"] += 1
            if status == 410:
                await self._disable(delivery)
                return
            age = time.time() - delivery.created_at
            if age > self._settings.webhook_max_age_s:
                if await self._rows.delivered(delivery.id):  # given up: removed, and said so
                    self.backlog -= 1
                self.counts["dropped"] += 1
                log.error(
                    "webhook given up after %d attempts over %.0f s (webhook_max_age_s): %s",
                    delivery.attempts + 1, age, error,
                    extra={"event": delivery.event_type, "webhook_id": delivery.message_id},
                )  # fmt: skip
                return
            wait = backoff_s(delivery.attempts)
            await self._rows.retry_later(delivery.id, time.time() + wait, error)
            log.warning(
                "webhook not delivered (%s); retrying in %.0f s", error, wait,
                extra={"event": delivery.event_type, "webhook_id": delivery.message_id},
            )  # fmt: skip
        except Exception:
            log.exception("delivering a webhook failed; it stays queued")
        finally:
            self._in_flight.discard(delivery.id)
            self._slots.release()
            self._wake.set()

    async def _disable(self, delivery: Delivery) -> None:
        """410 Gone: the receiver says the endpoint is gone for good (Standard Webhooks)."""
        self._outbox.disable({delivery.url})
        dropped = await self._rows.disable_url(delivery.url)
        self.backlog -= dropped
        self.counts["dropped"] += dropped
        log.warning(
            "webhook URL %s answered 410 Gone: disabled, %d deliveries to it dropped; remove it from"
            " webhook_urls and add it back to enable it again", delivery.url, dropped,
        )  # fmt: skip

    def payload(self, delivery: Delivery) -> str:
        """What is sent: the event with the video's GET shape, rendered now from what the row kept."""
        event = json.loads(delivery.payload)
        if "data" not in event:  # rows from before the shape was rendered at delivery hold it rendered
            status = event.pop("status")
            event["data"] = self._render(status_from_dict(status)) if status else {}
        return json.dumps(event, separators=(",", ":"))

    async def _attempt(
        self, session: aiohttp.ClientSession, delivery: Delivery
    ) -> tuple[int | None, str | None]:
        """(status, None) when the receiver took it (2xx); else (status, why not)."""
        if self._signer is None:  # pragma: no cover - run() makes no deliveries without URLs
            raise RuntimeError("no webhook URLs: nothing to deliver")
        now = datetime.now(UTC)
        payload = self.payload(delivery)
        signature = self._signer.sign(delivery.message_id, now, payload)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        try:
            # The status is the answer: a body (even a gigabyte of one) is never read, and a redirect
            # is not followed (it would re-post a signed payload to wherever the receiver says).
            async with session.post(
                delivery.url, data=payload.encode(), headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                response.close()
            if 200 <= status < 300:
                return status, None
            if 300 <= status < 400:
                return status, f"the receiver answered {status} (redirects are not followed)"
            return status, f"the receiver answered {status}"
        except TimeoutError:
            return None, f"no answer within {self._settings.webhook_timeout_s:g} s (webhook_timeout_s)"
        except aiohttp.ClientError as e:
            return None, f"{type(e).__name__}: {str(e)[:200]}"
