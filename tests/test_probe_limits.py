"""The upload probe under attack: decoder bombs, dozens of tracks, runaway probes, slow probes.

Every upload is probed before it is stored; these uploads would make the probe allocate
gigabytes, run forever, or hold up other requests (docs/limits.md). The limits are set
low, so that each attack is refused quickly.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from videosvc.media.probe import Ceiling, ProbeError, ran_out_of_memory, run_bounded

from .helpers import Samples, leftovers, stored_ids, upload


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
