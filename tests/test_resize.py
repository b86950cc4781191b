"""PATCH /file/{id}/: the job runs in the pool and GET reports how it ended."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from videosvc.config import usable_cpus

from .conftest import both_backends
from .helpers import (
    Client,
    Samples,
    ffmpeg_processes,
    get_video,
    leftovers,
    poll_until,
    probe_stored,
    rows,
    upload,
    wait_for_job,
    wait_until_running,
)


async def _patch(client: Client, video_id: str, body: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = await client.patch(f"/file/{video_id}/", json=body)
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((320, 240, True), (160, 120)),  # down, with audio
        ((320, 240, False), (640, 480)),  # up, no audio
        ((321, 243, True), (100, 76)),  # odd source size, other aspect
    ],
)
@both_backends
async def test_resize_replaces_the_video_with_one_of_the_asked_size(
    client: Client, samples: Samples, data_dir: Path, tools, source, target
) -> None:
    width, height, audio = source
    pix_fmt = "yuv444p" if width % 2 else "yuv420p"  # libx264 cannot write odd sizes in 4:2:0
    video_id = await upload(client, samples.video(width, height, audio=audio, pix_fmt=pix_fmt))

    status, body = await _patch(client, video_id, {"width": target[0], "height": target[1]})
    assert (status, body) == (200, {"success": True})
    done = await wait_for_job(client, video_id)

    assert done["processingSuccess"] is True, done
    assert done["processingError"] is None
    assert (done["width"], done["height"]) == target
    info = probe_stored(data_dir, video_id, tools)
    assert (info.width, info.height) == target
    assert info.video_codec == "h264"
    assert len(info.audio_codecs) == (1 if audio else 0)
    assert done["size"] == (data_dir / "videos" / f"{video_id}.mp4").stat().st_size
    assert leftovers(data_dir) == []


@both_backends
async def test_output_is_faststart_and_square_pixels(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    video_id = await upload(client, samples.video(320, 240))
    await _patch(client, video_id, {"width": 200, "height": 60})
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True
    data = (data_dir / "videos" / f"{video_id}.mp4").read_bytes()
    # +faststart: the index (moov) precedes the media data (mdat), so playback can start early.
    assert 0 < data.find(b"moov") < data.find(b"mdat")


@both_backends
async def test_rotated_source_displays_at_the_asked_size(
    client: Client, samples: Samples, data_dir: Path, tools
) -> None:
    video_id = await upload(client, samples.rotated(90))
    body = await get_video(client, video_id)
    assert (body["width"], body["height"]) == (240, 320)  # as displayed

    await _patch(client, video_id, {"width": 120, "height": 160})
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True
    info = probe_stored(data_dir, video_id, tools)
    assert (info.width, info.height) == (120, 160)


@both_backends
async def test_very_short_video_resizes(client: Client, samples: Samples, data_dir: Path, tools) -> None:
    video_id = await upload(client, samples.video(160, 120, duration_s=0.04))
    await _patch(client, video_id, {"width": 80, "height": 60})
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True
    assert probe_stored(data_dir, video_id, tools).width == 80


@both_backends
async def test_processing_is_true_while_the_job_runs_and_a_second_patch_is_409(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(x264_preset="veryslow")
    video_id = await upload(client, samples.video(1280, 720, duration_s=5))
    assert (await _patch(client, video_id, {"width": 1920, "height": 1080}))[0] == 200

    body = await get_video(client, video_id)
    assert body["processing"] is True
    assert body["processingSuccess"] is None
    status, body = await _patch(client, video_id, {"width": 640, "height": 360})
    assert status == 409
    assert "already" in body["error"]

    await wait_until_running(data_dir)

    async def progress() -> int | None:
        return (await get_video(client, video_id))["progress"]

    # ffmpeg reports progress twice a second.
    first = await poll_until(progress, "a progress report", 10, every_s=0.1, until=lambda p: p is not None)
    assert 0 <= first < 100


@both_backends
async def test_a_job_over_its_time_limit_fails_and_leaves_the_video_as_it_was(
    make_client, samples: Samples, data_dir: Path, tools
) -> None:
    client = await make_client(x264_preset="veryslow", job_timeout_s=1)
    source = samples.video(1280, 720, duration_s=5)
    video_id = await upload(client, source)
    await _patch(client, video_id, {"width": 1920, "height": 1080})

    done = await wait_for_job(client, video_id)
    assert done["processingSuccess"] is False
    assert "timed out" in done["processingError"]
    assert (done["width"], done["height"]) == (1280, 720)
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == source.read_bytes()
    assert probe_stored(data_dir, video_id, tools).width == 1280
    assert leftovers(data_dir) == []

    # A failed job does not block the next one.
    assert (await _patch(client, video_id, {"width": 64, "height": 36}))[0] == 200
    await wait_for_job(client, video_id)


async def test_patch_of_unknown_or_malformed_id_is_404(client: Client) -> None:
    for video_id in ("00000000-0000-4000-8000-000000000000", "not-a-uuid", "..%2F..%2Fetc"):
        status, body = await _patch(client, video_id, {"width": 64, "height": 64})
        assert status == 404, video_id
        assert "no video" in body["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"width": "640", "height": 360}, ["width", "integer"]),
        ({"width": 640.0, "height": 360}, ["width", "integer"]),
        ({"width": True, "height": 360}, ["width", "integer"]),
        ({"width": None, "height": 360}, ["width"]),
        ({"width": 641, "height": 360}, ["width", "even"]),
        ({"width": 20, "height": 360}, ["width", "greater than 20"]),
        ({"width": -2, "height": 360}, ["width", "greater than 20"]),
        ({"width": 640}, ["height", "required"]),
        ({"width": 640, "height": 360, "depth": 3}, ["depth", "unknown"]),
        ({"width": 8194, "height": 360}, ["width", "at most 8192"]),
        ([640, 360], ["JSON object"]),
        ("640x360", ["JSON object"]),
    ],
)
async def test_invalid_dimensions_are_400_naming_the_field_and_rule(
    client: Client, samples: Samples, data_dir: Path, body: object, words: list[str]
) -> None:
    video_id = await upload(client, samples.video())
    status, answer = await _patch(client, video_id, body)
    assert status == 400, answer
    for word in words:
        assert word in answer["error"], answer
    assert rows(data_dir, "SELECT * FROM jobs") == []


@pytest.mark.parametrize("raw", [b"", b"{", b"width=640&height=360", b"\xff\xfe", b"[" * 10_000])
async def test_body_that_is_not_json_is_400(client: Client, samples: Samples, raw: bytes) -> None:
    video_id = await upload(client, samples.video())
    response = await client.patch(
        f"/file/{video_id}/", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert "JSON" in (await response.json())["error"]


async def test_json_without_json_content_type_is_accepted(client: Client, samples: Samples) -> None:
    """`curl -d '{...}'` sends application/x-www-form-urlencoded; the body is still JSON."""
    video_id = await upload(client, samples.video())
    response = await client.patch(
        f"/file/{video_id}",
        data=b'{"width": 64, "height": 48}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 200, await response.text()
    assert (await wait_for_job(client, video_id))["processingSuccess"] is True


async def test_oversized_json_body_is_413(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video())
    response = await client.patch(
        f"/file/{video_id}/", data=b'{"width": 64, "height": 48, "pad": "' + b"x" * 100_000 + b'"}'
    )
    assert response.status == 413
    assert "error" in await response.json()


async def test_max_dimension_is_configurable(make_client, samples: Samples) -> None:
    client = await make_client(max_dimension=100)
    video_id = await upload(client, samples.video())
    status, body = await _patch(client, video_id, {"width": 102, "height": 50})
    assert status == 400
    assert "at most 100" in body["error"]


async def test_side_by_side_jobs_share_the_cpus_and_a_lone_job_gets_them_all(
    make_client, samples: Samples, data_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    cpus = usable_cpus()
    client = await make_client(workers=2, x264_preset="veryslow")
    ids = [await upload(client, samples.video(640, 360, duration_s=5)) for _ in range(2)]

    async def threads_of_running_ffmpeg(count: int) -> list[int]:
        def threads() -> list[int]:
            found = []
            for pid in ffmpeg_processes(data_dir):
                with contextlib.suppress(OSError):
                    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                    found.append(int(args[args.index("-threads") + 1]))
            return sorted(found)

        return await poll_until(threads, f"{count} ffmpeg process(es)", 30, until=lambda t: len(t) == count)

    assert (await client.patch(f"/file/{ids[0]}/", json={"width": 1280, "height": 720})).status == 200
    assert await threads_of_running_ffmpeg(1) == [cpus]  # alone: every CPU
    assert (await client.patch(f"/file/{ids[1]}/", json={"width": 1280, "height": 720})).status == 200
    # The second starts beside the first: half the CPUs (the first keeps what it started with).
    assert await threads_of_running_ffmpeg(2) == sorted([cpus, max(1, cpus // 2)])
    for video_id in ids:
        assert (await client.delete(f"/file/{video_id}/")).status in (200, 204)
