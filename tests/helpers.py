"""Helpers shared by the tests: sample videos, polling, raw HTTP, looking at the data dir."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from videosvc.media.probe import MediaInfo, Toolchain, probe

JOB_WAIT_S = 60.0

Client = TestClient  # type: ignore[type-arg]


class Samples:
    """Small videos made on demand with lavfi, cached for the session."""

    def __init__(self, folder: Path, tools: Toolchain) -> None:
        self.folder = folder
        self.tools = tools

    def make(self, name: str, args: list[str]) -> Path:
        """`ffmpeg <args> <name>`, once per session."""
        path = self.folder / name
        if not path.exists():
            subprocess.run(
                [self.tools.ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *args, str(path)],
                check=True,
                timeout=120,
            )
        return path

    def video(
        self,
        width: int = 320,
        height: int = 240,
        duration_s: float = 1.0,
        audio: bool = True,
        pix_fmt: str = "yuv420p",
        preset: str = "ultrafast",
    ) -> Path:
        name = f"v_{width}x{height}_{duration_s}_{'a' if audio else 'n'}_{pix_fmt}_{preset}.mp4"
        args = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=25:duration={duration_s}"]
        if audio:
            args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={duration_s}", "-c:a", "aac"]
        args += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", pix_fmt, "-shortest"]
        return self.make(name, args)

    def noisy(self, duration_s: float = 10.0) -> Path:
        """A large video (about 5.7 MB a second): noise does not compress, so a download takes a while."""
        return self.make(
            f"noisy_{duration_s}.mp4",
            ["-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={duration_s},noise=alls=60:allf=t",
             "-f", "lavfi", "-i", f"sine=duration={duration_s}", "-c:v", "libx264", "-preset", "ultrafast",
             "-crf", "12", "-c:a", "aac", "-shortest"],
        )  # fmt: skip

    def rotated(self, degrees: int = 90) -> Path:
        """320x240 frames that display as 240x320 (a display matrix, as phones write)."""
        base = self.video(320, 240, 1.0)
        path = self.folder / f"rotated_{degrees}.mp4"
        if not path.exists():
            # ffmpeg >= 6 has -display_rotation; 5.x takes the old `rotate` tag on a copy.
            newer = [
                self.tools.ffmpeg,
                "-v",
                "error",
                "-y",
                "-display_rotation",
                str(degrees),
                "-i",
                str(base),
            ]
            older = [
                self.tools.ffmpeg,
                "-v",
                "error",
                "-y",
                "-i",
                str(base),
                "-metadata:s:v:0",
                f"rotate={degrees}",
            ]
            for cmd in (newer, older):
                if subprocess.run([*cmd, "-c", "copy", str(path)], capture_output=True).returncode == 0:
                    break
        if probe(str(path), self.tools).rotation == 0:
            pytest.skip("this ffmpeg cannot write a display matrix")
        return path

    def audio_only(self) -> Path:
        return self.make(
            "audio_only.m4a", ["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", "-f", "mp4"]
        )

    def matroska(self) -> Path:
        return self.make(
            "video.mkv", ["-f", "lavfi", "-i", "testsrc2=size=160x120:duration=0.5", "-c:v", "libx264"]
        )

    def truncated(self) -> Path:
        path = self.folder / "truncated.mp4"
        if not path.exists():
            data = self.video().read_bytes()
            path.write_bytes(data[: len(data) // 2])
        return path


async def chunked(data: bytes, size: int, pause_s: float = 0.0) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked transfer encoding), optionally slow."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        if pause_s:
            await asyncio.sleep(pause_s)


async def upload(client: Client, path: Path, filename: str | None = None) -> str:
    with path.open("rb") as f:  # streamed: aiohttp refuses large bytes objects in forms
        form = FormData()
        form.add_field("file", f, filename=filename or path.name, content_type="video/mp4")
        response = await client.post("/file/", data=form)
        body = await response.json()
    assert response.status == 200, body
    return str(body["id"])


async def get_video(client: Client, video_id: str, **headers: str) -> dict[str, Any]:
    """GET /file/{id}/: the video's JSON, which must come with a 200."""
    response = await client.get(f"/file/{video_id}/", headers=headers)
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


T = TypeVar("T")


async def poll_until(
    condition: Callable[[], T | Awaitable[T]],
    what: str,
    timeout_s: float = JOB_WAIT_S,
    *,
    every_s: float = 0.05,
    until: Callable[[T], object] = bool,
) -> T:
    """Call `condition` (sync or async) every `every_s` until `until` holds of its value (by
    default: until the value is truthy); return that value.

    Past `timeout_s`, an AssertionError says what was awaited and the last value seen
    (unless that was only None or a bool).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if until(value):  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            seen = "" if value is None or isinstance(value, bool) else f"; last seen: {value!r:.2000}"
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{seen}")
        await asyncio.sleep(every_s)


async def wait_for_job(client: Client, video_id: str, timeout_s: float = JOB_WAIT_S) -> dict[str, Any]:
    """Poll GET until processing is false; return the last body."""
    return await poll_until(
        lambda: get_video(client, video_id),
        f"the job on {video_id} to end",
        timeout_s,
        until=lambda body: not body["processing"],
    )


async def wait_until_running(data_dir: Path, timeout_s: float = JOB_WAIT_S) -> None:
    """Until ffmpeg of some job has written its first progress report."""
    await poll_until(
        lambda: any((data_dir / "jobs").glob("*/progress")), "a job to start", timeout_s, every_s=0.02
    )


def probe_stored(data_dir: Path, video_id: str, tools: Toolchain) -> MediaInfo:
    return probe(str(data_dir / "videos" / f"{video_id}.mp4"), tools)


def leftovers(data_dir: Path) -> list[str]:
    """Anything under tmp/ or jobs/: there should be nothing once requests end."""
    return sorted(
        str(p.relative_to(data_dir)) for folder in ("tmp", "jobs") for p in (data_dir / folder).glob("*")
    )


def rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data_dir / "videosvc.sqlite3") as db:
        return db.execute(sql).fetchall()


def stored_ids(data_dir: Path) -> list[str]:
    return sorted(p.stem for p in (data_dir / "videos").glob("*.mp4"))


def original_ids(data_dir: Path) -> list[str]:
    return sorted(p.stem for p in (data_dir / "originals").glob("*.mp4"))


def ssim(tools: Toolchain, a: Path, b: Path) -> float:
    """SSIM of two videos of one size (ffmpeg's ssim filter, all frames)."""
    out = subprocess.run(
        [tools.ffmpeg, "-hide_banner", "-nostdin", "-i", str(a), "-i", str(b), "-lavfi", "ssim",
         "-f", "null", "-"],
        capture_output=True, check=True, timeout=120,
    ).stderr.decode()  # fmt: skip
    return float(out.rsplit("All:", 1)[1].split()[0])


def ffmpeg_processes(data_dir: Path) -> list[int]:
    """Pids of live ffmpeg processes working on files under `data_dir` (Linux /proc)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        is_ffmpeg = bool(args) and "ffmpeg" in Path(args[0].decode(errors="replace")).name
        if state != "Z" and is_ffmpeg and any(str(data_dir).encode() in arg for arg in args):
            found.append(int(proc.name))
    return found


def decoder_processes(of: int | None = None) -> list[int]:
    """Pids of live thumbnail decoders (their process name, `videosvc-thumbs`): this machine's,
    or those descended from process `of` (a server's: under its forkserver)."""
    found, parents = [], {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            name = (proc / "comm").read_text().strip()
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(proc.name)] = int(fields[1])
        if name == "videosvc-thumbs" and fields[0] != "Z":
            found.append(int(proc.name))
    if of is None:
        return found

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == of:
                return True
        return False

    return [pid for pid in found if descends(pid)]


# -- raw HTTP over a socket: what a hostile client sends is not what aiohttp's client would


async def read_response(reader: asyncio.StreamReader, timeout_s: float = 10.0) -> bytes:
    """One response, head and body (by its Content-Length), skipping any 100 Continue."""
    async with asyncio.timeout(timeout_s):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 100 "):
                break
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        return head + (await reader.readexactly(int(length[1])) if length else b"")


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data`; the server's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert match, answer[:200]
    return int(match[1])


def json_body(answer: bytes) -> dict[str, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), head
    parsed: dict[str, str] = json.loads(body)
    return parsed
