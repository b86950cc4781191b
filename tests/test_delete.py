"""DELETE /file/{id}/: every stored byte is gone when it answers, whatever the job state."""

from __future__ import annotations

from pathlib import Path

from .conftest import both_backends
from .helpers import (
    Client,
    Samples,
    ffmpeg_processes,
    get_video,
    leftovers,
    rows,
    stored_ids,
    upload,
    wait_for_job,
    wait_until_running,
)


async def test_delete_removes_row_and_file(client: Client, samples: Samples, data_dir: Path) -> None:
    keep = await upload(client, samples.video())
    gone = await upload(client, samples.video())

    response = await client.delete(f"/file/{gone}/")
    assert (response.status, await response.json()) == (200, {"success": True})

    assert stored_ids(data_dir) == [keep]
    assert rows(data_dir, "SELECT id FROM videos") == [(keep,)]
    assert (await client.get(f"/file/{gone}/")).status == 404
    assert (await client.delete(f"/file/{gone}")).status == 404
    assert (await client.get(f"/file/{keep}")).status == 200


async def test_delete_of_unknown_or_malformed_id_is_404(client: Client) -> None:
    for video_id in ("00000000-0000-4000-8000-000000000000", "nope"):
        response = await client.delete(f"/file/{video_id}/")
        assert response.status == 404
        assert "error" in await response.json()


@both_backends
async def test_delete_during_a_running_job_stops_ffmpeg_and_discards_its_output(
    make_client, samples: Samples, data_dir: Path
) -> None:
    client = await make_client(x264_preset="veryslow")
    video_id = await upload(client, samples.video(1280, 720, duration_s=5))
    assert (await client.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})).status == 200
    await wait_until_running(data_dir)
    assert ffmpeg_processes(data_dir), "ffmpeg should be running"

    response = await client.delete(f"/file/{video_id}/")
    assert response.status == 200

    assert ffmpeg_processes(data_dir) == []
    assert stored_ids(data_dir) == []
    assert leftovers(data_dir) == []
    assert rows(data_dir, "SELECT * FROM videos") == []
    assert rows(data_dir, "SELECT * FROM jobs") == []


async def test_delete_drops_a_queued_job_at_once(make_client, samples: Samples, data_dir: Path) -> None:
    client = await make_client(workers=1, x264_preset="veryslow")
    busy = await upload(client, samples.video(1280, 720, duration_s=5))
    queued = await upload(client, samples.video(320, 240))
    assert (await client.patch(f"/file/{busy}/", json={"width": 1920, "height": 1080})).status == 200
    await wait_until_running(data_dir)
    assert (await client.patch(f"/file/{queued}/", json={"width": 160, "height": 120})).status == 200
    assert (await get_video(client, queued))["processing"] is True

    response = await client.delete(f"/file/{queued}/")
    assert response.status == 200
    # The busy job is untouched and still running.
    assert (await get_video(client, busy))["processing"] is True
    assert stored_ids(data_dir) == [busy]
    assert rows(data_dir, "SELECT video_id FROM jobs") == [(busy,)]
    assert sorted(p.name for p in (data_dir / "jobs").iterdir()) == ["1"]  # the dropped job's folder went


@both_backends
async def test_video_can_be_resized_again_after_a_job(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    video_id = await upload(client, samples.video())
    for width, height in ((160, 120), (80, 60)):
        assert (
            await client.patch(f"/file/{video_id}/", json={"width": width, "height": height})
        ).status == 200
        done = await wait_for_job(client, video_id)
        assert (done["processingSuccess"], done["width"], done["height"]) == (True, width, height)
    assert rows(data_dir, "SELECT state FROM jobs ORDER BY id") == [("succeeded",), ("succeeded",)]
