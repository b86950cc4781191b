"""Originals are kept: every resize starts from the upload, which can be restored; upgrades keep data."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from videosvc.store.database import migration_scripts

from .helpers import (
    Client,
    Samples,
    get_video,
    leftovers,
    original_ids,
    probe_stored,
    rows,
    ssim,
    stored_ids,
    upload,
    wait_for_job,
)
from .server import ServerProcess


async def _resize(client: Client, video_id: str, width: int, height: int) -> dict:  # type: ignore[type-arg]
    response = await client.patch(f"/file/{video_id}/", json={"width": width, "height": height})
    assert response.status == 200, await response.text()
    done = await wait_for_job(client, video_id)
    assert done["processingSuccess"] is True, done
    return done


async def test_repeated_resizes_lose_nothing(make_client, samples: Samples, data_dir: Path, tools) -> None:
    client = await make_client(x264_preset="fast")
    source = samples.video(640, 272, duration_s=2)
    chained = await upload(client, source)
    direct = await upload(client, source)
    await _resize(client, chained, 320, 136)
    await _resize(client, chained, 1280, 544)
    await _resize(client, direct, 1280, 544)
    a, b = (data_dir / "videos" / f"{i}.mp4" for i in (chained, direct))
    # Encoded from the original both times: the chain is as good as the direct resize (it was 0.957).
    assert ssim(tools, a, b) > 0.995


async def test_the_originals_size_restores_it_and_the_current_size_changes_nothing(
    client: Client, samples: Samples, data_dir: Path
) -> None:
    source = samples.video(320, 240)
    video_id = await upload(client, source)
    info = await get_video(client, video_id)
    assert (info["originalWidth"], info["originalHeight"], info["originalSize"]) == (
        320,
        240,
        source.stat().st_size,
    )
    await _resize(client, video_id, 160, 120)
    resized = (data_dir / "videos" / f"{video_id}.mp4").read_bytes()

    # The current size: nothing to encode, and nothing changes.
    response = await client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})
    assert response.status == 200
    same = await get_video(client, video_id)
    assert (same["processing"], same["processingSuccess"], same["job"]["state"]) == (False, True, "succeeded")
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == resized

    # The original's size: the original itself, at once (no job ever queued).
    response = await client.patch(f"/file/{video_id}/", json={"width": 320, "height": 240})
    assert response.status == 200
    restored = await get_video(client, video_id)
    assert (restored["processing"], restored["processingSuccess"]) == (False, True)
    assert (restored["width"], restored["height"], restored["size"]) == (320, 240, source.stat().st_size)
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == source.read_bytes()
    assert (data_dir / "originals" / f"{video_id}.mp4").read_bytes() == source.read_bytes()
    assert leftovers(data_dir) == []


async def test_delete_removes_the_original_too(client: Client, samples: Samples, data_dir: Path) -> None:
    video_id = await upload(client, samples.video())
    await _resize(client, video_id, 160, 120)
    assert original_ids(data_dir) == [video_id] and stored_ids(data_dir) == [video_id]
    assert (await client.delete(f"/file/{video_id}/")).status == 200
    assert original_ids(data_dir) == [] and stored_ids(data_dir) == []


async def test_without_originals_each_resize_replaces_the_only_copy(
    make_client, samples: Samples, data_dir: Path, tools
) -> None:
    client = await make_client(keep_original="false")
    video_id = await upload(client, samples.video(320, 240))
    info = await get_video(client, video_id)
    assert (info["originalWidth"], info["originalSize"]) == (None, None)
    await _resize(client, video_id, 160, 120)
    await _resize(client, video_id, 320, 240)  # an encode of the 160x120 rendition, not a restore
    assert original_ids(data_dir) == []
    assert probe_stored(data_dir, video_id, tools).width == 320
    response = await client.get(f"/file/{video_id}/content", params={"variant": "original"})
    assert response.status == 404 and "keeps no originals" in (await response.json())["error"]


def _data_dir_of_the_previous_version(data_dir: Path, video: Path) -> str:
    """A data dir as the version before originals wrote it: migrations 001-003, videos/<id>.mp4 only."""
    (data_dir / "videos").mkdir(parents=True)
    video_id = str(uuid.uuid4())
    (data_dir / "videos" / f"{video_id}.mp4").write_bytes(video.read_bytes())
    with sqlite3.connect(data_dir / "videosvc.sqlite3") as db:
        db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, script in migration_scripts():
            if name < "004":
                db.executescript(script)
                db.execute("INSERT INTO schema_migrations VALUES (?, '2026-11-01T00:00:00.000Z')", (name,))
        db.execute(
            "INSERT INTO videos (id, filename, size_bytes, width, height, duration_s, created_at, updated_at,"
            " audio_codecs, frame_count) VALUES (?, 'old.mp4', ?, 320, 240, 1.0, '2026-11-01T00:00:00.000Z',"
            " '2026-11-01T00:00:00.000Z', 'aac', 25)",
            (video_id, video.stat().st_size),
        )
        db.execute(
            "INSERT INTO jobs (video_id, width, height, state, attempts, created_at, finished_at)"
            " VALUES (?, 320, 240, 'succeeded', 1, '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:01.000Z')",
            (video_id,),
        )
    return video_id


async def test_a_data_dir_from_before_originals_keeps_working_after_the_upgrade(
    data_dir: Path, samples: Samples
) -> None:
    source = samples.video(320, 240)
    video_id = _data_dir_of_the_previous_version(data_dir, source)
    import aiohttp

    with ServerProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as client:
            info = await get_video(client, video_id)
            assert (info["filename"], info["width"], info["processingSuccess"]) == ("old.mp4", 320, True)
            assert (info["originalWidth"], info["originalSize"]) == (320, source.stat().st_size)
            assert info["job"]["state"] == "succeeded"
            content = await client.get(f"/file/{video_id}/content")
            assert await content.read() == source.read_bytes()
            await client.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})
            assert (await wait_for_job(client, video_id))["processingSuccess"] is True  # type: ignore[arg-type]
        assert "kept 1 stored video(s) as their originals" in server.log()
    assert (data_dir / "originals" / f"{video_id}.mp4").read_bytes() == source.read_bytes()
    assert rows(data_dir, "SELECT count(*) FROM jobs") == [(2,)]
