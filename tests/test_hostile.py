"""Hostile clients: each attack of the hardening review, reproduced against the real server.

Every test here is bounded: the limits are set low so that an attack that
once took minutes (or the host's memory) is refused in well under a second.
How fast the event loop stays during these attacks is measured by
`python -m bench.hostile`, not asserted here.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import aiohttp
import pytest

from videosvc.media.probe import Ceiling, ProbeError, ran_out_of_memory, run_bounded

from .helpers import Client, Samples, leftovers, rows, stored_ids, upload, wait_for_job
from .server import ServerProcess

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


def multipart(
    parts: list[tuple[str, bytes, str | None]], boundary: str = "b0undary", close: bool = True
) -> bytes:
    """A multipart/form-data body from (name, content, filename) parts."""
    out = b""
    for name, content, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def post(path: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


# -- 1. the event loop and multipart bodies


async def test_a_body_of_twenty_thousand_form_fields_is_refused_at_the_part_cap(
    client: Client, data_dir: Path
) -> None:
    body = multipart([(f"f{i}", b"x", None) for i in range(20_000)])
    assert len(body) > 1_000_000
    answer = await exchange(client.port, post("/file/", body, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 400
    assert "max_form_parts" in json_body(answer)["error"]
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []


async def test_form_bytes_beyond_the_file_are_capped_preamble_included(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(max_form_bytes=4096)
    video = samples.video().read_bytes()
    # A megabyte of empty lines before the first boundary, parsed line by line.
    preamble = b"\r\n" * 500_000 + multipart([("file", video, "a.mp4")])
    big_field = multipart([("note", b"n" * 10_000, None), ("file", video, "a.mp4")])
    after_file = multipart([("file", video, "a.mp4"), ("note", b"n" * 10_000, None)])
    for body in (preamble, big_field, after_file):
        answer = await exchange(client.port, post("/file/", body, "multipart/form-data; boundary=b0undary"))
        assert status_of(answer) == 400, answer[:300]
        assert "max_form_bytes" in json_body(answer)["error"]
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []
    # Fields within the budget, before and after the file, are fine.
    ok = multipart([("note", b"hello", None), ("file", video, "a.mp4"), ("tag", b"x", None)])
    answer = await exchange(client.port, post("/file/", ok, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 200, answer


async def test_a_multipart_body_without_its_closing_boundary_is_refused(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    body = multipart([("file", samples.video().read_bytes(), "a.mp4")], close=False)
    answer = await exchange(client.port, post("/file/", body, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 400
    assert "malformed" in json_body(answer)["error"]
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []


async def test_a_charset_field_aiohttp_cannot_take_is_a_400(client: Client, samples: Samples) -> None:
    body = multipart([("_charset_", b"x" * 40, None), ("file", samples.video().read_bytes(), "a.mp4")])
    answer = await exchange(client.port, post("/file/", body, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 400 and "malformed" in json_body(answer)["error"]


async def test_a_second_file_part_or_a_nested_multipart_is_refused(client: Client, samples: Samples) -> None:
    video = samples.video().read_bytes()
    two = multipart([("file", video, "a.mp4"), ("other", video, "b.mp4")])
    answer = await exchange(client.port, post("/file/", two, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 400 and "more than one file" in json_body(answer)["error"]
    nested = (
        b"--outer\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n"
        + multipart([("file", video, "a.mp4")], boundary="inner")
        + b"\r\n--outer--\r\n"
    )
    answer = await exchange(client.port, post("/file/", nested, "multipart/form-data; boundary=outer"))
    assert status_of(answer) == 400 and "nested" in json_body(answer)["error"]


async def test_a_body_in_tiny_chunks_is_refused(client: Client, samples: Samples, data_dir: Path) -> None:
    """1-byte chunks make every byte a parser callback: the attack that held the loop longest."""
    data = samples.video().read_bytes()
    body = b"".join(b"1\r\n" + data[i : i + 1] + b"\r\n" for i in range(len(data))) + b"0\r\n\r\n"
    head = (
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = await exchange(client.port, head + body)
    assert status_of(answer) == 400
    assert "chunks smaller than" in json_body(answer)["error"]
    await asyncio.sleep(0.2)
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []


# -- 2. resizes as memory and time bombs


async def test_a_resize_over_the_output_pixel_limit_is_refused_at_patch(
    client: Client, samples: Samples
) -> None:
    video_id = await upload(client, samples.video(64, 64, audio=False))
    response = await client.patch(f"/file/{video_id}/", json={"width": 8192, "height": 8192})
    assert response.status == 400
    assert "max_output_pixels" in (await response.json())["error"]
    assert (await (await client.get(f"/file/{video_id}/")).json())["processing"] is False


async def test_work_is_pixels_times_frames_and_a_high_frame_rate_clip_cannot_exceed_it(
    make_client, samples: Samples, data_dir: Path
) -> None:
    clip = samples.make(
        "fast.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=64x64:rate=1000:duration=2", "-c:v", "libx264",
         "-preset", "ultrafast"],
    )  # fmt: skip
    # 2,000 frames: a 1280x720 resize is 1.8e9 pixel-frames, a 64x64 one 8.2e6.
    client = await make_client(max_job_pixel_frames=100_000_000)
    video_id = await upload(client, clip)
    assert rows(data_dir, "SELECT frame_count FROM videos") == [(2000,)]
    response = await client.patch(f"/file/{video_id}/", json={"width": 1280, "height": 720})
    assert response.status == 400
    message = (await response.json())["error"]
    assert "2000 frames" in message and "max_job_pixel_frames" in message
    response = await client.patch(f"/file/{video_id}/", json={"width": 64, "height": 64})
    assert response.status == 200
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True


async def test_rows_stored_before_frame_counts_are_counted_at_their_first_patch(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(max_job_pixel_frames=100_000_000)
    video_id = await upload(client, samples.video(64, 64, duration_s=2, audio=False))  # 50 frames
    # As a row written by an earlier version (no GET has cached it yet).
    with sqlite3.connect(data_dir / "videosvc.sqlite3") as db:
        db.execute("UPDATE videos SET frame_count = NULL")
    # 1280x720 x 50 = 4.6e7: allowed once the frames are known.
    response = await client.patch(f"/file/{video_id}/", json={"width": 1280, "height": 720})
    assert response.status == 200, await response.text()
    assert rows(data_dir, "SELECT frame_count FROM videos") == [(50,)]


async def test_ffmpeg_over_its_memory_ceiling_fails_the_job_with_the_reason(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(ffmpeg_max_memory_bytes=64 * 1024**2)
    video_id = await upload(client, samples.video(64, 64, duration_s=0.2, audio=False))
    before = (data_dir / "videos" / f"{video_id}.mp4").read_bytes()
    response = await client.patch(f"/file/{video_id}/", json={"width": 4096, "height": 2160})
    assert response.status == 200
    done = await wait_for_job(client, video_id)
    assert done["processingSuccess"] is False
    assert "out of memory" in done["processingError"] and "ffmpeg_max_memory_bytes" in done["processingError"]
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == before
    assert leftovers(data_dir) == []


async def test_an_ffmpeg_that_hangs_after_a_failed_allocation_is_stopped(
    make_client, samples: Samples, tools, tmp_path: Path
) -> None:
    """Some ffmpeg builds hang once an allocation fails (seen with lavfi sources): the job must not wait
    out job_timeout_s. A stand-in ffmpeg prints what a failed allocation prints, then hangs."""
    hanging = tmp_path / "ffmpeg"
    hanging.write_text(
        "#!/bin/sh\n"
        'case "$*" in *-progress*) echo "malloc of size 1234567 failed" >&2; exec sleep 3600;; esac\n'
        f'exec {tools.ffmpeg} "$@"\n'
    )
    hanging.chmod(0o755)
    client = await make_client(ffmpeg_path=str(hanging), ffprobe_path=str(tools.ffprobe), job_timeout_s=600)
    video_id = await upload(client, samples.video(64, 64, audio=False))
    assert (await client.patch(f"/file/{video_id}/", json={"width": 128, "height": 128})).status == 200
    done = await wait_for_job(client, video_id, timeout_s=15)
    assert done["processingSuccess"] is False and "out of memory" in done["processingError"]


async def test_the_job_queue_is_capped_overall_and_per_key_with_retry_after(
    make_client, samples: Samples
) -> None:
    client = await make_client(
        workers=1, x264_preset="veryslow", max_queued_jobs=3, max_queued_jobs_per_key=2, api_keys=("a", "b")
    )
    as_a, as_b = {"Authorization": "Bearer a"}, {"Authorization": "Bearer b"}
    path = samples.video(640, 360, duration_s=3)
    ids = []
    for _ in range(4):
        with path.open("rb") as f:
            response = await client.post("/file/", data=f, headers={**as_a, "Content-Type": "video/mp4"})
        ids.append((await response.json())["id"])
    size = {"width": 1280, "height": 720}
    assert (await client.patch(f"/file/{ids[0]}/", json=size, headers=as_a)).status == 200
    assert (await client.patch(f"/file/{ids[1]}/", json=size, headers=as_a)).status == 200
    refused = await client.patch(f"/file/{ids[2]}/", json=size, headers=as_a)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "max_queued_jobs_per_key" in (await refused.json())["error"]
    assert (await client.patch(f"/file/{ids[2]}/", json=size, headers=as_b)).status == 200
    full = await client.patch(f"/file/{ids[3]}/", json=size, headers=as_b)
    assert full.status == 429 and "max_queued_jobs" in (await full.json())["error"]
    # A refused PATCH left no job behind.
    assert (await (await client.get(f"/file/{ids[3]}/", headers=as_b)).json())["processing"] is False
    for video_id in ids[:3]:
        assert (await client.delete(f"/file/{video_id}/", headers=as_a)).status == 200
    assert (await client.patch(f"/file/{ids[3]}/", json=size, headers=as_a)).status == 200


async def test_a_job_that_would_leave_less_than_min_free_bytes_fails_cleanly(
    make_client, samples: Samples, small_disk: Path
) -> None:
    data_dir = small_disk / "data"
    source = samples.video(320, 240, duration_s=2, audio=False)
    # What is free once the upload is stored, less 1 MB: the resized video must not eat into it.
    free_after_upload = shutil.disk_usage(small_disk).free - source.stat().st_size
    client = await make_client(data_dir=data_dir, min_free_bytes=free_after_upload - 1_000_000, x264_crf=0)
    video_id = await upload(client, source)
    response = await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1440})
    assert response.status == 200
    done = await wait_for_job(client, video_id)
    assert done["processingSuccess"] is False
    assert "min_free_bytes" in done["processingError"]
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == source.read_bytes()
    assert leftovers(data_dir) == []


# -- 3. the upload probe


def _with_coded_size(path: Path, out: Path, width: int, height: int) -> Path:
    """A copy whose index claims width x height (tkhd and the sample entry): ffprobe would allocate that."""
    data = bytearray(path.read_bytes())
    entry = data.find(b"avc1", data.find(b"stsd"))
    assert entry > 0
    data[entry + 28 : entry + 32] = width.to_bytes(2, "big") + height.to_bytes(2, "big")
    tkhd = data.find(b"tkhd")
    data[tkhd + 4 + 76 : tkhd + 4 + 84] = (width << 16).to_bytes(4, "big") + (height << 16).to_bytes(4, "big")
    out.write_bytes(data)
    return out


async def test_an_upload_over_the_input_pixel_limit_is_refused_before_any_probe(
    make_client, samples: Samples, data_dir: Path, tmp_path: Path
) -> None:
    client = await make_client()
    bomb = _with_coded_size(samples.video(64, 64, audio=False), tmp_path / "bomb.mp4", 16000, 16000)
    with bomb.open("rb") as f:
        response = await client.post("/file/", data=f, headers={"Content-Type": "video/mp4"})
    assert response.status == 415
    message = (await response.json())["error"]
    assert "16000x16000" in message and "max_input_pixels" in message
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []


async def test_an_upload_with_too_many_tracks_is_refused(
    make_client, samples: Samples, tools, tmp_path: Path
) -> None:
    source = samples.video(64, 64, audio=False)
    four = tmp_path / "four.mp4"
    await asyncio.to_thread(
        subprocess.run,
        [tools.ffmpeg, "-v", "error", "-i", str(source), *["-map", "0:v"] * 4, "-c", "copy", str(four)],
        check=True,
    )
    client = await make_client(max_input_streams=3)
    with four.open("rb") as f:
        response = await client.post("/file/", data=f, headers={"Content-Type": "video/mp4"})
    assert response.status == 415
    assert "4 tracks" in (await response.json())["error"]


def test_every_probe_runs_under_a_memory_and_a_time_ceiling(tools, samples: Samples) -> None:
    """The runner of every probe, on a real ffmpeg that allocates 8000x8000 frames or runs forever.

    (ffprobe reads an upload's parameters without decoding a frame, so no small file makes it
    allocate much once the index check has passed; the ceiling is there for the file that would.)
    """
    greedy = [tools.ffmpeg, "-v", "error", "-i", str(samples.video()), "-frames:v", "3",
              "-vf", "scale=8000:8000", "-f", "null", "-"]  # fmt: skip
    assert run_bounded(greedy, Ceiling(timeout_s=60, max_memory_bytes=2 * 1024**3)).returncode == 0
    capped = run_bounded(greedy, Ceiling(timeout_s=60, max_memory_bytes=64 * 1024**2))
    assert capped.returncode != 0 and ran_out_of_memory(capped.stderr), capped.stderr[-300:]
    endless = [tools.ffmpeg, "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2", "-f", "null", "-"]
    with pytest.raises(ProbeError, match=r"longer than 0\.5 s"):
        run_bounded(endless, Ceiling(timeout_s=0.5, max_memory_bytes=512 * 1024**2))


async def test_slow_probes_wait_on_their_own_executor_and_delay_nothing_else(
    make_client, samples: Samples, tools, tmp_path: Path
) -> None:
    """Two uploads whose probes take seconds (a slow ffprobe), while a DELETE goes on."""
    assert tools.ffprobe
    slow = tmp_path / "slow-ffprobe"
    slow.write_text(f'#!/bin/sh\nsleep 3\nexec {tools.ffprobe} "$@"\n')
    slow.chmod(0o755)
    client = await make_client(ffprobe_path=str(slow), probe_concurrency=1)
    path = samples.video(160, 120, audio=False)
    # A video stored before the slow probes start (it also waits for one slow probe).
    victim = await upload(client, path)
    probes = [
        asyncio.create_task(
            client.post("/file/", data=path.read_bytes(), headers={"Content-Type": "video/mp4"})
        )
        for _ in range(2)
    ]
    await asyncio.sleep(0.5)  # both are now waiting on the probe executor (one runs, one queues)
    response = await client.delete(f"/file/{victim}/")
    assert response.status == 200
    assert not any(task.done() for task in probes), "DELETE waited behind the probes"
    for task in probes:
        assert (await task).status == 200


# -- 4. connections


async def test_slowloris_connections_get_408_at_the_header_deadline(make_client) -> None:
    client = await make_client(header_timeout_s=0.5)
    streams = [await asyncio.open_connection("127.0.0.1", client.port) for _ in range(50)]
    for _, writer in streams:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 10) for r, _ in streams))
    for (_, writer), answer in zip(streams, answers, strict=True):
        writer.close()  # read() returned: the server closed the connection after its answer
        assert status_of(answer) == 408
        assert "header_timeout_s" in json_body(answer)["error"]


async def test_each_head_on_a_kept_alive_connection_has_a_deadline_of_its_own(make_client) -> None:
    client = await make_client(header_timeout_s=2.0, keepalive_timeout_s=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    await asyncio.sleep(1.5)
    # A second head, sent slowly: past the first head's deadline (2.0 s), 1 s inside its own.
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await asyncio.sleep(1.0)
    writer.write(b"\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert status_of(head) == 200
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    # A third that never ends is cut at its own deadline.
    writer.write(b"GET /health HTTP/1.1\r\nX-Slow: ")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert status_of(answer) == 408


async def test_idle_keep_alive_connections_are_closed(make_client) -> None:
    client = await make_client(keepalive_timeout_s=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert status_of(head) == 200
    # The body, then nothing more is sent: the server closes the connection.
    rest = await asyncio.wait_for(reader.read(), 10)
    assert rest.startswith(b"{") and reader.at_eof()
    writer.close()


async def test_a_connection_that_never_sends_a_byte_is_closed_silently(make_client) -> None:
    client = await make_client(header_timeout_s=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_headers_over_max_header_bytes_get_431(make_client) -> None:
    client = await make_client(max_header_bytes=16_384)
    fat = "".join(f"X-Pad-{i}: {'a' * 4000}\r\n" for i in range(5))  # each header within aiohttp's own limits
    answer = await exchange(client.port, f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{fat}\r\n".encode())
    assert status_of(answer) == 431
    assert "max_header_bytes" in json_body(answer)["error"]
    # A head that never ends is cut at the cap too, not buffered.
    endless = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"b" * 8000 + b"\r\n"
    answer = await exchange(client.port, endless * 3)
    assert status_of(answer) == 431
    # Below the cap, the same request is served.
    answer = await exchange(
        client.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert status_of(answer) == 200


async def test_connections_past_max_connections_are_refused_at_once(make_client, caplog) -> None:
    client = await make_client(max_connections=10)
    held = [await asyncio.open_connection("127.0.0.1", client.port) for _ in range(10)]
    await asyncio.sleep(0.1)
    refused = await asyncio.gather(*(exchange(client.port, b"GET /health HTTP/1.1\r\n") for _ in range(40)))
    for answer in refused:
        assert status_of(answer) == 503
        assert "max_connections" in json_body(answer)["error"]
    lines = [r for r in caplog.records if "refused a connection" in r.getMessage()]
    assert 1 <= len(lines) <= 2, "refusals are logged at most once a second"
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.1)
    assert (await client.get("/health")).status == 200


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_at_the_open_file_limit_connections_are_refused_cleanly_and_uploads_still_work(
    data_dir: Path, samples: Samples
) -> None:
    server = ServerProcess(data_dir, max_connections=1000, header_timeout_s=30)
    # A low open-file limit for the server alone: 300 files, so max_connections is lowered to 86.
    server.prefix = ["prlimit", "--nofile=300:300", "--"]
    with server:
        assert "max_connections lowered from 1000 to 86" in server.log()
        held = []
        for _ in range(200):
            held.append(await asyncio.open_connection("127.0.0.1", server.port))
        await asyncio.sleep(0.3)
        assert (
            status_of(await exchange(server.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")) == 503
        )
        for _, writer in held[:20]:
            writer.close()
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession(server.url) as session:
            video_id = await upload(session, samples.video())  # type: ignore[arg-type]
            assert (await session.get(f"/file/{video_id}")).status == 200
        for _, writer in held[20:]:
            writer.close()
    log = server.log()
    assert "Traceback" not in log and "Too many open files" not in log
    assert log.count("refused a connection") <= 5


async def test_four_hundred_fat_header_connections_cost_little_memory(data_dir: Path) -> None:
    # One address, as several clients behind one proxy would be: the per-client cap raised to match.
    with ServerProcess(data_dir, header_timeout_s=60, max_connections_per_client=1000) as server:
        assert server.process is not None
        before = _rss_kb(server.process.pid)
        streams = []
        for _ in range(400):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            # Just under max_header_bytes, never finished: each is held until its deadline.
            writer.write(
                b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"c" * 8000 + b"\r\n" * 1
            )
            writer.write(b"".join(b"X-Pad%d: %s\r\n" % (i, b"d" * 7000) for i in range(3)))
            streams.append((reader, writer))
        await asyncio.gather(*(w.drain() for _, w in streams))
        await asyncio.sleep(1.0)
        grown_mb = (_rss_kb(server.process.pid) - before) / 1024
        for _, writer in streams:
            writer.close()
        assert grown_mb < 100, f"{grown_mb:.0f} MB for 400 connections"
        # Heads far over the cap (450 KB each) are cut at it, not buffered.
        before = _rss_kb(server.process.pid)
        fat = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
            b"X-P%d: %s\r\n" % (i, b"e" * 7000) for i in range(64)
        )
        streams = []
        for _ in range(400):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(fat)
            streams.append((reader, writer))
        await asyncio.sleep(1.0)
        grown_mb = (_rss_kb(server.process.pid) - before) / 1024
        for _, writer in streams:
            writer.close()
        assert grown_mb < 100, f"{grown_mb:.0f} MB for 400 over-cap connections"


# -- 5. content codings


async def test_content_coded_bodies_are_refused_not_decompressed(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    bomb = gzip.compress(b"\0" * 20_000_000)  # 20 MB behind 20 KB
    response = await client.post(
        "/file/", data=bomb, headers={"Content-Type": "video/mp4", "Content-Encoding": "gzip"}
    )
    assert response.status == 415
    assert "gzip" in (await response.json())["error"]
    video_id = await upload(client, samples.video())
    response = await client.patch(
        f"/file/{video_id}/",
        data=gzip.compress(b'{"width": 64, "height": 48}'),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 415
    part = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
        b"Content-Encoding: gzip\r\n\r\n" + bomb + b"\r\n--b0undary--\r\n"
    )
    answer = await exchange(client.port, post("/file/", part, "multipart/form-data; boundary=b0undary"))
    assert status_of(answer) == 415 and "gzip" in json_body(answer)["error"]
    assert stored_ids(data_dir) == [video_id] and leftovers(data_dir) == []


# -- 6. stalls


async def _stalled(port: int, head_and_some: bytes) -> bytes:
    """Send the start of a request, then nothing: what does the server answer?"""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head_and_some)
    try:
        return await read_response(reader)
    finally:
        writer.close()


async def test_every_stalled_body_gets_408(make_client, samples: Samples, data_dir: Path) -> None:
    # The idle timeout is long: the form fields' own deadline (body_timeout_s) must cut them off.
    client = await make_client(body_timeout_s=0.5, upload_idle_timeout_s=30, header_timeout_s=0.5)
    video_id = await upload(client, samples.video())
    inside_a_field = (
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        b'Content-Length: 100000\r\n\r\n--b0undary\r\nContent-Disposition: form-data; name="note"\r\n\r\nsome'
    )
    answer = await _stalled(client.port, inside_a_field)
    assert status_of(answer) == 408 and "body_timeout_s" in json_body(answer)["error"]
    patch_head = f"PATCH /file/{video_id}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40\r\n\r\n".encode()
    answer = await _stalled(client.port, patch_head + b'{"width": 6')
    assert status_of(answer) == 408 and "body_timeout_s" in json_body(answer)["error"]
    answer = await _stalled(client.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert status_of(answer) == 408
    assert leftovers(data_dir) == []


# -- 7. no 500s, and quiet logs


async def test_a_five_thousand_digit_integer_is_a_400(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video())
    response = await client.patch(f"/file/{video_id}/", data=b'{"width": ' + b"9" * 5000 + b', "height": 64}')
    assert response.status == 400
    assert "JSON" in (await response.json())["error"]


@pytest.mark.parametrize("form", ["raw", "multipart"])
async def test_a_client_that_goes_away_mid_upload_is_one_log_line_and_no_500(
    make_client, samples: Samples, data_dir: Path, caplog, form: str
) -> None:
    caplog.set_level(logging.INFO)
    client = await make_client()
    video = samples.video().read_bytes()
    if form == "raw":
        request = post("/file/", video, "video/mp4")
    else:
        request = post(
            "/file/", multipart([("file", video, "a.mp4")]), "multipart/form-data; boundary=b0undary"
        )
    _, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(request[: len(request) // 2])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()  # a reset, as when a phone loses its network
    await asyncio.sleep(0.5)
    messages = [(r.levelname, r.name, r.getMessage()) for r in caplog.records]
    assert [m for m in messages if "went away" in m[2]], messages
    assert not [m for m in messages if m[0] == "ERROR" or "Traceback" in m[2]], messages
    access = [m[2] for m in messages if m[1] == "videosvc.access"]
    assert access and all(" 500 " not in line for line in access), access
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
        + b"\r\n",
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
    ],
    ids=["nul-in-header", "long-line", "many-headers", "bad-content-length"],
)
async def test_a_request_the_parser_rejects_is_a_json_400_and_one_warning(
    client: Client, caplog, head: bytes
) -> None:
    caplog.clear()
    answer = await exchange(client.port, head)
    assert status_of(answer) == 400
    assert "malformed" in json_body(answer)["error"]
    assert b"server: videosvc\r\n" in answer.lower()
    records = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelname == "WARNING" and records[0].exc_info is None


# -- 8. SIGTERM with uploads in flight


async def test_uploads_still_running_at_the_end_of_the_grace_get_503_and_are_logged(
    data_dir: Path, samples: Samples
) -> None:
    server = ServerProcess(data_dir, shutdown_grace_s=1, upload_idle_timeout_s=30).start()
    video = samples.video(640, 360, duration_s=2).read_bytes()
    streams = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\nExpect: 100-continue\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(video)
        )
        assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)) == 100
        writer.write(video[:1000])  # then trickle: far from done when the signal comes
        streams.append((reader, writer))
    await asyncio.sleep(0.3)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    answers = await asyncio.gather(*(read_response(r, 15) for r, _ in streams))
    for (_, writer), answer in zip(streams, answers, strict=True):
        writer.close()
        assert status_of(answer) == 503
        assert "shutting down" in json_body(answer)["error"]
    assert server.stop(timeout_s=15) == 0
    assert server.log().count("POST /file/ 503") == 20
    assert leftovers(data_dir) == [] and stored_ids(data_dir) == []


# -- 9. smaller things


async def test_nothing_leaks_versions_free_bytes_or_long_echoes(make_client, samples: Samples) -> None:
    client = await make_client(min_free_bytes=10**18)  # no disk is that large: every upload is a 507
    with samples.video().open("rb") as f:
        response = await client.post("/file/", data=f, headers={"Content-Type": "video/mp4"})
    assert response.status == 507
    message = (await response.json())["error"]
    assert "not enough free" in message and str(10**18) not in message
    assert not re.search(r"\d{7,}", message.replace(str(samples.video().stat().st_size), "")), message
    assert response.headers["Server"] == "videosvc"
    long_id = "x" * 8000
    response = await client.get(f"/file/{long_id}/")
    assert response.status == 404 and len((await response.json())["error"]) < 200
    response = await client.get("/" + "y" * 8000)
    assert response.status == 404 and len((await response.json())["error"]) < 200


async def test_display_names_lose_c1_and_bidi_controls(client: Client, samples: Samples) -> None:
    name = "evil\x85\u202egnp.mp4\u200b"
    response = await client.post(
        "/file/",
        params={"filename": name},
        data=samples.video().read_bytes(),
        headers={"Content-Type": "video/mp4"},
    )
    video_id = (await response.json())["id"]
    shown = (await (await client.get(f"/file/{video_id}/")).json())["filename"]
    assert shown == "evil__gnp.mp4_"


async def test_expect_continue_with_an_oversized_length_is_413_at_once(make_client, data_dir: Path) -> None:
    client = await make_client(max_upload_bytes=1000)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # no body was sent: no 100 first
    writer.close()
    assert status_of(head) == 413
    assert leftovers(data_dir) == []


async def test_expect_continue_without_a_key_is_401_at_once(make_client) -> None:
    client = await make_client(api_keys=("k",))
    answer = await exchange(
        client.port,
        b"POST /file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5000\r\n\r\n",
    )
    assert status_of(answer) == 401


async def test_head_health_is_answered(client: Client) -> None:
    response = await client.head("/health")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
