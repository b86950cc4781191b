"""The processes under test (the real service and a trivial aiohttp app) and a client.

Each server runs in its own session, so stopping it can signal the whole
process group: the server, its forkserver, its workers and their ffmpeg.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO_ROOT / "config.toml"
HOST = "127.0.0.1"

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0
API_TIMEOUT = aiohttp.ClientTimeout(total=30)
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=900)


class ServiceError(Exception):
    """The service answered something other than what the benchmark needs."""


@dataclass(frozen=True)
class Server:
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
        VIDEOSVC_LOG_LEVEL="WARNING",
    )
    return env


@asynccontextmanager
async def running_service(env: Mapping[str, str], log_path: Path) -> AsyncIterator[Server]:
    port = free_port()
    args = [sys.executable, "-m", "videosvc", "run", "--config", str(CONFIG_PATH), "--host", HOST, "--port", str(port)]
    async with _running(args, env, port, log_path, ready_path="/health") as server:
        yield server


@asynccontextmanager
async def running_trivial(log_path: Path) -> AsyncIterator[Server]:
    port = free_port()
    args = [sys.executable, "-m", "bench.trivial_app", "--port", str(port)]
    async with _running(args, os.environ, port, log_path, ready_path="/health") as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _running(
    args: list[str], env: Mapping[str, str], port: int, log_path: Path, ready_path: str
) -> AsyncIterator[Server]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, f"http://{HOST}:{port}", log_path)
    try:
        await _wait_ready(server, ready_path)
        yield server
    finally:
        await asyncio.to_thread(_stop, process)


async def _wait_ready(server: Server, ready_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServiceError(f"{server.process.args[2]} exited at start-up: {_log_tail(server.log_path)}")
            try:
                async with session.get(server.base_url + ready_path) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise ServiceError(f"{server.base_url} not ready after {START_TIMEOUT_S:g} s: {_log_tail(server.log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group, then SIGKILL to whatever of the group is left."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process.pid, signal.SIGKILL)
    process.wait(STOP_GRACE_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is already gone


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
        """POST the file, streamed from disk by aiohttp (never read whole)."""
        with open(path, "rb") as f:
            if multipart:
                data: Any = aiohttp.FormData()
                data.add_field("file", f, filename=path.name, content_type="video/mp4")
                headers = {}
            else:
                data = f
                headers = {"Content-Type": "video/mp4", "Content-Disposition": f'attachment; filename="{path.name}"'}
            url = f"{self.base_url}/file/"
            async with self._session.post(url, data=data, headers=headers, timeout=UPLOAD_TIMEOUT) as response:
                body = await _json(response)
        return str(body["id"])

    async def resize(self, video_id: str, width: int, height: int) -> None:
        url = self.file_url(video_id)
        async with self._session.patch(url, json={"width": width, "height": height}, timeout=API_TIMEOUT) as response:
            await _json(response)

    async def info(self, video_id: str) -> dict[str, Any]:
        async with self._session.get(self.file_url(video_id), timeout=API_TIMEOUT) as response:
            return await _json(response)

    async def delete(self, video_id: str) -> None:
        async with self._session.delete(self.file_url(video_id), timeout=API_TIMEOUT) as response:
            await _json(response)

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
