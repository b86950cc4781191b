"""Jobs on a real Dask cluster: what a cluster can do to a job that a process pool cannot.

The guarantees both backends share (size, audio, rotation, 409, progress,
job_timeout_s, DELETE stopping ffmpeg) run on both, through `both_backends`
in test_resize.py, test_delete.py and test_job_state.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from .cluster import DaskCluster
from .helpers import Samples, ffmpeg_processes, leftovers, poll_until, rows, upload, wait_for_job
from .server import ServerProcess


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A cluster of this test's own: these tests kill its parts."""
    own = DaskCluster(tmp_path / "cluster").start()
    yield own
    own.stop()


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("attempts", [1, 3])
async def test_a_worker_killed_mid_job_is_retried_elsewhere_then_given_up(
    make_client, samples: Samples, data_dir: Path, cluster: DaskCluster, attempts: int
) -> None:
    client = await make_client(
        backend="dask", dask_scheduler=cluster.address, x264_preset="veryslow", job_max_attempts=attempts
    )
    video_id = await upload(client, samples.video(1280, 720, duration_s=3))
    assert (await client.patch(f"/file/{video_id}/", json={"width": 640, "height": 360})).status == 200
    (ffmpeg,) = await poll_until(lambda: ffmpeg_processes(data_dir), "ffmpeg on a worker")
    os.kill(_parent_of(ffmpeg), signal.SIGKILL)  # the worker process (its nanny starts a new one)
    done = await wait_for_job(client, video_id, timeout_s=120)
    if attempts == 1:
        assert done["processingSuccess"] is False
        assert "died" in done["processingError"] and "job_max_attempts=1" in done["processingError"]
        assert (done["width"], done["height"]) == (1280, 720)
    else:
        assert done["processingSuccess"] is True, done
        assert (done["width"], done["height"]) == (640, 360)
    assert leftovers(data_dir) == []


async def test_a_service_killed_9_leaves_no_remote_encode_and_its_job_resumes_at_restart(
    data_dir: Path, samples: Samples, cluster: DaskCluster
) -> None:
    settings = {"backend": "dask", "dask_scheduler": cluster.address, "lease_ttl_s": 3}
    server = ServerProcess(data_dir, x264_preset="veryslow", **settings).start()
    try:
        async with aiohttp.ClientSession(server.url) as session:
            video_id = await upload(session, samples.video(1280, 720, duration_s=5))  # type: ignore[arg-type]
            await session.patch(f"/file/{video_id}/", json={"width": 1920, "height": 1080})
        await poll_until(lambda: ffmpeg_processes(data_dir), "ffmpeg on a worker")
        server.kill9()
        killed = time.monotonic()
        # The worker is not the service's child: only the lease can tell it the service is gone.
        await poll_until(lambda: not ffmpeg_processes(data_dir), "the remote ffmpeg to stop", timeout_s=30)
        stopped_after = time.monotonic() - killed
    finally:
        server.__exit__()
    assert stopped_after < 3 + 5, f"the remote encode ran on for {stopped_after:.1f} s"
    assert rows(data_dir, "SELECT state FROM jobs") == [("running",)]
    with ServerProcess(data_dir, x264_preset="ultrafast", **settings) as restarted:
        async with aiohttp.ClientSession(restarted.url) as session:
            done = await wait_for_job(session, video_id, timeout_s=120)  # type: ignore[arg-type]
    assert done["processingSuccess"] is True and (done["width"], done["height"]) == (1920, 1080)


async def test_a_scheduler_restart_is_logged_and_jobs_go_on(
    data_dir: Path, samples: Samples, cluster: DaskCluster
) -> None:
    settings = {"backend": "dask", "dask_scheduler": cluster.address, "dask_connect_timeout_s": 2}
    with ServerProcess(data_dir, **settings) as server:
        async with aiohttp.ClientSession(server.url) as session:
            video_id = await upload(session, samples.video())  # type: ignore[arg-type]
            in_flight = await upload(session, samples.video(1280, 720, duration_s=10))  # type: ignore[arg-type]
            await session.patch(f"/file/{in_flight}/", json={"width": 1920, "height": 1080})
            await poll_until(lambda: ffmpeg_processes(data_dir), "the job to be on a worker")
            assert cluster.scheduler is not None
            os.killpg(cluster.scheduler.pid, signal.SIGKILL)
            cluster.scheduler.wait(timeout=10)
            await poll_until(lambda: "lost the Dask scheduler" in server.log(), "the log to say so", 30)
            # Away longer than the client waits for a reconnection: the client gives up and closes
            # itself for good (a loaded machine did that to this test now and then), and the
            # service must come back with a new one.
            await asyncio.sleep(3)
            cluster.start_scheduler()
            # Dask workers exit when their scheduler goes; their supervisor (compose's restart
            # policy, systemd) starts them again, as here.
            for name in ("w0-again", "w1-again"):
                cluster.add_worker(name)
            await poll_until(
                lambda: "reconnected to the Dask scheduler" in server.log(), "a reconnection", 60
            )
            await asyncio.to_thread(cluster.wait_for_workers, 2)
            await session.patch(f"/file/{video_id}/", json={"width": 160, "height": 120})
            done = await wait_for_job(session, video_id, timeout_s=120)  # type: ignore[arg-type]
            # The job that was on a worker when the scheduler went is not lost: handed out again.
            survived = await wait_for_job(session, in_flight, timeout_s=180)  # type: ignore[arg-type]
    assert done["processingSuccess"] is True, done
    # On failure, say why: the job's error and the end of the service's log.
    why = (survived.get("processingError"), server.log()[-3000:])
    assert survived["processingSuccess"] is True and survived["width"] == 1920, why


def _check(data_dir: Path, address: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIDEOSVC_BACKEND": "dask", "VIDEOSVC_DASK_SCHEDULER": address,
           "VIDEOSVC_DATA_DIR": str(data_dir)}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "videosvc", "check"], capture_output=True, text=True, timeout=120, env=env
    )


async def test_check_lists_every_worker_and_fails_when_one_cannot_see_data_dir(
    data_dir: Path, cluster: DaskCluster, tmp_path: Path
) -> None:
    assert not data_dir.exists()  # a fresh install: check makes the folder, as run does
    result = await asyncio.to_thread(_check, data_dir, cluster.address)
    assert result.returncode == 0, result.stdout + result.stderr
    workers = [line for line in result.stdout.splitlines() if line.startswith("  tcp://")]
    assert len(workers) == 2 and all("libx264 yes" in w and "data_dir ok" in w for w in workers), workers
    if os.geteuid() != 0:
        pytest.skip("hiding data_dir from one worker needs a mount namespace (root)")
    # A third worker in a mount namespace of its own, where data_dir is an empty tmpfs: as on
    # a machine where the shared volume is not mounted.
    hidden = f'mount -t tmpfs none {data_dir} && exec "$0" "$@"'
    cluster.add_worker("blind", prefix=["unshare", "--mount", "--propagation", "private", "sh", "-c", hidden])
    await asyncio.to_thread(cluster.wait_for_workers, 3)
    result = await asyncio.to_thread(_check, data_dir, cluster.address)
    assert result.returncode == 1, result.stdout
    assert "data_dir NOT" in result.stdout and result.stdout.count("data_dir ok") == 2
