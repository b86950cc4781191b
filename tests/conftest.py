"""Fixtures: the real app over real HTTP, a real SQLite file, real ffmpeg.

Test videos are made here with ffmpeg's lavfi sources, once per session.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from videosvc.app import create_app
from videosvc.config import Settings, load_settings
from videosvc.logs import AccessLogger
from videosvc.media.probe import Toolchain
from videosvc.media.toolchain import inspect_toolchain
from videosvc.web.keys import SETTINGS
from videosvc.web.protocol import GuardedAppRunner

from .browser import launch_page
from .cluster import DaskCluster
from .helpers import Client, Samples
from .seaweed import SeaweedServer


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test, so a fixture can tell that its test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
async def page(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A page in Debian's chromium (Playwright's async API); a screenshot is kept if the test fails."""
    async with launch_page() as browser_page:
        yield browser_page
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            RESULTS.mkdir(exist_ok=True)
            await browser_page.screenshot(path=str(RESULTS / f"{request.node.name}.png"), full_page=True)


#: Screenshots of failed browser tests (CI keeps the folder as an artifact).
RESULTS = Path(__file__).resolve().parent.parent / "test-results"


@pytest.fixture(scope="session")
def tools() -> Toolchain:
    return inspect_toolchain(Settings().ffmpeg).tools


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory, tools: Toolchain) -> Samples:
    return Samples(tmp_path_factory.mktemp("samples"), tools)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Real small filesystems (tmpfs) of a given size in MiB, when this user may mount one."""
    mounted: list[Path] = []

    def make(size_mib: int) -> Path:
        mount_point = tmp_path / f"disk-{len(mounted)}"
        mount_point.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount_point)]
        ).returncode:
            pytest.skip("cannot mount tmpfs here")
        mounted.append(mount_point)
        return mount_point

    yield make
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def small_disk(make_disk: Callable[[int], Path]) -> Path:
    """A real 24 MiB filesystem."""
    return make_disk(24)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A real S3 server (SeaweedFS) on loopback with one bucket, for the whole session."""
    with SeaweedServer(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A real scheduler and two real workers, on loopback, for the whole session."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Where jobs run: "local" unless a test is parametrized with `both_backends`."""
    return str(getattr(request, "param", "local"))


#: Runs a test once with the local pool and once on a real Dask cluster.
both_backends = pytest.mark.parametrize("backend", ["local", "dask"], indirect=True)


@pytest.fixture
def make_settings(data_dir: Path, backend: str, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """Settings for a test: a temp data dir, 2 workers, and any overrides by name."""

    def make(**overrides: Any) -> Settings:
        env = {
            "VIDEOSVC_DATA_DIR": str(data_dir),
            "VIDEOSVC_WORKERS": "2",
            "VIDEOSVC_MIN_FREE_BYTES": "0",
            # HLS packages are built only where a test asks for them (tests/test_hls.py): the rest
            # of the suite stays as fast as it was.
            "VIDEOSVC_HLS_ENABLED": "false",
            "VIDEOSVC_PICTURES_ENABLED": "false",  # likewise pictures (tests/test_pictures.py)
        }
        if backend == "dask":
            cluster = request.getfixturevalue("dask_cluster")
            env |= {"VIDEOSVC_BACKEND": "dask", "VIDEOSVC_DASK_SCHEDULER": cluster.address}
        for name, value in overrides.items():
            env["VIDEOSVC_" + name.upper()] = (
                ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)
            )
        return load_settings(None, env=env)

    return make


class ServiceTestServer(TestServer):
    """The app served as `python -m videosvc run` serves it: guarded connections, our access log."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs.pop("handler_cancellation", None)  # the real server does not cancel handlers either
        return GuardedAppRunner(
            self.app,
            self.app[SETTINGS].http,
            access_log_class=AccessLogger,
            access_log=logging.getLogger("videosvc.access"),
            **kwargs,
        )


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[Client]], make_settings: Callable[..., Settings]
) -> Callable[..., Awaitable[Client]]:
    async def make(**overrides: Any) -> Client:
        return await aiohttp_client(ServiceTestServer(create_app(make_settings(**overrides))))

    return make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[Client]]) -> Client:
    return await make_client()
