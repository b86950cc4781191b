"""Honest job state: GET shows the newest job, and processingSuccess is null until its outcome is known."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest

from videosvc.store.storage import Storage

from .conftest import both_backends
from .helpers import Client, Samples, get_video, leftovers, poll_until, upload, wait_for_job


async def _until(client: Client, video_id: str, state: str) -> dict[str, Any]:
    return await poll_until(
        lambda: get_video(client, video_id),
        f"the job to be {state}",
        30,
        until=lambda body: body["job"] and body["job"]["state"] == state,
    )


async def test_no_job_before_the_first_resize(client: Client, samples: Samples) -> None:
    body = await get_video(client, await upload(client, samples.video()))
    assert (body["job"], body["processing"], body["processingSuccess"], body["progress"]) == (
        None,
        False,
        None,
        None,
    )


async def test_a_new_job_hides_the_last_outcome_until_its_own_is_known(make_client, samples: Samples) -> None:
    client = await make_client(workers=1, x264_preset="veryslow")
    video_id = await upload(client, samples.video(1280, 720, duration_s=5))
    blocker = await upload(client, samples.video(1280, 720, duration_s=5))
    await client.patch(f"/file/{video_id}/", json={"width": 64, "height": 36})
    first = await wait_for_job(client, video_id)
    assert first["processingSuccess"] is True
    assert first["job"]["state"] == "succeeded" and first["job"]["progress"] == 100
    assert first["job"]["startedAt"] and first["job"]["finishedAt"] >= first["job"]["startedAt"]

    # The only worker is busy with another video: the new job waits in the queue.
    await client.patch(f"/file/{blocker}/", json={"width": 1920, "height": 1080})
    await _until(client, blocker, "running")
    await client.patch(f"/file/{video_id}/", json={"width": 640, "height": 360})
    queued = await get_video(client, video_id)
    assert queued["processing"] is True
    assert queued["processingSuccess"] is None and queued["processingError"] is None  # not the old "true"
    job = queued["job"]
    assert (job["state"], job["width"], job["height"], job["startedAt"], job["finishedAt"]) == (
        "queued", 640, 360, None, None,
    )  # fmt: skip
    assert job["queuedAt"] > first["job"]["finishedAt"]

    await client.delete(f"/file/{blocker}/")  # frees the worker
    running = await _until(client, video_id, "running")
    assert running["processingSuccess"] is None and running["job"]["startedAt"]
    assert running["progress"] is None or 0 <= running["progress"] <= 99
    done = await wait_for_job(client, video_id)
    assert (done["processingSuccess"], done["job"]["state"], done["job"]["progress"]) == (
        True,
        "succeeded",
        100,
    )
    assert done["progress"] is None


@both_backends
async def test_a_failed_job_says_why_in_both_places(make_client, samples: Samples) -> None:
    client = await make_client(job_timeout_s=0.5, x264_preset="veryslow")
    video_id = await upload(client, samples.video(1280, 720, duration_s=5))
    await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})
    done = await wait_for_job(client, video_id)
    assert done["processingSuccess"] is False
    assert done["job"]["state"] == "failed"
    assert "timed out" in done["job"]["error"] and done["processingError"] == done["job"]["error"]
    assert done["job"]["progress"] is None


async def test_a_job_whose_output_cannot_be_put_in_place_ends_failed_not_running(
    client: Client, samples: Samples, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one fault faked: the disk refuses to move the finished output into place (EIO)."""
    video_id = await upload(client, samples.video())

    def refuse(*_: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Storage, "move_into_place", refuse)  # after the upload was stored
    assert (await client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})).status == 200
    done = await wait_for_job(client, video_id)
    assert (done["processingSuccess"], done["job"]["state"]) == (False, "failed")
    assert done["job"]["error"] == "internal error while finishing: OSError"
    assert (done["width"], done["height"]) != (160, 120)
    assert leftovers(data_dir) == []


async def test_a_running_jobs_progress_moves_between_gets(make_client, samples: Samples) -> None:  # type: ignore[no-untyped-def]
    """Nothing is written while ffmpeg runs: each GET must read the progress afresh, not a kept body."""
    client = await make_client(workers=1, x264_preset="veryslow")
    video_id = await upload(client, samples.video(640, 360, duration_s=5))
    assert (await client.patch(f"/file/{video_id}/", json={"width": 1280, "height": 720})).status == 200
    seen: list[int] = []

    async def progress_so_far() -> list[int]:
        progress = (await get_video(client, video_id))["progress"]
        if progress is not None and (not seen or progress != seen[-1]):
            seen.append(progress)
        return seen

    await poll_until(progress_so_far, "three progress values", 30, until=lambda values: len(values) >= 3)
    assert seen == sorted(seen), seen
    assert (await client.delete(f"/file/{video_id}/")).status in (200, 204)


async def test_signed_links_are_fresh_on_each_get(make_client, samples: Samples) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(api_keys=("k",), url_signing_key="sign-me")
    key = {"Authorization": "Bearer k"}
    with samples.video().open("rb") as f:
        posted = await client.post("/file/", data=f, headers={**key, "Content-Type": "video/mp4"})
        video_id = (await posted.json())["id"]
    first = await get_video(client, video_id, **key)
    await asyncio.sleep(1.1)  # expiries are in whole seconds
    second = await get_video(client, video_id, **key)
    assert first["contentUrl"] != second["contentUrl"]
    assert {k: v for k, v in first.items() if not k.endswith("Url")} == {
        k: v for k, v in second.items() if not k.endswith("Url")
    }
