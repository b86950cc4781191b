"""A bounded HTTP load generator: N keep-alive connections, GET in a loop."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp

from .report import percentile

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=5)


@dataclass(frozen=True)
class LoadSpec:
    concurrency: int = 20
    duration_s: float = 5.0
    #: A hard cap on requests, whatever the duration.
    max_requests: int = 200_000
    #: Opens the connections and warms both sides before anything counts.
    warmup_s: float = 0.5


@dataclass(frozen=True)
class LoadResult:
    ok: int
    #: What failed, by status code or exception name: "503", "ServerDisconnectedError"...
    errors: Counter[str]
    elapsed_s: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s


async def get_load(url: str, spec: LoadSpec) -> LoadResult:
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        await _drive(session, url, spec.concurrency, spec.warmup_s, spec.max_requests)
        return await _drive(session, url, spec.concurrency, spec.duration_s, spec.max_requests)


async def _drive(
    session: aiohttp.ClientSession, url: str, concurrency: int, duration_s: float, max_requests: int
) -> LoadResult:
    latencies_ms: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + duration_s

    async def connection() -> None:
        while time.perf_counter() < deadline and len(latencies_ms) + errors.total() < max_requests:
            sent = time.perf_counter()
            try:
                async with session.get(url) as response:
                    await response.read()
                    error = None if response.status == 200 else str(response.status)
            except (aiohttp.ClientError, TimeoutError) as e:
                error = type(e).__name__
            if error is None:
                latencies_ms.append((time.perf_counter() - sent) * 1000)
            else:
                errors[error] += 1

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if not latencies_ms:
        raise RuntimeError(f"GET {url}: no request succeeded; errors: {dict(errors)}")
    return LoadResult(
        ok=len(latencies_ms),
        errors=errors,
        elapsed_s=elapsed,
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
    )
