"""Resizes as memory and time bombs: output pixels, pixel-frames, ffmpeg's memory, the queue, the disk.

The attacks of the hardening review on resize jobs, reproduced against the real server and
real ffmpeg (docs/limits.md). The limits are set low, so that a resize that would take
minutes or the host's memory is refused at PATCH, or fails early with its reason.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from .helpers import Client, Samples, get_video, leftovers, rows, upload, wait_for_job


async def test_a_resize_over_the_output_pixel_limit_is_refused_at_patch(
    client: Client, samples: Samples
) -> None:
    video_id = await upload(client, samples.video(64, 64, audio=False))
    response = await client.patch(f"/file/{video_id}/", json={"width": 8192, "height": 8192})
    assert response.status == 400
    assert "max_output_pixels" in (await response.json())["error"]
    assert (await get_video(client, video_id))["processing"] is False


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
    assert (await get_video(client, ids[3], **as_b))["processing"] is False
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
