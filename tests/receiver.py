"""A real webhook receiver on loopback, verifying each delivery as a user's app would.

Signatures are checked with the `standardwebhooks` package, the one the
service signs with; a delivery that fails verification is counted and refused.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .server import free_port


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass(frozen=True)
class Attempt:
    webhook_id: str
    payload: dict[str, Any]
    #: What the receiver answered.
    status: int

    @property
    def type(self) -> str:
        return str(self.payload["type"])

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.payload["data"])


class WebhookReceiver:
    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        #: Every verified attempt, in arrival order (refused ones too, with their status).
        self.attempts: list[Attempt] = []
        #: Deliveries whose signature did not verify.
        self.invalid = 0
        #: Answer 500 to this many verified attempts before accepting.
        self.fail_first = 0
        #: Never answer (until closed): a receiver that hangs.
        self.hang = False
        #: Answer every verified attempt with this status (and these headers), e.g. a redirect or a 410.
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        #: Answer with a body this large, streamed (a receiver that answers a gigabyte).
        self.answer_bytes = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._released = asyncio.Event()
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    @property
    def accepted(self) -> list[Attempt]:
        return [attempt for attempt in self.attempts if attempt.status == 204]

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            try:
                payload = Webhook(self.secret).verify(body, dict(request.headers))
            except WebhookVerificationError:
                self.invalid += 1
                return web.Response(status=400)
            status = 500 if len(self.attempts) < self.fail_first else (self.status or 204)
            self.attempts.append(Attempt(request.headers["webhook-id"], payload, status))
            self._arrived.set()
            if self.hang:
                await self._released.wait()
            if self.answer_bytes:
                return await self._answer_huge(request, status)
            return web.Response(status=status, headers=self.headers)
        finally:
            self.in_flight -= 1

    async def _answer_huge(self, request: web.Request, status: int) -> web.StreamResponse:
        response = web.StreamResponse(status=200 if status == 204 else status)
        response.content_length = self.answer_bytes
        await response.prepare(request)
        block = b"x" * (1024 * 1024)
        sent = 0
        try:
            while sent < self.answer_bytes:
                await response.write(block[: self.answer_bytes - sent])
                sent += len(block)
        except ConnectionError:
            pass  # the service stopped reading, as it should
        return response

    async def wait_for(self, done: Callable[[WebhookReceiver], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"webhooks not as expected after {timeout_s} s: {self.attempts}")
            self._arrived.clear()
            try:
                async with asyncio.timeout(min(left, 0.2)):
                    await self._arrived.wait()
            except TimeoutError:
                pass
