"""The processes under test (the real service and a trivial aiohttp app) and a client.

Each server runs in its own session, as a deployed service would: stopping
it signals the whole process group (server, forkserver, workers, ffmpeg),
and the kernel schedules it apart from the load generator (autogroups).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .media import run_checked

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO_ROOT / "config.toml"
HOST = "127.0.0.1"

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0
API_TIMEOUT = aiohttp.ClientTimeout(total=30)
UPLOAD_TIMEOUT_S = 900.0


class ServiceError(Exception):
    """The service answered something other than what the benchmark needs."""


@dataclass(frozen=True)
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def service_env(data_dir: Path, workers: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        VIDEOSVC_DATA_DIR=str(data_dir),
        VIDEOSVC_WORKERS=str(workers),
        # The load comes from one address, standing for many clients: per-address caps as wide
        # as the overall ones (a service behind a proxy is set up the same way).
        VIDEOSVC_MAX_CONNECTIONS_PER_CLIENT="1000",
        VIDEOSVC_MAX_LIVE_STREAMS_PER_CLIENT="500",
        VIDEOSVC_MAX_PENDING_UPLOADS_PER_KEY="256",
        # Each bench measures one thing: uploads, resizes and requests without the HLS ladders that
        # every upload would start beside them (bench.hls measures those, and turns HLS on).
        VIDEOSVC_HLS_ENABLED="false",
        VIDEOSVC_PICTURES_ENABLED="false",
    )
    return env


@asynccontextmanager
async def running_service(env: Mapping[str, str], log_path: Path) -> AsyncIterator[Server]:
    port = free_port()
    args = [sys.executable, "-m", "videosvc", "run", "--config", str(CONFIG_PATH)]
    args += ["--host", HOST, "--port", str(port)]
    async with _running("videosvc", args, env, port, log_path) as server:
        yield server


@asynccontextmanager
async def running_trivial(log_path: Path, files: Path | None = None) -> AsyncIterator[Server]:
    port = free_port()
    args = [sys.executable, "-m", "bench.trivial_app", "--port", str(port)]
    if files is not None:
        args += ["--files", str(files)]
    async with _running("trivial app", args, os.environ, port, log_path) as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _running(
    name: str, args: list[str], env: Mapping[str, str], port: int, log_path: Path
) -> AsyncIterator[Server]:
    server = Server(name, _spawn(args, env, log_path), f"http://{HOST}:{port}", log_path)
    try:
        await _wait_ready(server)
        yield server
    finally:
        if server.process.poll() is not None:
            # Died under us: whatever failed just before is explained by this.
            print(
                f"bench: {server.name} had exited with code {server.process.returncode}: "
                f"{_log_tail(server.log_path)}",
                file=sys.stderr,
            )
        await asyncio.to_thread(_stop, server.process)


def _spawn(args: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, for _stop
        )


async def _wait_ready(server: Server) -> None:
    """Until GET /health answers 200 (both servers have it)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServiceError(f"{server.name} exited at start-up: {_log_tail(server.log_path)}")
            try:
                async with session.get(f"{server.base_url}/health") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise ServiceError(f"{server.name} not ready after {START_TIMEOUT_S:g} s: {_log_tail(server.log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group, then SIGKILL to whatever of the group is left."""
    _signal_group(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(STOP_GRACE_S)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait(STOP_GRACE_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(pgid, sig)


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text("utf-8", "replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


class ServiceClient:
    """The few calls the benchmark makes, each bounded by a timeout."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.base_url = base_url

    def file_url(self, video_id: str) -> str:
        return f"{self.base_url}/file/{video_id}/"

    async def upload(self, path: Path, multipart: bool = False) -> str:
        return (await curl_upload(self.base_url, path, multipart))[1]

    async def resize(self, video_id: str, width: int, height: int) -> None:
        url = self.file_url(video_id)
        body = {"width": width, "height": height}
        async with self._session.patch(url, json=body, timeout=API_TIMEOUT) as response:
            await _json(response)

    async def info(self, video_id: str) -> dict[str, Any]:
        async with self._session.get(self.file_url(video_id), timeout=API_TIMEOUT) as response:
            return await _json(response)

    async def processing_ids(self) -> set[str]:
        """Ids of the videos with a job queued or running (one page of up to 100)."""
        url = f"{self.base_url}/file/?processing=true&limit=100"
        async with self._session.get(url, timeout=API_TIMEOUT) as response:
            return {item["id"] for item in (await _json(response))["items"]}

    async def delete(self, video_id: str) -> None:
        async with self._session.delete(self.file_url(video_id), timeout=API_TIMEOUT) as response:
            await _json(response)

    @asynccontextmanager
    async def events(self, video_id: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """The video's live stream (SSE), open."""
        timeout = aiohttp.ClientTimeout(total=None, sock_read=UPLOAD_TIMEOUT_S)
        async with self._session.get(f"{self.file_url(video_id)}events", timeout=timeout) as response:
            if response.status != 200:
                raise ServiceError(f"GET /file/{video_id}/events -> {response.status}")
            yield response

    async def step_seconds(self) -> dict[str, float]:
        """Total seconds per job step so far (`videosvc_job_step_seconds_sum`), from /metrics."""
        async with self._session.get(f"{self.base_url}/metrics", timeout=API_TIMEOUT) as response:
            if response.status != 200:
                raise ServiceError(f"GET /metrics -> {response.status}")
            text = await response.text()
        return {
            sample.labels["step"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "videosvc_job_step_seconds_sum"
        }

    async def wait_until_done(self, video_id: str, timeout_s: float, poll_s: float = 0.025) -> dict[str, Any]:
        """Poll GET until `processing` is false; returns the last answer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = await self.info(video_id)
            if not info["processing"]:
                return info
            await asyncio.sleep(poll_s)
        raise ServiceError(f"video {video_id} still processing after {timeout_s:g} s")


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    if response.status != 200:
        text = (await response.text())[:300]
        raise ServiceError(f"{response.method} {response.url} -> {response.status}: {text}")
    body: dict[str, Any] = await response.json()
    return body


async def curl_upload(base_url: str, path: Path, multipart: bool) -> tuple[float, str]:
    """POST a file with curl, streamed from disk; returns curl's timing and the new id.

    curl, not aiohttp: a Python client would take CPU from the server on
    these two cores, and measure itself as much as the service.
    """
    if multipart:
        body = ["-F", f"file=@{path};type=video/mp4", f"{base_url}/file/"]
    else:
        # -T streams the file. curl appends its name to a URL ending in "/": use the alias without one.
        url = f"{base_url}/file?filename={path.name}"
        body = ["-T", str(path), "-X", "POST", "-H", "Content-Type: video/mp4", url]
    completed = await run_checked(
        ["curl", "--silent", "--show-error", "--max-time", str(int(UPLOAD_TIMEOUT_S)), "-H", "Expect:",
         "--write-out", "\\n%{http_code} %{time_total}", *body],
        UPLOAD_TIMEOUT_S + 10,
    )  # fmt: skip
    response, _, status_line = completed.stdout.rpartition("\n")
    status, seconds = status_line.split()
    if status != "200":
        raise ServiceError(f"upload of {path.name} -> {status}: {response[:300]}")
    return float(seconds), str(json.loads(response)["id"])
